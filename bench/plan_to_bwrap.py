#!/usr/bin/env python3
"""Turns `palisade run --dry-run` output into bubblewrap arguments for the same view, so the
start-up benchmark compares like with like. bubblewrap cannot create placeholders on the
host, so those are left out (it does less work than Palisade there)."""
import json
import sys

plan = json.load(open(sys.argv[1]))
ws = sys.argv[2]
args = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
for m in plan["view"]["entries"]:
    entry, path = m["entry"], m["path"]
    if entry == "private":
        args += ["--tmpfs", path]
    elif entry == "host":
        args += ["--bind" if m["writable"] else "--ro-bind", path, path]
    elif entry == "hidden":
        args += ["--tmpfs", path, "--remount-ro", path] if m["dir"] else ["--ro-bind", "/dev/null", path]
    elif entry == "link":
        args += ["--symlink", m["target"], path]
args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm", "--chdir", ws]
print("\n".join(args))
