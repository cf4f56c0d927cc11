"""Drives `palisade mcp` over stdio with the official MCP Python SDK and prints one line
per check, `name: outcome`, for the Rust test to read. Usage: mcp_client.py WORKSPACE
CANARY SECRET GITCONFIG PALISADE [ARGS...]"""
import asyncio
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main():
    ws, canary, secret, gitconfig, exe, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
    params = StdioServerParameters(command=exe, args=["mcp", *args], cwd=ws)
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            tools = sorted(t.name for t in (await s.list_tools()).tools)
            print("tools:", ",".join(tools))

            async def call(label, tool, **kw):
                try:
                    res = await s.call_tool(tool, kw)
                except Exception as e:  # an MCP error answer
                    print(f"{label}: error {e}")
                    return
                text = " ".join(c.text for c in res.content if hasattr(c, "text"))
                print(f"{label}: {'error' if res.is_error else 'ok'} {text!r}")

            await call("write", "write_file", path="notes.txt", content="hello\n")
            await call("read", "read_file", path="notes.txt")
            await call("edit", "edit_file", path="notes.txt", old_text="hello", new_text="bye")
            await call("read-after-edit", "read_file", path="notes.txt")
            await call("list", "list_directory", path=".")
            await call("search", "search_files", path=".", pattern="notes")
            await call("outside", "read_file", path=canary)
            await call("secret", "read_file", path=secret)
            await call("through-link", "read_file", path="link/secret")
            await call("write-through-link", "write_file", path="link/secret", content="x")
            await call("escape", "read_file", path="../outside/secret")
            await call("git-hook", "write_file", path=".git/hooks/pre-commit", content="#!/bin/sh\necho pwned\n")
            await call("command", "run_command", command="echo inside; cat notes.txt")
            # A repository made after the server started: its configuration is never written.
            await call("git-init", "run_command", command="git init -q newrepo && echo made")
            await call("new-git-config", "write_file", path="newrepo/.git/config", content="[core]\n\tfsmonitor = touch-pwned\n")
            await call("mkdir-bare", "run_command", command="mkdir -p bare/objects bare/refs && echo 'ref: refs/heads/x' > bare/HEAD && echo made")
            await call("bare-config", "write_file", path="bare/config", content="[core]\n\tfsmonitor = touch-pwned\n")
            # A grant that did not exist when the server started, made a link by a command.
            await call("link-grant", "run_command", command=f"ln -s {secret.rsplit('/', 1)[0]} dist && echo linked")
            await call("through-link-grant", "read_file", path="dist/id_rsa")
            await call("proc", "read_file", path="/proc/self/environ")
            await call("file-grant", "read_file", path=gitconfig)
            await call("flood", "run_command", command="head -c 3000000 /dev/zero")
            await call("command-canary", "run_command", command=f"cat {canary}; echo rc=$?")
            # Refused before any tool runs: recorded all the same. (Arguments that do not
            # parse never leave this SDK, which checks them against the tool's schema: the
            # Rust test sends those itself.)
            await call("no-such-tool", "format_disk")
            # Abandoned by the client (the SDK then sends notifications/cancelled): the
            # command is stopped, and never writes its marker.
            import anyio
            with anyio.move_on_after(3):
                await call("cancelled", "run_command", command="sleep 8; touch late-marker")
            print("cancelled: abandoned")
            await anyio.sleep(8)


asyncio.run(main())
