#!/usr/bin/env python3
"""Interleaved A/B timing of whole commands: each round runs every command once, in turn,
so that drift in the machine (a VM's neighbours, caches) falls on all of them alike.

Reports, per command, the median and 95th percentile of the wall time and of the CPU time
(user + system of the command and every descendant it reaped, from wait4), back to back and,
with --spaced S, with S seconds between runs (an agent's cadence: the model thinks between
commands, and caches cool).

Usage: bench/ab.py [--runs N] [--spaced S] [--label NAME=CMD]... CMD...
A command is a shell-free argument string split on spaces; label it with NAME=CMD (NAME
without a slash).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time


def run_once(argv):
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return wall * 1000, (ru.ru_utime + ru.ru_stime) * 1000, p.returncode


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--spaced", type=float, default=0.0, help="seconds between runs")
    ap.add_argument("commands", nargs="+", help="NAME=CMD or CMD")
    a = ap.parse_args()
    cmds = []
    for c in a.commands:
        name, sep, cmd = c.partition("=")
        if not sep or "/" in name:
            name, cmd = c, c
        cmds.append((name, cmd.split()))
    for _ in range(a.warmup):
        for _, argv in cmds:
            run_once(argv)
    walls = {n: [] for n, _ in cmds}
    cpus = {n: [] for n, _ in cmds}
    failed = {n: 0 for n, _ in cmds}
    for _ in range(a.runs):
        for name, argv in cmds:
            if a.spaced:
                time.sleep(a.spaced)
            w, c, rc = run_once(argv)
            walls[name].append(w)
            cpus[name].append(c)
            failed[name] += rc != 0
    base = None
    for name, _ in cmds:
        med = statistics.median(walls[name])
        base = base if base is not None else med
        print(
            f"  {name:<34} wall median {med:7.2f} ms p95 {pct(walls[name], 0.95):7.2f}   "
            f"cpu median {statistics.median(cpus[name]):7.2f} ms p95 {pct(cpus[name], 0.95):7.2f}"
            + (f"   FAILED {failed[name]}" if failed[name] else "")
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
