#!/usr/bin/env bash
# Palisade's benchmarks, each side by side with a baseline measured in the same run:
#   1. start-up: `palisade run -- /bin/true` against bare /bin/true and bubblewrap given the
#      same mounts (translated from Palisade's own plan by plan_to_bwrap.py), and Palisade
#      without memory and pids limits (no cgroup to create; as root, the cgroup's cost);
#   2. run-time overhead: syscall-heavy workloads (find over /usr, git status on a 20,000
#      file repository) bare, under Palisade and under bubblewrap;
#   3. exec tracing: a shell spawning 2,000 /bin/true bare, under Palisade with and without
#      the exec tracer (--no-exec-trace), and under bubblewrap;
#   4. supervisor memory: peak RSS of the palisade process while a command runs;
#   5. start-up in a git repository with 3 linked worktrees and 2 submodules (git's protections
#      derived, their placeholders made and removed) beside a plain workspace, and beside
#      another palisade binary given with --baseline (an older build, to measure a change);
#      interleaved by bench/ab.py, back to back and spaced 0.5 s apart, wall and CPU time.
# Workloads run with hyperfine -i: as root, `find /usr` exits 1 inside any sandbox that drops
# capabilities (a few directories are mode 700 for other users), which is the point.
# Results: a summary on stdout and JSON files in $OUT (default: a temporary directory).
# Needs hyperfine and bubblewrap (Debian packages; installed when missing and run as root).
# Usage: bench/run.sh [--runs N] [--work-runs N] [--baseline PALISADE] [--only startup-git]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=300
WORK_RUNS=15
BASELINE=
ONLY=
while (($#)); do
    case $1 in
        --runs) RUNS=$2; shift ;;
        --work-runs) WORK_RUNS=$2; shift ;;
        --baseline) BASELINE=$2; shift ;;
        --only) ONLY=$2; shift ;;
        *) echo "usage: bench/run.sh [--runs N] [--work-runs N] [--baseline PALISADE] [--only startup-git]" >&2; exit 2 ;;
    esac
    shift
done

for tool in hyperfine bwrap; do
    if ! command -v "$tool" >/dev/null; then
        [ "$(id -u)" = 0 ] || { echo "bench: $tool is missing (apt-get install hyperfine bubblewrap)" >&2; exit 1; }
        apt-get install -y -qq hyperfine bubblewrap >/dev/null
    fi
done

# shellcheck source=bench/setup.sh
. bench/setup.sh

echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(date -u +%Y-%m-%d)"
echo "# palisade: $PAL; bubblewrap $(bwrap --version | awk '{print $2}'); runs: $RUNS start-up, $WORK_RUNS per workload"

startup_git() {
    echo "== start-up in a git repository with 3 worktrees and 2 submodules: /bin/true"
    local base repo
    base=$(mktemp -d)
    repo=$base/repo
    export GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=b GIT_AUTHOR_EMAIL=b@b GIT_COMMITTER_NAME=b GIT_COMMITTER_EMAIL=b@b
    for s in sub1 sub2; do
        git init -q "$base/$s" && git -C "$base/$s" commit -q --allow-empty -m "$s"
    done
    git init -q "$repo"
    (cd "$repo" && for d in $(seq 20); do mkdir d$d; for f in $(seq 25); do echo $f > d$d/f$f; done; done && git add -A \
        && git commit -qm init \
        && for s in sub1 sub2; do git -c protocol.file.allow=always submodule add -q "$base/$s" "libs/$s"; done \
        && git commit -qm subs && for w in 1 2 3; do git worktree add -q "$base/wt$w"; done)
    # Interleaved (bench/ab.py: each round runs every command once), because start-up is
    # bimodal (a cgroup v1 move waits 0.1 to 20 ms) and drift between sequential batches
    # moves a median by more than the difference measured here.
    local cmds=("bare=/bin/true" "palisade, plain workspace=$PAL run --workspace $WS -- /bin/true"
        "palisade, the repository=$PAL run --workspace $repo -- /bin/true")
    if [ -n "$BASELINE" ]; then
        cmds+=("baseline, plain workspace=$BASELINE run --workspace $WS -- /bin/true"
            "baseline, the repository=$BASELINE run --workspace $repo -- /bin/true")
    fi
    echo "  back to back, $RUNS rounds:"
    python3 "$OLDPWD/bench/ab.py" --runs "$RUNS" "${cmds[@]}"
    echo "  spaced 0.5 s apart (an agent's cadence), $WORK_RUNS rounds:"
    python3 "$OLDPWD/bench/ab.py" --runs "$WORK_RUNS" --warmup 1 --spaced 0.5 "${cmds[@]}"
    echo "  placeholders: $("$PAL" run --workspace "$repo" --dry-run -- /bin/true | grep -c '"entry": "placeholder"') in the repository, $("$PAL" run --workspace "$WS" --dry-run -- /bin/true | grep -c '"entry": "placeholder"') in the plain workspace"
}
"$PAL" run --workspace "$WS" --dry-run -- /bin/true > "$OUT/plan.json"
# A failed conversion must stop the run: an empty BWRAP would time a bubblewrap without the
# view and call it "same mounts".
python3 "$OLDPWD/bench/plan_to_bwrap.py" "$OUT/plan.json" "$WS" > "$OUT/bwrap.args"
mapfile -t BWRAP < "$OUT/bwrap.args"
[ "${#BWRAP[@]}" -gt 10 ] || { echo "bench: the plan gave no bubblewrap arguments" >&2; exit 1; }

summary() { # file label...
    python3 - "$@" <<'PY'
import json, sys, statistics
data = json.load(open(sys.argv[1]))["results"]
base = None
for r, label in zip(data, sys.argv[2:]):
    t = sorted(r["times"])
    med = statistics.median(t) * 1000
    p95 = t[int(len(t) * 0.95) - 1] * 1000
    base = base if base is not None else med
    print(f"  {label:<28} median {med:8.2f} ms   p95 {p95:8.2f} ms   x{med / base:5.2f}")
PY
}

if [ "$ONLY" = startup-git ]; then
    startup_git
    exit 0
fi

echo "== start-up: /bin/true"
hyperfine -N -w 20 -r "$RUNS" --export-json "$OUT/startup.json" \
    /bin/true "$PAL run --workspace $WS -- /bin/true" "bwrap ${BWRAP[*]} /bin/true" \
    "$PAL run --workspace $WS --memory unlimited --pids unlimited -- /bin/true" >/dev/null
summary "$OUT/startup.json" "bare" "palisade" "bubblewrap (same mounts)" "palisade, no memory/pids limit"
# The same interleaved (bench/ab.py), back to back and spaced like an agent's commands, with
# wall and CPU time: the issue-16 targets are stated against bubblewrap in both cadences.
STARTUP=("bare=/bin/true" "palisade=$PAL run --workspace $WS -- /bin/true" "bubblewrap=bwrap ${BWRAP[*]} /bin/true")
echo "  interleaved, back to back, $RUNS rounds:"
python3 "$OLDPWD/bench/ab.py" --runs "$RUNS" "${STARTUP[@]}"
echo "  interleaved, one run every 0.5 s, $((RUNS / 5)) rounds:"
python3 "$OLDPWD/bench/ab.py" --runs "$((RUNS / 5))" --warmup 1 --spaced 0.5 "${STARTUP[@]}"

echo "== run time: find /usr -type f"
hyperfine -N -i -w 2 -r "$WORK_RUNS" --export-json "$OUT/find.json" \
    "find /usr -type f" "$PAL run --workspace $WS -- find /usr -type f" "bwrap ${BWRAP[*]} find /usr -type f" >/dev/null
summary "$OUT/find.json" "bare" "palisade" "bubblewrap (same mounts)"

echo "== run time: git status on 20,000 files"
mkdir -p "$WS/repo"
(cd "$WS/repo" && git init -q && for d in $(seq 200); do mkdir d$d; for f in $(seq 100); do echo $f > d$d/f$f; done; done \
    && git add -A && git -c user.email=b@b -c user.name=b commit -qm init)
hyperfine -N -i -w 2 -r "$WORK_RUNS" --export-json "$OUT/git.json" \
    "git -C $WS/repo status --porcelain" "$PAL run --workspace $WS -- git -C $WS/repo status --porcelain" \
    "bwrap ${BWRAP[*]} git -C $WS/repo status --porcelain" >/dev/null
summary "$OUT/git.json" "bare" "palisade" "bubblewrap (same mounts)"

echo "== exec tracing: 2,000 x /bin/true from one shell"
SPAWN='i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done'
hyperfine -N -w 2 -r "$WORK_RUNS" --export-json "$OUT/spawn.json" \
    "sh -c '$SPAWN'" "$PAL run --workspace $WS -- sh -c '$SPAWN'" \
    "$PAL run --no-exec-trace --workspace $WS -- sh -c '$SPAWN'" "bwrap ${BWRAP[*]} sh -c '$SPAWN'" >/dev/null
summary "$OUT/spawn.json" "bare" "palisade" "palisade --no-exec-trace" "bubblewrap (same mounts)"

echo "== supervisor peak RSS (palisade run -- sleep 1)"
"$PAL" run --workspace "$WS" -- sleep 1 &
pid=$!
sleep 0.5
awk '/VmHWM/ {printf "  palisade supervisor          %.1f MiB\n", $2/1024}' "/proc/$pid/status"
wait "$pid"
startup_git
echo "# raw results: $OUT"
