"""Drives `palisade mcp` over stdio with the official MCP Python SDK and prints one line
per check, `name: outcome`, for the Rust test to read. Usage: mcp_client.py WORKSPACE
CANARY SECRET PALISADE [ARGS...]"""
import asyncio
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main():
    ws, canary, secret, exe, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
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
            await call("command-canary", "run_command", command=f"cat {canary}; echo rc=$?")


asyncio.run(main())
