#!/usr/bin/env bash
# Gateway benchmarks, each against a baseline in the same run:
#   1. throughput: 1 GiB from an upstream on the host's loopback, direct and through the
#      gateway (transparent TCP from inside a sandbox);
#   2. connection set-up: median time to connect, send a request and read the reply, direct
#      and through the gateway (300 connections each, in one process);
#   2b. keep-alive requests: small HTTP requests on 8 kept-alive connections for 5 s (wrk),
#      direct, through the transparent path and through the HTTP proxy; 3 runs each,
#      interleaved, median requests/s and the median run's latency percentiles;
#   3. 1,000 concurrent connections held through the gateway;
#   4. supervisor peak RSS with the gateway up, after 3;
#   5. start-up of `palisade run --allow-net ... -- /bin/true` against --net none.
# Needs hyperfine, socat, wrk and python3. Traffic stays on this machine's loopback.
# Usage: bench/gateway.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=5
[ "${1:-}" = --runs ] && RUNS=$2
for tool in hyperfine socat wrk python3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done
# shellcheck source=bench/setup.sh
. bench/setup.sh
BULK=47101
ECHO=47102
# Upstreams on the host's loopback; both stop by themselves after ten minutes.
# -U: data flows from the right-hand address (the generator) to the connection.
timeout 600 socat -U TCP-LISTEN:$BULK,bind=127.0.0.1,reuseaddr,fork SYSTEM:'head -c 1073741824 /dev/zero' >/dev/null 2>&1 &
timeout 600 python3 - "$ECHO" <<'PY' &
import asyncio, sys
async def handle(r, w):
    try:
        while True:
            data = await r.read(4096)
            if not data:
                break
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()
    except Exception:
        pass
    w.close()
async def main():
    s = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with s:
        await s.serve_forever()
asyncio.run(main())
PY
sleep 0.5
# Scripts run inside the sandbox live in the workspace (the sandbox's /tmp is private).
SCR="$WS/.bench"
mkdir -p "$SCR"
cat > "$OUT/policy.toml" <<TOML
[network]
mode = "allowlist"
allow = ["bulk.test:$BULK", "echo.test:$ECHO"]
hosts = { "bulk.test" = "127.0.0.1", "echo.test" = "127.0.0.1" }
TOML
RUN="$PAL run --workspace $WS --policy $OUT/policy.toml --"

echo "# machine: $(nproc) cores, kernel $(uname -r), $(date -u +%Y-%m-%d)"
echo "== throughput: 1 GiB over TCP (median of $RUNS)"
hyperfine -N -w 1 -r "$RUNS" --export-json "$OUT/bulk.json" \
    "socat -u TCP:127.0.0.1:$BULK OPEN:/dev/null" "$RUN socat -u TCP:bulk.test:$BULK OPEN:/dev/null" >/dev/null
python3 - "$OUT/bulk.json" <<'PY'
import json, statistics, sys
r = json.load(open(sys.argv[1]))["results"]
d, g = (statistics.median(x["times"]) for x in r)
print(f"  direct   {1024 / d:8.0f} MiB/s   ({d * 1000:.0f} ms)")
print(f"  gateway  {1024 / g:8.0f} MiB/s   ({g * 1000:.0f} ms; {100 * d / g:.0f}% of direct, including ~12 ms start-up)")
PY

cat > "$SCR/latency.py" <<'PY'
import socket, statistics, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t = []
for _ in range(n):
    s0 = time.perf_counter()
    c = socket.create_connection((host, port))
    c.sendall(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
    c.recv(100)
    t.append(time.perf_counter() - s0)
    c.close()
print(f"{statistics.median(t) * 1e3:.3f} {sorted(t)[int(n * 0.95)] * 1e3:.3f}")
PY
echo "== connection set-up (connect, request, reply; 300 connections)"
read -r dm dp < <(python3 "$SCR/latency.py" 127.0.0.1 $ECHO 300)
read -r gm gp < <($RUN python3 "$SCR/latency.py" echo.test $ECHO 300)
echo "  direct   median $dm ms  p95 $dp ms"
echo "  gateway  median $gm ms  p95 $gp ms   (added: $(python3 -c "print(f'{$gm - $dm:.3f}')") ms)"

echo "== keep-alive requests (wrk: 1 thread, 8 connections, 5 s; 3 runs each, interleaved)"
cat > "$SCR/proxy.lua" <<LUA
request = function() return wrk.format("GET", "http://echo.test:$ECHO/", {["Host"] = "echo.test:$ECHO"}) end
LUA
: > "$OUT/keepalive.txt"
: > "$OUT/gateway-cpu.txt"
for run in 1 2 3; do
    for path in direct transparent proxy; do
        case $path in
            direct) wrk -t1 -c8 -d5s --latency "http://127.0.0.1:$ECHO/" ;;
            transparent) $RUN wrk -t1 -c8 -d5s --latency "http://echo.test:$ECHO/" ;;
            proxy) $RUN wrk -t1 -c8 -d5s --latency -s "$SCR/proxy.lua" "http://127.0.0.1:3128/" ;;
        esac > "$OUT/wrk-$path-$run.txt" &
        job=$!
        # The gateway thread's CPU time 4.5 s in (clock ticks), for its cost per request.
        sleep 4.5
        ticks=0
        if [ $path != direct ]; then
            pal=$(pgrep -o -f "palisade run --workspace $WS --policy")
            for t in /proc/$pal/task/*; do
                if [ "$(cat "$t/comm" 2>/dev/null)" = palisade-gatewa ]; then
                    ticks=$(awk '{print $14 + $15}' "$t/stat")
                fi
            done
        fi
        wait $job
        echo "$path $run $ticks" >> "$OUT/gateway-cpu.txt"
        awk -v p=$path '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +90%/ {p90=$2} /^ +99%/ {p99=$2} /Non-2xx|Socket errors/ {err=err" "$0} END {print p, rps, p50, p90, p99, (err == "" ? "-" : err)}' \
            "$OUT/wrk-$path-$run.txt" >> "$OUT/keepalive.txt"
    done
done
python3 - "$OUT/keepalive.txt" "$OUT/gateway-cpu.txt" "$(getconf CLK_TCK)" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    p, rps, p50, p90, p99, err = line.split(maxsplit=5)
    runs.setdefault(p, []).append((float(rps), p50, p90, p99, err.strip()))
cpu = {}
for line in open(sys.argv[2]):
    p, run, ticks = line.split()
    cpu.setdefault(p, []).append(int(ticks) / int(sys.argv[3]))
direct = statistics.median(r[0] for r in runs["direct"])
for p, rs in runs.items():
    rs.sort()
    rps, p50, p90, p99, err = rs[len(rs) // 2]
    share = "" if p == "direct" else f"  ({100 * rps / direct:.0f}% of direct)"
    errs = "" if err == "-" else f"  ERRORS: {err}"
    print(f"  {p:<12} {rps:9.0f} req/s{share}   latency p50 {p50}  p90 {p90}  p99 {p99}   (runs: {', '.join(f'{r[0]:.0f}' for r in rs)}){errs}")
for p, secs in cpu.items():
    if p == "direct":
        continue
    rps = statistics.median(r[0] for r in runs[p])
    # CPU seconds of the gateway thread over the first 4.5 s, per request served by then.
    print(f"  {p:<12} gateway thread: {statistics.median(secs) / 4.5 * 100:.0f}% of a core, ~{statistics.median(secs) / (rps * 4.5) * 1e6:.0f} us of CPU per request")
PY

echo "== 1,000 concurrent connections through the gateway"
cat > "$SCR/many.py" <<'PY'
import socket, sys, time
socks = []
for i in range(1000):
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    socks.append(c)
ok = 0
for c in socks:
    c.sendall(b"GET / HTTP/1.1\r\nHost: " + sys.argv[1].encode() + b"\r\n\r\n")
for c in socks:
    if c.recv(100).endswith(b"ok"):
        ok += 1
print(ok)
time.sleep(1.5)
PY
$RUN python3 "$SCR/many.py" echo.test $ECHO > "$OUT/many.out" &
pal=$!
sleep 1.5
rss=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$pal/status" 2>/dev/null || echo "?")
wait "$pal"
echo "  answered: $(cat "$OUT/many.out") of 1000"
echo "== supervisor peak RSS with the gateway up, holding them: $rss MiB"

echo "== start-up: /bin/true"
hyperfine -N -w 10 -r 100 --export-json "$OUT/startup.json" \
    "$PAL run --workspace $WS -- /bin/true" "$RUN /bin/true" >/dev/null
python3 - "$OUT/startup.json" <<'PY'
import json, statistics, sys
for r, label in zip(json.load(open(sys.argv[1]))["results"], ["--net none", "--allow-net (gateway up)"]):
    t = sorted(r["times"])
    print(f"  {label:<26} median {statistics.median(t) * 1000:6.2f} ms   p95 {t[int(len(t) * 0.95) - 1] * 1000:6.2f} ms")
PY
kill %1 %2 2>/dev/null || true
wait 2>/dev/null || true
echo "# raw results: $OUT"
