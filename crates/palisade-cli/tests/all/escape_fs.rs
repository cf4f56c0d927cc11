//! THREATS groups A and B: reading secrets and writing outside the workspace. Every test
//! attempts the forbidden thing from inside a real sandbox and checks the outcome from
//! outside: the canary was not printed, the host file is unchanged, nothing was created.

use std::os::unix::fs::PermissionsExt;

use crate::util::*;

const CANARY: &str = "PALISADE-CANARY-7f3a9c";

#[test]
fn secret_in_home_is_absent() {
    let s = Sandbox::new("a01-home");
    s.write("home/.aws/config", CANARY);
    s.write("home/.ssh/config", CANARY);
    s.write("home/.gnupg/secring.gpg", CANARY);
    // Decoys (tripwires) sit at a few secret paths; everything else of the home is absent.
    let o = s.sh("cat ~/.aws/config ~/.ssh/config ~/.gnupg/secring.gpg; test -e ~/.gnupg && echo EXISTS; cd ~/.kube && echo ENTERED");
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!out.contains(CANARY), "{out}");
    assert!(!out.contains("EXISTS") && !out.contains("ENTERED"), "existence leaked: {out}");
    assert_eq!(out.matches("No such file or directory").count(), 3, "{out}");
    assert!(out.contains("can't cd"), "{out}");
}

#[test]
fn opening_a_tripwire_kills_the_run_and_the_real_key_stays_out() {
    let s = Sandbox::new("e-tripwire");
    let log = s.path("audit/t.jsonl");
    let started = std::time::Instant::now();
    let o = s.palisade(&[
        "run",
        "--audit",
        log.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "ls ~/.ssh; cat ~/.ssh/id_rsa; sleep 20; echo survived",
    ]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "the kill was not immediate");
    let out = stdout(&o);
    assert!(!out.contains("survived") && !out.contains("canary-secret"), "{out}");
    assert!(stderr(&o).contains("ALERT") && stderr(&o).contains("~/.ssh/id_rsa was opened"), "{}", stderr(&o));
    let raw = std::fs::read_to_string(&log).unwrap();
    assert!(raw.contains("\"kind\":\"tripwire\"") && raw.contains("\"action\":\"kill\""), "{raw}");
    // Listing the directory (no file opened) is not a trip.
    let o = s.sh("ls -la ~/.ssh >/dev/null && echo listed");
    assert_eq!((o.status.code(), stdout(&o).trim()), (Some(0), "listed"));
}

#[test]
fn secret_denylist_holds_when_the_user_grants_home() {
    let s = Sandbox::new("a02-parent-grant");
    s.write("home/notes.txt", "visible-notes");
    s.write("home/.aws/credentials", CANARY);
    let home = s.home();
    let o = s.run(
        &["--allow-read", home.to_str().unwrap()],
        &["/bin/sh", "-c", "cat ~/notes.txt; cat ~/.aws/credentials ~/.ssh/id_rsa; ls ~/.ssh"],
    );
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(out.contains("visible-notes"), "{out}");
    assert!(!out.contains(CANARY) && !out.contains("canary-secret"), "{out}");
}

#[test]
fn denied_file_inside_the_workspace_is_unreadable() {
    let s = Sandbox::new("a-deny-ws");
    s.write("ws/config/.env", CANARY);
    s.write("ws/config/app.toml", "fine");
    let o = s.run(&["--deny", "**/.env"], &["/bin/sh", "-c", "cat config/app.toml; cat config/.env"]);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(out.contains("fine") && !out.contains(CANARY), "{out}");
    assert_eq!(std::fs::read_to_string(s.path("ws/config/.env")).unwrap(), CANARY);
}

/// A sandbox makes a directory unreadable in one run, so that the next run's search for
/// `**/.env` would take it for empty, and restores it in that next run to read what the
/// glob hides. The directory then stays hidden whole. (As root the search lists it anyway.)
#[test]
fn a_directory_made_unreadable_in_one_run_hides_nothing_less_in_the_next() {
    let s = Sandbox::new("a-deny-unlistable");
    s.write("ws/a/b/.env", CANARY);
    s.write("ws/a/fine.txt", "fine");
    let o = s.run(&["--deny", "**/.env"], &["/bin/sh", "-c", "chmod 000 a"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = s.run(&["--deny", "**/.env"], &["/bin/sh", "-c", "chmod 755 a; cat a/b/.env; cat a/fine.txt"]);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!out.contains(CANARY), "{out}");
    std::fs::set_permissions(s.path("ws/a"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert_eq!(std::fs::read_to_string(s.path("ws/a/b/.env")).unwrap(), CANARY);
}

#[test]
fn environment_is_rebuilt_and_parent_environ_is_invisible() {
    let s = Sandbox::new("a04-env");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args([
            "run",
            "--",
            "/bin/sh",
            "-c",
            "env; cat /proc/1/environ; cat /proc/$PPID/environ; cat /proc/self/environ",
        ])
        .current_dir(s.ws())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", s.home())
        .env("GITHUB_TOKEN", CANARY)
        .env("SSH_AUTH_SOCK", format!("/tmp/{CANARY}"))
        .env("MY_SETTING", CANARY)
        .output()
        .unwrap();
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!out.contains(CANARY), "{out}");
    assert!(stdout(&o).contains("HOME="), "{out}");
}

#[test]
fn host_processes_are_invisible() {
    let s = Sandbox::new("a05-proc");
    let me = std::process::id();
    let o = s.sh(&format!("ls /proc | grep -E '^[0-9]+$' | wc -l; test -e /proc/{me} && echo SEEN"));
    let out = stdout(&o);
    let n: usize = out.lines().next().unwrap().trim().parse().unwrap();
    assert!(n <= 5, "{n} processes visible: {out}");
    assert!(!out.contains("SEEN"));
}

#[test]
fn private_tmp_and_shm() {
    let s = Sandbox::new("a14-tmp");
    let marker = format!("/tmp/palisade-host-marker-{}", std::process::id());
    std::fs::write(&marker, CANARY).unwrap();
    let inside = format!("/tmp/palisade-inside-{}", std::process::id());
    let o = s.sh(&format!(
        "cat {marker}; ls /dev/shm | wc -l; echo x > {inside}; echo y > /dev/shm/palisade-shm-{0}",
        std::process::id()
    ));
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!out.contains(CANARY), "{out}");
    assert!(!std::path::Path::new(&inside).exists(), "a write to the sandbox's /tmp reached the host");
    assert!(!std::path::Path::new(&format!("/dev/shm/palisade-shm-{}", std::process::id())).exists());
    std::fs::remove_file(marker).unwrap();
}

#[test]
fn sysv_shared_memory_of_the_host_is_unreachable() {
    let s = Sandbox::new("a14-ipc");
    // SAFETY: creating and later removing a private SysV segment owned by this test.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o666) };
    assert!(id >= 0);
    let r = s.probe(&[], &["shmat", &id.to_string()]);
    // SAFETY: removing the segment created above.
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    assert_refused(&r, "attaching the host's shared memory");
}

#[test]
fn kernel_keyrings_are_refused() {
    let s = Sandbox::new("a10-keys");
    assert_eq!(s.probe(&[], &["keyctl"]), "EPERM");
    assert_eq!(s.probe(&[], &["add_key"]), "EPERM");
}

#[test]
fn symlink_planted_in_the_workspace_does_not_reach_secrets() {
    let s = Sandbox::new("a07-symlink");
    std::os::unix::fs::symlink(s.home().join(".ssh/id_rsa"), s.path("ws/notes.md")).unwrap();
    std::os::unix::fs::symlink(s.home().join(".ssh"), s.path("ws/keys")).unwrap();
    let o = s.sh("cat notes.md; ls keys; cat keys/id_rsa");
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!out.contains("canary-secret"), "{out}");
}

#[test]
fn host_unix_sockets_outside_the_view_are_absent() {
    let s = Sandbox::new("a08-sockets");
    let path = s.home().join("agent.sock");
    let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    assert_eq!(s.probe(&[], &["connect_unix", path.to_str().unwrap()]), "ENOENT");
}

#[test]
fn host_abstract_sockets_are_unreachable() {
    let s = Sandbox::new("a09-abstract");
    use std::os::linux::net::SocketAddrExt;
    let name = format!("palisade-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let l = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    l.set_nonblocking(true).unwrap();
    assert_refused(&s.probe(&[], &["connect_abstract", &name]), "connecting to a host abstract socket");
    assert!(l.accept().is_err(), "the host listener got a connection");
}

#[test]
fn writes_outside_the_workspace_never_reach_the_host() {
    let s = Sandbox::new("b09-outside");
    s.write("home/.bashrc", "original");
    let o = s.sh(
        "echo evil >> ~/.bashrc; echo evil > ~/.profile; mkdir -p ~/.config/autostart && echo x > ~/.config/autostart/x.desktop; \
         touch /etc/palisade-x; touch /usr/palisade-x; echo ok-done",
    );
    assert!(stdout(&o).contains("ok-done"));
    assert_eq!(std::fs::read_to_string(s.home().join(".bashrc")).unwrap(), "original");
    assert!(!s.home().join(".profile").exists());
    assert!(!s.home().join(".config/autostart").exists());
    assert!(!std::path::Path::new("/etc/palisade-x").exists());
    assert!(!std::path::Path::new("/usr/palisade-x").exists());
}

#[test]
fn sibling_directory_sharing_the_prefix_is_not_writable() {
    let s = Sandbox::new("b02-prefix");
    std::fs::create_dir_all(s.path("ws-evil")).unwrap();
    let evil = s.path("ws-evil/pwned");
    let o = s.sh(&format!("echo x > {}", evil.display()));
    assert_ne!(o.status.code(), Some(0));
    assert!(!evil.exists());
}

#[test]
fn cwd_outside_the_workspace_does_not_become_writable() {
    let s = Sandbox::new("b01-cwd");
    std::fs::create_dir_all(s.path("elsewhere")).unwrap();
    let o = s.palisade_in(
        &s.path("elsewhere"),
        &["run", "--workspace", s.ws().to_str().unwrap(), "--", "/bin/sh", "-c", "pwd; touch here"],
    );
    assert_eq!(stdout(&o).trim(), s.ws().to_str().unwrap(), "{}", stderr(&o));
    assert!(!s.path("elsewhere/here").exists());
    assert!(s.path("ws/here").exists());
}

#[test]
fn existing_protected_paths_are_read_only() {
    let s = Sandbox::new("b05-git");
    s.write("ws/.git/hooks/pre-commit", "#!/bin/sh\nexit 0\n");
    s.write("ws/.git/config", "[core]\n\tbare = false\n");
    s.write("ws/.vscode/settings.json", "{}");
    s.write("ws/.palisade.toml", "");
    let o = s.sh("echo 'touch /tmp/pwn' >> .git/hooks/pre-commit; echo '[core] fsmonitor = evil' >> .git/config; \
         echo x > .git/hooks/post-checkout; echo '{}' > .vscode/tasks.json; echo '[network]' >> .palisade.toml; \
         rm -f .git/config; echo done");
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(s.path("ws/.git/hooks/pre-commit")).unwrap(), "#!/bin/sh\nexit 0\n");
    assert_eq!(std::fs::read_to_string(s.path("ws/.git/config")).unwrap(), "[core]\n\tbare = false\n");
    assert!(!s.path("ws/.git/hooks/post-checkout").exists());
    assert!(!s.path("ws/.vscode/tasks.json").exists());
    assert_eq!(std::fs::read_to_string(s.path("ws/.palisade.toml")).unwrap(), "");
}

#[test]
fn protected_paths_that_do_not_exist_cannot_be_created() {
    let s = Sandbox::new("b04-missing");
    let o = s.sh(
        "mkdir -p .git/hooks; echo evil > .git/hooks/pre-commit; mkdir .vscode; echo '{}' > .vscode/tasks.json; \
         mkdir -p .claude && echo '{}' > .claude/settings.json; echo '{}' > .mcp.json; echo x > .envrc; git init -q .; echo done",
    );
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    for p in [".git", ".vscode", ".claude", ".mcp.json", ".envrc"] {
        assert!(!s.path(&format!("ws/{p}")).exists(), "{p} exists on the host after the run");
    }
}

#[test]
fn protected_directory_cannot_be_renamed_away_and_recreated() {
    let s = Sandbox::new("b05-rename");
    s.write("ws/.git/hooks/pre-commit", "original");
    s.write("ws/.git/HEAD", "ref: refs/heads/main\n");
    let o = s.sh("mv .git .git-old; mv .git/hooks .git/hooks-old; rmdir .git/hooks; mkdir -p .git/hooks; echo evil > .git/hooks/pre-commit; echo done");
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(s.path("ws/.git/hooks/pre-commit")).unwrap(), "original");
    assert!(!s.path("ws/.git-old").exists());
    assert!(!s.path("ws/.git/hooks-old").exists());
}

#[test]
fn metadata_changes_and_truncation_outside_are_refused() {
    let s = Sandbox::new("b10-meta");
    let cargo = s.home().join(".cargo");
    std::fs::create_dir_all(&cargo).unwrap();
    let f = cargo.join("config.toml");
    std::fs::write(&f, "original").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::metadata(&f).unwrap();
    let fp = f.to_str().unwrap();
    for attempt in ["chmod", "utime", "setxattr", "open_trunc"] {
        assert_refused(&s.probe(&[], &[attempt, fp]), attempt);
    }
    let after = std::fs::metadata(&f).unwrap();
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "original");
    assert_eq!(before.permissions().mode(), after.permissions().mode());
    assert_eq!(before.modified().unwrap(), after.modified().unwrap());
    assert_refused(&s.probe(&[], &["rename", fp, &format!("{fp}.moved")]), "rename");
    assert_refused(
        &s.probe(&[], &["link", fp, s.path("ws/hardlink").to_str().unwrap()]),
        "hard link out of a read-only tree",
    );
    assert!(!s.path("ws/hardlink").exists());
}

#[test]
fn symlink_at_a_protected_path_is_pinned_and_leads_nowhere_writable() {
    // Users keep links such as `.vscode -> tools/vscode`: the run goes ahead, the link can be
    // neither removed nor replaced, and what it leads to is protected too, by either name.
    let s = Sandbox::new("b03-link-protect");
    s.write("ws/tools/vscode/tasks.json", "{}");
    std::fs::create_dir_all(s.path("elsewhere")).unwrap();
    std::os::unix::fs::symlink("tools/vscode", s.path("ws/.vscode")).unwrap();
    std::os::unix::fs::symlink(s.path("elsewhere"), s.path("ws/.claude")).unwrap();
    let o = s
        .sh("echo evil > .vscode/tasks.json; echo evil > tools/vscode/tasks.json; echo x > tools/vscode/new.json; \
         rm -f .vscode; mv .vscode moved; ln -sfn /tmp .claude; rm -f .claude; echo done");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(s.path("ws/tools/vscode/tasks.json")).unwrap(), "{}");
    assert!(!s.path("ws/tools/vscode/new.json").exists());
    assert_eq!(std::fs::read_link(s.path("ws/.vscode")).unwrap(), std::path::Path::new("tools/vscode"));
    assert_eq!(std::fs::read_link(s.path("ws/.claude")).unwrap(), s.path("elsewhere"));
    assert!(!s.path("ws/moved").exists());
}

#[test]
fn symlink_swapped_in_during_setup_never_redirects_a_mount() {
    // An attacker outside the sandbox (another agent on the same workspace) flips `.git`
    // between a directory and a link to a host directory while sandboxes start. Whatever the
    // timing, nothing may be created in or mounted over the link's target.
    let s = Sandbox::new("b03-race");
    let target = s.path("victim");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::create_dir_all(s.path("ws/.git/hooks")).unwrap();
    std::os::unix::fs::symlink(&target, s.path("ws/.git-link")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, ws) = (stop.clone(), s.ws());
        std::thread::spawn(move || {
            let (a, b) = (
                std::ffi::CString::new(ws.join(".git").to_str().unwrap()).unwrap(),
                std::ffi::CString::new(ws.join(".git-link").to_str().unwrap()).unwrap(),
            );
            let mut flips = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && flips < 200_000 {
                // SAFETY: renameat2 with two valid C strings; RENAME_EXCHANGE swaps them.
                unsafe {
                    libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), 2u32)
                };
                flips += 1;
            }
        })
    };
    for _ in 0..20 {
        let _ = s.sh("echo evil > .git/hooks/pre-commit 2>/dev/null; true");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&target).unwrap().collect();
    assert!(leftovers.is_empty(), "the sandbox wrote through the swapped link: {leftovers:?}");
}
