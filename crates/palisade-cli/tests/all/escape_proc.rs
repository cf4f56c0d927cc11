//! THREATS groups D and E: the kernel, the supervisor, other processes, and lifetime.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn no_capabilities_and_no_new_privileges() {
    let s = Sandbox::new("d10-caps");
    let out = stdout(&s.sh("grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status"));
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(out.contains(&format!("{cap}:\t0000000000000000")), "{out}");
    }
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
}

/// A setuid-root copy of the probe: made by `.ci/run` for the unprivileged pass
/// (`PALISADE_SUID_PROBE`), or by the test itself when it runs as root.
fn setuid_probe(s: &Sandbox) -> Option<String> {
    if let Ok(p) = std::env::var("PALISADE_SUID_PROBE") {
        return Some(p);
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let dir = s.path("suid");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("suid-probe");
    std::fs::copy(probe_bin(), &p).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    Some(p.to_string_lossy().into_owned())
}

#[test]
fn setuid_binaries_gain_nothing() {
    let s = Sandbox::new("d10-setuid");
    let Some(suid) = setuid_probe(&s) else {
        eprintln!("skipped: needs root, or PALISADE_SUID_PROBE from .ci/run");
        return;
    };
    let meta = std::fs::metadata(&suid).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0, "{suid} must be owned by root");
    assert!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o4000 != 0, "{suid} must be setuid");
    let dir = std::path::Path::new(&suid).parent().unwrap().to_str().unwrap().to_owned();
    let o = s.run(&["--allow-read", &dir], &[&suid, "ids"]);
    let out = stdout(&o);
    let field = |k: &str| out.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or("?").to_owned();
    assert_eq!(field("capeff="), "0000000000000000", "a setuid binary gained capabilities: {out}{}", stderr(&o));
    assert_eq!(field("euid="), field("uid="), "a setuid binary changed the effective user: {out}");
}

#[test]
fn nested_namespaces_are_refused() {
    let s = Sandbox::new("d12-userns");
    for a in ["unshare_user", "unshare_net", "unshare_mount", "clone_newuser", "setns"] {
        assert_refused(&s.probe(&[], &[a]), a);
    }
    assert_eq!(s.probe(&[], &["clone_newuser"]), "EPERM");
    assert_ne!(s.sh("unshare -Ur true").status.code(), Some(0));
}

#[test]
fn mount_syscalls_are_refused_and_masks_stay() {
    let s = Sandbox::new("d11-mount");
    s.write("ws/.git/hooks/pre-commit", "original");
    let hooks = s.path("ws/.git/hooks");
    let h = hooks.to_str().unwrap();
    assert_eq!(s.probe(&[], &["umount", h]), "EPERM");
    assert_eq!(s.probe(&[], &["remount_rw", h]), "EPERM");
    assert_eq!(s.probe(&[], &["mount_tmpfs", "/tmp"]), "EPERM");
    for a in ["pivot_root", "chroot", "fsopen", "move_mount", "mount_setattr"] {
        assert_eq!(s.probe(&[], &[a]), "EPERM", "{a}");
    }
    assert_eq!(s.probe(&[], &["open_tree", h]), "EPERM");
    assert_eq!(std::fs::read_to_string(s.path("ws/.git/hooks/pre-commit")).unwrap(), "original");
}

#[test]
fn kernel_attack_surface_is_refused() {
    let s = Sandbox::new("d16-surface");
    for a in [
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "kexec_load",
        "init_module",
        "open_by_handle_at",
        "memfd_secret",
        "pidfd_getfd",
    ] {
        assert_eq!(s.probe(&[], &[a]), "EPERM", "{a}");
    }
    assert_eq!(s.probe(&[], &["personality_bad"]), "EPERM");
}

#[test]
fn unknown_and_foreign_abi_syscalls_are_refused() {
    let s = Sandbox::new("d23-unknown");
    assert_eq!(s.probe(&[], &["unknown_syscall"]), "ENOSYS");
    assert_eq!(s.probe(&[], &["clone3"]), "ENOSYS", "clone3 must fall back to clone, whose flags seccomp sees");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(s.probe(&[], &["x32_getpid"]), "ENOSYS");
        let o = s.run(&[], &[probe_bin(), "int80_getpid"]);
        assert_eq!(o.status.code(), Some(128 + libc::SIGSYS), "the 32-bit entry point must kill: {}", stdout(&o));
    }
}

#[test]
fn raw_and_exotic_sockets_are_refused() {
    let s = Sandbox::new("c02-sockets");
    for a in ["socket_packet", "socket_raw", "socket_vsock", "socket_netlink_audit"] {
        assert_eq!(s.probe(&[], &[a]), "EPERM", "{a}");
    }
    assert_eq!(s.probe(&[], &["socket_tcp"]), "ok");
    assert_eq!(s.probe(&[], &["socket_netlink_route"]), "ok");
}

#[test]
fn host_loopback_is_unreachable() {
    let s = Sandbox::new("c01-loopback");
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap().to_string();
    assert_refused(&s.probe(&[], &["connect_tcp", &addr]), "connecting to a host loopback listener");
    let o = s.sh(&format!("exec 3<>/dev/tcp/127.0.0.1/{} && echo CONNECTED", l.local_addr().unwrap().port()));
    assert!(!stdout(&o).contains("CONNECTED"));
    assert!(l.accept().is_err(), "the host listener got a connection");
}

#[test]
fn ptrace_and_process_memory_are_refused() {
    let s = Sandbox::new("d04-ptrace");
    assert_eq!(s.probe(&[], &["ptrace_attach", "1"]), "EPERM");
    assert_eq!(s.probe(&[], &["process_vm_readv", "1"]), "EPERM");
    let o = s.sh("cat /proc/1/environ /proc/1/mem 2>&1 | head -c 200; ls -l /proc/1/fd 2>&1 | head -3");
    let out = stdout(&o);
    assert!(!out.contains("PATH="), "init's environment is readable: {out}");
}

#[test]
fn signals_cannot_reach_the_supervisor_or_host() {
    let s = Sandbox::new("d03-signals");
    let mut victim = Command::new("sleep").arg("30").spawn().unwrap();
    let vpid = victim.id().to_string();
    let o = s.sh(&format!("kill -STOP {vpid}; kill -9 {vpid}; kill -STOP $PPID; kill -9 -1; echo unreachable"));
    let _ = o;
    std::thread::sleep(Duration::from_millis(100));
    assert!(victim.try_wait().unwrap().is_none(), "a host process was killed from inside the sandbox");
    let stat = std::fs::read_to_string(format!("/proc/{vpid}/stat")).unwrap();
    assert!(!stat.contains(") T "), "a host process was stopped from inside the sandbox");
    victim.kill().unwrap();
    let _ = victim.wait();
    assert_eq!(s.probe(&[], &["kill", &std::process::id().to_string(), "0"]), "ESRCH");
}

fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(marker)
        {
            found.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

fn wait_gone(marker: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = processes_with(marker);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn daemons_do_not_outlive_the_run() {
    let s = Sandbox::new("e02-daemon");
    let marker = format!("palisade-daemon-marker-{}", std::process::id());
    let o = s.sh(&format!(
        "setsid -f sh -c 'sleep 30; : {marker}'; nohup sh -c 'sleep 31; : {marker}' >/dev/null 2>&1 & echo started"
    ));
    assert!(stdout(&o).contains("started"));
    assert_eq!(wait_gone(&marker), Vec::<String>::new(), "processes outlived the sandbox");
}

#[test]
fn killing_the_supervisor_kills_the_sandbox() {
    let s = Sandbox::new("e02-sigkill");
    let marker = format!("palisade-orphan-marker-{}", std::process::id());
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["run", "--", "/bin/sh", "-c", &format!("sh -c 'sleep 30; : {marker}' & sleep 30; : {marker}")])
        .current_dir(s.ws())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", s.home())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_with(&marker).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!processes_with(&marker).is_empty(), "the sandbox did not start");
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(wait_gone(&marker), Vec::<String>::new(), "sandboxed processes survived the supervisor");
}

#[test]
fn inherited_descriptors_are_closed() {
    let s = Sandbox::new("d08-fds");
    let out = stdout(&s.sh("ls /proc/self/fd"));
    let fds: Vec<&str> = out.split_whitespace().collect();
    // 0, 1, 2, and the one `ls` opened to read the directory.
    assert!(fds.len() <= 4, "unexpected descriptors: {fds:?}");
}

#[test]
fn mounts_are_private_and_the_old_root_is_gone() {
    let s = Sandbox::new("d13-propagation");
    let o = s
        .sh("grep -c 'shared:' /proc/self/mountinfo; ls /oldroot 2>&1; grep -c ' / / ' /proc/self/mountinfo; echo end");
    let out = stdout(&o);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"), "a mount propagates to or from the host: {out}");
    assert!(lines.next().unwrap_or_default().contains("No such file"), "the host's root is still reachable: {out}");
    // Nothing in the sandbox's mount table names a host path that the policy does not grant.
    let o = s.sh("cut -d' ' -f5 /proc/self/mountinfo");
    let home = s.home();
    for m in stdout(&o).lines() {
        assert!(!m.contains("/.ssh"), "unexpected mount {m}");
        if let Some(rest) = m.strip_prefix(home.to_str().unwrap()) {
            // The home itself (private), and the built-in toolchain caches (private layers).
            let caches = ["/.cargo/registry", "/.cargo/git", "/.npm", "/.cache/pip", "/.cache/go-build", "/go/pkg/mod"];
            assert!(rest.is_empty() || caches.contains(&rest), "a host path under the home was mounted: {m}");
        }
    }
}

/// As root, uid 0 inside is the host's root, and a `/proc/sys` file checks the global uid,
/// not capabilities (`kernel.core_pattern` would run a program of the sandbox's as root at
/// the host's next crash). Each file is opened for writing, never written: an open that
/// succeeds is closed at once and fails the test. Masked files read as nothing.
#[test]
fn the_hosts_kernel_settings_stay_read_only_and_its_secrets_masked() {
    let s = Sandbox::new("proc-sys");
    for p in ["/proc/sys/kernel/core_pattern", "/proc/sys/fs/inotify/max_user_instances", "/proc/sysrq-trigger"] {
        if !std::path::Path::new(p).exists() {
            continue;
        }
        let r = s.probe(&[], &["open_write", p]);
        assert_refused(&r, p);
        if uid() == 0 {
            assert_eq!(r, "EROFS", "{p}");
        }
    }
    let o = s.sh("wc -c < /proc/keys; cat /proc/sys/kernel/hostname");
    assert_eq!(stdout(&o), "0\npalisade\n", "{}", stderr(&o));
}
