//! THREATS group E: resource limits. Each attack caps itself (a depth, a count, a deadline)
//! so that it cannot hurt the machine even if the limit failed; each test checks from
//! outside that the run was stopped, that none of its processes is left, and that the audit
//! log says which limit stopped it.
//!
//! As root, memory and pids are held by a cgroup (v1 on our hybrid hosts; v2 where
//! delegated); as an unprivileged user, by rlimits and the watcher. The tests accept either
//! and check the mode the log reports.

use std::time::{Duration, Instant};

use crate::util::*;

/// Runs `palisade run OPTS -- CMD` with an audit log; returns the output, the time it took,
/// the `limit` events and the limits mode the session reported.
fn limited(s: &Sandbox, opts: &[&str], cmd: &[&str]) -> (std::process::Output, Duration, Vec<String>, String) {
    let log = s.path(&format!("audit/limits-{}.jsonl", s.root.read_dir().map(|d| d.count()).unwrap_or(0)));
    let _ = std::fs::remove_file(&log);
    let mut o = vec!["--audit", log.to_str().unwrap()];
    o.extend_from_slice(opts);
    let started = Instant::now();
    let out = s.run(&o, cmd);
    let took = started.elapsed();
    let raw = std::fs::read_to_string(&log).unwrap_or_default();
    let events: Vec<serde_json::Value> =
        raw.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone()).collect();
    let limits =
        events.iter().filter(|e| e["kind"] == "limit").map(|e| e["limit"].as_str().unwrap().to_owned()).collect();
    let mode = events.first().map(|e| e["limits"].as_str().unwrap_or("").to_owned()).unwrap_or_default();
    assert_eq!(s.palisade(&["audit", "verify", log.to_str().unwrap()]).status.code(), Some(0));
    (out, took, limits, mode)
}

/// Host processes whose command line contains `marker`: none may outlive the run.
fn survivors(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(marker) {
                found.push(format!("{}: {c}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

fn script(s: &Sandbox, name: &str, text: &str) -> String {
    s.write(&format!("ws/{name}"), text);
    s.path(&format!("ws/{name}")).to_string_lossy().into_owned()
}

#[test]
fn a_fork_bomb_is_stopped_at_the_pid_limit() {
    let s = Sandbox::new("e-forkbomb");
    // Every process keeps trying to get two children, to depth 9 (at most 1,023 processes),
    // for at most 8 seconds.
    let bomb = script(
        &s,
        "forkbomb-e01.py",
        "import os, time\n\
         end = time.time() + 8\n\
         depth, kids = 0, 0\n\
         while kids < 2 and depth < 9 and time.time() < end:\n\
         \x20   try:\n\
         \x20       pid = os.fork()\n\
         \x20   except OSError:\n\
         \x20       time.sleep(0.01); continue\n\
         \x20   if pid == 0:\n\
         \x20       depth, kids = depth + 1, 0\n\
         \x20   else:\n\
         \x20       kids += 1\n\
         while time.time() < end:\n\
         \x20   time.sleep(0.1)\n",
    );
    let (o, took, limits, mode) = limited(&s, &["--pids", "48"], &["python3", &bomb]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert!(took < Duration::from_secs(6), "the bomb ran its course: {took:?}");
    assert_eq!(limits, ["pids"], "mode {mode}");
    assert!(stderr(&o).contains("limit of 48 processes"), "{}", stderr(&o));
    assert!(survivors("forkbomb-e01").is_empty(), "{:?}", survivors("forkbomb-e01"));
}

#[test]
fn anonymous_memory_past_the_limit_is_stopped() {
    let s = Sandbox::new("e-membomb");
    // 32 MiB at a time, at most 2 GiB, then holds it.
    let bomb = script(
        &s,
        "membomb-e02.py",
        "import time\nkeep = []\nfor i in range(64):\n    keep.append(bytearray(32 << 20))\ntime.sleep(5)\n",
    );
    let before = mem_available();
    let (o, took, limits, mode) = limited(&s, &["--memory", "160MiB"], &["python3", &bomb]);
    assert!(took < Duration::from_secs(5), "the bomb held its memory: {took:?}");
    assert_eq!(limits, ["memory"], "mode {mode}: {}", stderr(&o));
    if mode.starts_with("cgroup") {
        assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    } else {
        // rlimits: the kernel refused the allocation and Python gave up on its own.
        assert!(stderr(&o).contains("MemoryError"), "{}", stderr(&o));
    }
    assert!(survivors("membomb-e02").is_empty());
    assert!(mem_available() + (512 << 20) > before, "the host's memory did not come back");
}

#[test]
fn memory_in_tmpfs_counts_and_is_stopped() {
    let s = Sandbox::new("e-tmpfsbomb");
    // 512 MiB into the private /tmp (1 GiB) under a 128 MiB memory limit; then waits.
    let (o, took, limits, mode) = limited(
        &s,
        &["--memory", "128MiB", "--tmp-size", "1GiB"],
        &["/bin/sh", "-c", "dd if=/dev/zero of=/tmp/tmpfsbomb-e03 bs=1M count=512 2>&1; sleep 5"],
    );
    assert_eq!(o.status.code(), Some(137), "mode {mode}: {}{}", stdout(&o), stderr(&o));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(limits, ["memory"], "mode {mode}: {}", stderr(&o));
    assert!(survivors("tmpfsbomb-e03").is_empty());
}

#[test]
fn a_disk_filler_in_the_private_tmp_is_stopped() {
    let s = Sandbox::new("e-diskfill");
    let (o, took, limits, _) = limited(
        &s,
        &["--tmp-size", "32MiB"],
        &["/bin/sh", "-c", "dd if=/dev/zero of=/tmp/fill bs=1M count=100; ls -l /tmp/fill; sleep 5"],
    );
    assert_eq!(o.status.code(), Some(137), "{}{}", stdout(&o), stderr(&o));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(limits, ["tmp_size"]);
    let err = stderr(&o);
    assert!(err.contains("No space left on device") && err.contains("/tmp is full"), "{err}");
    // The 32 MiB were in the sandbox's memory, never on the host's disk.
    assert!(!std::env::temp_dir().join("fill").exists());
}

#[test]
fn a_cpu_spinner_is_stopped_at_its_cpu_time() {
    let s = Sandbox::new("e-cpu");
    // Two spinners (the limit is for the sandbox, not per process), each for at most 10 s.
    let spin = "import time\nend = time.time() + 10\nwhile time.time() < end: pass\n";
    let (o, took, limits, _) = limited(
        &s,
        &["--cpu-time", "2s"],
        &["/bin/sh", "-c", &format!("python3 -c '{spin}' & python3 -c '{spin}'; wait")],
    );
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert_eq!(limits, ["cpu_time"]);
    // Two spinners reach 2 s of CPU in about a second (less on a loaded machine, never 10).
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn a_sleeper_past_its_wall_time_ends_with_124() {
    let s = Sandbox::new("e-wall");
    let (o, took, limits, _) = limited(&s, &["--wall-time", "1s"], &["sleep", "30"]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(limits, ["wall_time"]);
    assert!(stderr(&o).contains("wall-clock limit of 1 s"), "{}", stderr(&o));
}

#[test]
fn the_sandbox_cannot_raise_its_limits_or_leave_its_cgroup() {
    let s = Sandbox::new("e-escape-limits");
    let o = s.run(
        &["--open-files", "256", "--file-size", "1MiB", "--memory", "1GiB", "--pids", "256"],
        &[
            "/bin/sh",
            "-c",
            "ulimit -Hn; ulimit -Hn 4096 2>/dev/null && echo raised-nofile; ulimit -Hf 999999 2>/dev/null && echo raised-fsize; \
             cat /proc/self/cgroup; ls /sys/fs/cgroup 2>&1 | head -1; \
             for f in /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/memory/cgroup.procs /sys/fs/cgroup/pids/cgroup.procs; do \
               echo $$ 2>/dev/null > $f && echo moved-$f; done; \
             head -c 2M /dev/zero > big 2>/dev/null; ls -l big | cut -d' ' -f5",
        ],
    );
    let out = stdout(&o);
    assert!(out.starts_with("256\n"), "{out}{}", stderr(&o));
    assert!(!out.contains("raised") && !out.contains("moved"), "{out}");
    // Its own cgroup namespace, rooted at its own cgroup: it sees itself at the root of
    // every hierarchy, and no cgroup file system.
    let cgroups: Vec<&str> = out.lines().filter(|l| l.split(':').count() == 3 && l.contains(":/")).collect();
    assert!(!cgroups.is_empty() && cgroups.iter().all(|l| l.ends_with(":/")), "{out}");
    // RLIMIT_FSIZE: the write stopped at 1 MiB.
    assert!(out.trim_end().ends_with("1048576"), "{out}");
}

#[test]
fn check_says_how_limits_are_held() {
    let s = Sandbox::new("e-check-limits");
    let out = stdout(&s.palisade(&["check"]));
    assert!(out.contains("limits") && (out.contains("cgroup v") || out.contains("rlimits")), "{out}");
}

/// `MemAvailable` of the host, in bytes.
fn mem_available() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[test]
fn unlimited_lifts_a_limit_and_a_project_cannot() {
    let s = Sandbox::new("e-unlimited");
    let o = s.run(
        &["--tmp-size", "unlimited", "--memory", "unlimited"],
        &["/bin/sh", "-c", "echo x > /tmp/f && cat /tmp/f"],
    );
    assert_eq!((o.status.code(), stdout(&o).trim()), (Some(0), "x"), "{}", stderr(&o));
    // A project may lower a limit but never lift one.
    s.write("ws/.palisade.toml", "[process]\nmemory = \"unlimited\"\n");
    let o = s.run(&[], &["/bin/true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("raises memory"), "{}", stderr(&o));
}

#[test]
fn cgroups_left_by_a_killed_run_are_removed_by_the_next() {
    let s = Sandbox::new("e-stale-cgroup");
    let out = stdout(&s.palisade(&["check"]));
    let Some(dir) = out.lines().find_map(|l| l.split("memory and pids by cgroup v1 under ").nth(1)) else {
        eprintln!("skipped: no cgroup v1 for this user");
        return;
    };
    let dir = std::path::Path::new(dir.split(';').next().unwrap());
    // pid_max is at most 2^22: this supervisor never existed.
    let stale = dir.join("palisade-4194999");
    std::fs::create_dir(&stale).unwrap();
    let o = s.run(&["--memory", "1GiB"], &["/bin/true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let left = stale.exists();
    let _ = std::fs::remove_dir(&stale);
    assert!(!left, "the stale cgroup {} is still there", stale.display());
}

#[test]
fn the_pid_limit_counts_only_the_sandboxs_processes() {
    let s = Sandbox::new("e-pids-own");
    // 40 processes of the same user outside the sandbox, more than its limit of 24.
    let mut others: Vec<std::process::Child> =
        (0..40).map(|_| std::process::Command::new("sleep").arg("20").spawn().unwrap()).collect();
    let o = s
        .run(&["--pids", "24"], &["/bin/sh", "-c", "for i in 1 2 3 4 5; do sleep 0.2 & done; wait; echo started-five"]);
    for c in &mut others {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("started-five"), "{}{}", stdout(&o), stderr(&o));
}

/// THREATS E-09: the user's per-user kernel quotas. The sandbox opens inotify instances until
/// the kernel refuses (at most 100,000: bounded), holds them, and meanwhile the user's own
/// processes on the host must still get theirs (an editor's watcher, `tail -f`). Checked
/// from outside, in this test's own process, which runs as the same user.
#[test]
fn the_sandbox_cannot_exhaust_the_users_inotify_instances() {
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("skipped: no /usr/bin/python3");
        return;
    }
    let s = Sandbox::new("e-09-inotify");
    let hog = "import ctypes, os, time\n\
               libc = ctypes.CDLL(None, use_errno=True)\n\
               fds = []\n\
               while len(fds) < 100000:\n\
               \x20   fd = libc.inotify_init1(0)\n\
               \x20   if fd < 0: break\n\
               \x20   fds.append(fd)\n\
               print(len(fds), os.strerror(ctypes.get_errno()), flush=True)\n\
               open('held', 'w').close()\n\
               deadline = time.time() + 30\n\
               while not os.path.exists('done') and time.time() < deadline: time.sleep(0.05)\n";
    s.write("ws/hog.py", hog);
    let child = s
        .command(&s.ws(), &["run", "--", "/usr/bin/python3", "hog.py"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    s.wait_for_ws_file("held", 30, "the sandbox never held its instances");
    // SAFETY: inotify_init1 with a documented flag; the descriptor is closed right after.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    let host_err = std::io::Error::last_os_error();
    if fd >= 0 {
        // SAFETY: closing the descriptor just opened.
        unsafe { libc::close(fd) };
    }
    std::fs::write(s.ws().join("done"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        fd >= 0,
        "the host's own inotify_init1 failed while the sandbox held its instances: {host_err} (sandbox: {said})"
    );
    let held: u64 = said.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let limit: u64 =
        std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances").unwrap().trim().parse().unwrap();
    assert!(held > 0 && held < limit, "the sandbox held {held} of the user's {limit}: {said}");
}

/// THREATS E-09, queued signals: counted per user too. The sandbox queues real-time signals
/// to itself until the kernel refuses (at most 1,000,000), and meanwhile a process of the
/// user's on the host must still queue one.
#[test]
fn the_sandbox_cannot_exhaust_the_users_queued_signals() {
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("skipped: no /usr/bin/python3");
        return;
    }
    let s = Sandbox::new("e-09-signals");
    // sigqueue, not kill: kill() still succeeds at the limit (the signal is marked pending
    // without an entry), sigqueue() fails with EAGAIN.
    let queue = "import ctypes, os, signal, time, sys\n\
                 libc = ctypes.CDLL(None, use_errno=True)\n\
                 signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])\n\
                 n = 0\n\
                 while n < int(sys.argv[1]):\n\
                 \x20   if libc.sigqueue(os.getpid(), int(signal.SIGRTMIN), ctypes.c_void_p(0)) != 0: break\n\
                 \x20   n += 1\n\
                 print(n, flush=True)\n\
                 if len(sys.argv) > 2:\n\
                 \x20   open('held', 'w').close()\n\
                 \x20   deadline = time.time() + 30\n\
                 \x20   while not os.path.exists('done') and time.time() < deadline: time.sleep(0.05)\n";
    s.write("ws/queue.py", queue);
    let child = s
        .command(&s.ws(), &["run", "--", "/usr/bin/python3", "queue.py", "1000000", "hold"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    s.wait_for_ws_file("held", 60, "the sandbox never held its signals");
    let host = std::process::Command::new("/usr/bin/python3").arg(s.ws().join("queue.py")).arg("1").output().unwrap();
    std::fs::write(s.ws().join("done"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    let queued: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    assert_eq!(
        String::from_utf8_lossy(&host.stdout).trim(),
        "1",
        "the host could not queue a signal while the sandbox held {queued}"
    );
    assert!(queued > 0, "{}", String::from_utf8_lossy(&out.stderr));
}
