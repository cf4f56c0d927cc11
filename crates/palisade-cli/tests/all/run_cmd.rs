//! `palisade run`: exit statuses, diagnostics, stdio.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::util::*;

#[test]
fn exit_status_is_the_commands() {
    let s = Sandbox::new("exit-status");
    assert_eq!(s.sh("exit 0").status.code(), Some(0));
    assert_eq!(s.sh("exit 7").status.code(), Some(7));
    assert_eq!(s.sh("exit 255").status.code(), Some(255));
}

#[test]
fn killed_by_signal_is_128_plus_n() {
    let s = Sandbox::new("exit-signal");
    assert_eq!(s.sh("kill -TERM $$").status.code(), Some(143));
    assert_eq!(s.sh("kill -KILL $$").status.code(), Some(137));
}

#[test]
fn not_found_is_127_and_not_executable_is_126() {
    let s = Sandbox::new("exit-exec");
    let o = s.run(&[], &["no-such-command-palisade"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    assert_eq!(s.run(&[], &["/no/such/path"]).status.code(), Some(127));
    s.write("ws/script.sh", "#!/bin/sh\necho hi\n");
    let o = s.run(&[], &["./script.sh"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot execute"), "{}", stderr(&o));
}

#[test]
fn run_requires_a_command() {
    let s = Sandbox::new("run-nocmd");
    assert_eq!(s.palisade(&["run"]).status.code(), Some(125));
}

#[test]
fn bad_policy_is_125_and_nothing_runs() {
    let s = Sandbox::new("run-badpolicy");
    s.write("home/.config/palisade/policy.toml", "[filesystem]\nread = [\"${nope}\"]\n");
    let marker = s.path("ws/ran");
    let o = s.sh(&format!("touch {}", marker.display()));
    assert_eq!(o.status.code(), Some(125));
    assert!(!marker.exists(), "the command ran despite a bad policy");
}

#[test]
fn run_json_diagnostics() {
    let s = Sandbox::new("run-json");
    s.write("ws/.palisade.toml", "[network]\nmode = \"allowlist\"\n");
    let o = s.palisade(&["run", "--json", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    let v: serde_json::Value = serde_json::from_str(stderr(&o).lines().last().unwrap()).unwrap();
    assert_eq!(v["exit_code"], 125);
    assert_eq!(v["level"], "error");
}

#[test]
fn stdin_and_stdout_are_binary_safe_pipes() {
    let s = Sandbox::new("binary-pipes");
    let data: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["run", "--", "cat"])
        .current_dir(s.ws())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", s.home())
        .env("XDG_CONFIG_HOME", s.home().join(".config"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&feed));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == data, "output differs from input ({} vs {} bytes)", out.stdout.len(), data.len());
}

#[test]
fn check_reports_this_machine() {
    let s = Sandbox::new("check-host");
    let o = s.palisade(&["check", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["platform"], "linux");
    // This suite runs sandboxes, so the machine must be able to: check must agree.
    assert_eq!(v["run"], "enforce", "{v}");
    assert_eq!(o.status.code(), Some(0));
    assert!(v["landlock_abi"].as_i64().unwrap() >= 3);
}

#[test]
fn missing_namespaces_fail_closed_with_a_diagnosis() {
    // Inside a sandbox, seccomp refuses new namespaces: a nested Palisade must refuse to run
    // (125) and say why, never fall back to running unsandboxed.
    let s = Sandbox::new("d09-failclosed");
    let pal = env!("CARGO_BIN_EXE_palisade");
    let marker = s.path("ws/ran-unsandboxed");
    let o = s.run(&[], &[pal, "run", "--", "/bin/sh", "-c", &format!("touch {}", marker.display())]);
    assert_eq!(o.status.code(), Some(125), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("namespaces"), "{}", stderr(&o));
    assert!(!marker.exists(), "the nested command ran");
    let o = s.run(&[], &[pal, "check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("MISSING user namespaces"), "{}", stdout(&o));
    assert!(stdout(&o).contains("run would: refuse"), "{}", stdout(&o));
}

#[test]
fn degraded_mode_runs_with_landlock_and_seccomp_and_says_what_is_missing() {
    // Inside a sandbox there are no user namespaces, as in an unprivileged container: with
    // --allow-degraded a nested Palisade runs with Landlock and seccomp only, and still
    // refuses what its policy does not grant.
    let s = Sandbox::new("degraded");
    std::fs::create_dir_all(s.path("ws/inner")).unwrap();
    s.write("ws/outer-only.txt", "OUTER-ONLY-CANARY");
    let pal = env!("CARGO_BIN_EXE_palisade");
    let ws = s.ws();
    let probe = probe_bin();
    let inner_script = format!(
        "setsid sleep 31 & cat ../outer-only.txt; echo x > ../escaped.txt; echo ok > inside.txt; {probe} connect_tcp 127.0.0.1:9; {probe} socket_tcp; echo prlimit-$({probe} prlimit_read 1); echo done"
    );
    // The inner sandbox's temporary directory is its own, so that `${tmp}` does not grant
    // the (outer sandbox's) /tmp where this test's files live.
    let script = format!(
        "mkdir -p {ws}/innertmp && cd {ws}/inner && TMPDIR={ws}/innertmp {pal} run --allow-degraded --allow-read {bin} -- /bin/sh -c '{inner_script}'; \
         echo survivors=$(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^sleep$')",
        ws = ws.display(),
        bin = bin_dir(),
    );
    let o = s.sh(&script);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(err.contains("DEGRADED MODE") && err.contains("NOT enforced"), "{err}");
    assert!(out.contains("done"), "{out}{err}");
    // What the command left behind (a daemon in its own session) ended with the run.
    assert!(out.contains("survivors=0"), "{out}");
    assert!(!out.contains("OUTER-ONLY-CANARY"), "read outside the grants: {out}");
    assert!(!s.path("ws/escaped.txt").exists(), "wrote outside the workspace");
    assert!(s.path("ws/inner/inside.txt").exists(), "the workspace was not writable");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().filter(|l| **l == "EPERM").count() >= 2, "network was not refused: {out}");
    // No pid namespace: a process outside (here the outer sandbox's init) is out of reach.
    assert!(out.contains("prlimit-EPERM"), "{out}");
}

#[test]
fn hostile_workspace_names() {
    use std::os::unix::ffi::OsStrExt;
    let s = Sandbox::new("hostile-names");
    let weird = s.path("we ird'\"$(touch pwned)\n");
    std::fs::create_dir_all(&weird).unwrap();
    let o = s.palisade_in(&weird, &["run", "--", "/bin/sh", "-c", "pwd"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim_end_matches('\n'), weird.to_str().unwrap().trim_end_matches('\n'));
    assert!(!s.path("pwned").exists() && !weird.join("pwned").exists());
    let bad = s.root.join(std::ffi::OsStr::from_bytes(b"bad\xffname"));
    std::fs::create_dir_all(&bad).unwrap();
    let o = s.palisade_in(&bad, &["run", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("not valid UTF-8"), "{}", stderr(&o));
}

#[test]
fn a_command_hidden_from_the_sandbox_is_named_with_the_grant_that_shows_it() {
    use std::os::unix::fs::PermissionsExt;
    let s = Sandbox::new("hidden-command");
    let bin = s.root.join("tools/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["mytool", "ls"] {
        std::fs::write(bin.join(name), "#!/bin/sh\necho from-tools\n").unwrap();
        std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display());
    let o = s.command(&s.ws(), &["run", "--", "mytool"]).env("PATH", &path).output().unwrap();
    assert_eq!(o.status.code(), Some(127));
    let err = stderr(&o);
    assert!(err.contains(&format!("mytool is on the host at {}/mytool", bin.display())), "{err}");
    assert!(err.contains(&format!("--allow-read {}", bin.display())), "{err}");
    // An npm-style link (bin/agent -> ../lib/agent/cli.js): one grant of the prefix shows both.
    let lib = s.root.join("tools/lib/agent");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(lib.join("cli.sh"), "#!/bin/sh\necho from-agent\n").unwrap();
    std::fs::set_permissions(lib.join("cli.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../lib/agent/cli.sh", bin.join("agent")).unwrap();
    let o = s.command(&s.ws(), &["run", "--", "agent"]).env("PATH", &path).output().unwrap();
    let err = stderr(&o);
    let tools = s.root.join("tools").display().to_string();
    assert!(err.contains(&format!("with --allow-read {tools} ")), "{err}");
    let o = s.command(&s.ws(), &["run", "--allow-read", &tools, "--", "agent"]).env("PATH", &path).output().unwrap();
    assert_eq!(stdout(&o), "from-agent\n", "{}", stderr(&o));
    // A hidden `ls` first on PATH: the host's /usr/bin/ls runs instead, and the user is told.
    let o = s.command(&s.ws(), &["run", "--", "ls", "/"]).env("PATH", &path).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(!stdout(&o).contains("from-tools"));
    let err = stderr(&o);
    assert!(err.contains("`ls` runs") && err.contains(&format!("not {}/ls", bin.display())), "{err}");
    // Granted, it runs, and nothing is said.
    let o = s.command(&s.ws(), &["run", "--allow-read", &tools, "--", "mytool"]).env("PATH", &path).output().unwrap();
    assert_eq!(stdout(&o), "from-tools\n", "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

#[test]
fn a_state_directory_is_made_on_the_host_so_what_is_kept_there_persists() {
    let s = Sandbox::new("state-dir");
    s.write("home/.config/palisade/policy.toml", "[filesystem]\nstate = [\"~/.agent\"]\n");
    let state = s.home().join(".agent");
    assert!(!state.exists());
    // A dry run plans and makes nothing.
    assert_eq!(s.palisade(&["run", "--dry-run", "--", "true"]).status.code(), Some(0));
    assert!(!state.exists());
    let o = s.palisade(&["run", "--", "sh", "-c", "echo token > ~/.agent/login"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("made {} on the host", state.display())), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(state.join("login")).unwrap(), "token\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
    // The next run finds it, and says nothing more.
    let o = s.palisade(&["run", "--", "cat", &state.join("login").display().to_string()]);
    assert_eq!(stdout(&o), "token\n");
    assert!(!stderr(&o).contains("made"), "{}", stderr(&o));
    // A project file may not make directories on the host.
    s.write("ws/.palisade.toml", "[filesystem]\nstate = [\"sub\"]\n");
    let o = s.palisade(&["run", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("may not make directories"), "{}", stderr(&o));
    assert!(!s.ws().join("sub").exists());
}

#[test]
fn an_own_copy_is_written_inside_kept_for_the_workspace_and_never_written_back() {
    let s = Sandbox::new("own-copy");
    s.write(
        "home/.config/palisade/policy.toml",
        "[filesystem]\nstate = [\"~/.agent\"]\nown_copy = [\"~/.agent/settings.json\"]\n",
    );
    let host = s.home().join(".agent/settings.json");
    // Missing: made on the host as `{}` (an empty file is no JSON), and the sandbox writes
    // its own copy in place.
    let o = s.palisade(&[
        "run",
        "--",
        "sh",
        "-c",
        "cat ~/.agent/settings.json; echo '{\"auth\":1}' > ~/.agent/settings.json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "{}\n");
    assert_eq!(std::fs::read_to_string(&host).unwrap(), "{}\n", "written back to the host");
    // The next run of this workspace finds its copy.
    let o = s.palisade(&["run", "--", "cat", &host.display().to_string()]);
    assert_eq!(stdout(&o), "{\"auth\":1}\n", "{}", stderr(&o));
    // Replacing it (rm, mv) is refused: it stays the copy.
    let o = s.palisade(&[
        "run",
        "--",
        "sh",
        "-c",
        "rm -f ~/.agent/settings.json; mv ~/.agent/settings.json ~/.agent/x; cat ~/.agent/settings.json",
    ]);
    assert_eq!(stdout(&o), "{\"auth\":1}\n", "{}", stderr(&o));
    // Another workspace has its own.
    std::fs::create_dir_all(s.root.join("ws2")).unwrap();
    let o = s.palisade_in(&s.root.join("ws2"), &["run", "--", "cat", &host.display().to_string()]);
    assert_eq!(stdout(&o), "{}\n", "{}", stderr(&o));
    // The user's own edit on the host wins, and is said.
    std::fs::write(&host, "{\"theme\":\"dark\"}\n").unwrap();
    let o = s.palisade(&["run", "--", "cat", &host.display().to_string()]);
    assert_eq!(stdout(&o), "{\"theme\":\"dark\"}\n");
    assert!(stderr(&o).contains("changed on the host"), "{}", stderr(&o));
    // A link put in its place is not followed when the copy is seeded.
    std::fs::remove_file(&host).unwrap();
    std::os::unix::fs::symlink(s.home().join(".ssh/id_rsa"), &host).unwrap();
    let o = s.palisade(&["run", "--", "sh", "-c", "cat ~/.agent/settings.json 2>&1; true"]);
    assert!(!stdout(&o).contains("canary-secret"), "{}", stdout(&o));
    assert!(stderr(&o).contains("a symbolic link the sandbox could have made"), "{}", stderr(&o));
}

#[test]
fn nothing_is_made_through_a_link_and_a_copy_that_cannot_be_kept_fails_no_run() {
    let s = Sandbox::new("state-link");
    let victim = s.root.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    let shared = s.root.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    s.write(
        "home/.config/palisade/policy.toml",
        &format!(
            "[filesystem]\nwrite = [\"{0}\"]\nstate = [\"{0}/sub/data\"]\nown_copy = [\"{0}/big.json\"]\n",
            shared.display()
        ),
    );
    // Run 1, inside: the directory on the way to the state directory becomes a link.
    std::fs::create_dir_all(shared.join("sub")).unwrap();
    let script = format!("rm -rf {0}/sub/data {0}/sub; ln -s {1} {0}/sub", shared.display(), victim.display());
    let o = s.palisade(&["run", "--", "sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Run 2 makes nothing through it.
    let o = s.palisade(&["run", "--", "true"]);
    assert!(stderr(&o).contains("on the way is a symbolic link the sandbox could have made"), "{}", stderr(&o));
    assert!(!victim.join("data").exists(), "a directory was made through the link");
    // A file too large to keep a copy of stays only protected; the run goes on.
    std::fs::remove_file(shared.join("sub")).unwrap();
    std::fs::write(shared.join("big.json"), vec![b' '; 2 << 20]).unwrap();
    let big = shared.join("big.json").display().to_string();
    let o = s.palisade(&["run", "--", "sh", "-c", &format!("wc -c < {big}; echo x > {big} || echo refused")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "2097152\nrefused\n", "{}", stderr(&o));
}

#[test]
fn allow_read_of_the_whole_root_shows_the_host_read_only_keeps_secrets_hidden_and_tmp_private() {
    let s = Sandbox::new("allow-root");
    let marker = format!("palisade-allow-root-{}", std::process::id());
    let o = s.run(
        &["--allow-read", "/"],
        &[
            "/bin/sh",
            "-c",
            &format!(
                "head -c 5 /etc/passwd; echo; ls /usr/bin/env; cat /etc/shadow 2>/dev/null || echo hidden; \
                 touch /usr/palisade-x 2>/dev/null || echo ro; echo t > /tmp/{marker} && cat /tmp/{marker}; \
                 echo w > made && echo ws"
            ),
        ],
    );
    assert_eq!(stdout(&o), "root:\n/usr/bin/env\nhidden\nro\nt\nws\n", "{}", stderr(&o));
    // The private /tmp is the sandbox's own: nothing reached the host's.
    assert!(!std::path::Path::new("/tmp").join(&marker).exists());
    assert_eq!(std::fs::read_to_string(s.ws().join("made")).unwrap(), "w\n");
    // A host service's socket under /run: hidden, so nothing inside can connect to it.
    let run_dir = std::path::Path::new("/run").join(format!("palisade-test-{}", std::process::id()));
    if std::fs::create_dir(&run_dir).is_ok() {
        let sock = run_dir.join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        listener.set_nonblocking(true).unwrap();
        let script = format!(
            "import socket; s = socket.socket(socket.AF_UNIX)\ntry:\n s.connect('{}'); print('connected')\nexcept OSError as e: print('refused')",
            sock.display()
        );
        let o = s.run(&["--allow-read", "/"], &["/usr/bin/python3", "-c", &script]);
        let accepted = listener.accept().is_ok();
        let _ = std::fs::remove_dir_all(&run_dir);
        assert_eq!(stdout(&o), "refused\n", "{}", stderr(&o));
        assert!(!accepted, "the host's socket saw a connection from the sandbox");
    }
}

#[test]
fn files_that_make_agents_and_tools_run_code_later_are_read_only_under_every_profile() {
    let s = Sandbox::new("agent-files");
    // A project's .env (aider's options, docker compose's), and an agent's global
    // configuration when the workspace holds it (a dotfiles repository).
    let o = s.sh("echo AIDER_LOAD=x > .env; echo pwned > .aider.model.settings.yml; ls -A");
    assert!(!s.ws().join(".env").exists() && !s.ws().join(".aider.model.settings.yml").exists(), "{}", stdout(&o));
    let dotfiles = s.home().join(".config");
    s.write("home/.config/opencode/opencode.json", "{}\n");
    let script =
        "echo '{\"mcp\":1}' > opencode/opencode.json; mkdir -p opencode/plugin && echo x > opencode/plugin/p.js";
    let o = s.palisade_in(&dotfiles, &["run", "--profile", "generic", "--", "sh", "-c", script]);
    assert_eq!(std::fs::read_to_string(dotfiles.join("opencode/opencode.json")).unwrap(), "{}\n", "{}", stderr(&o));
    assert!(!dotfiles.join("opencode/plugin").exists());
}
