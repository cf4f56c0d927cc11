//! Files that make the host run code later (THREATS B-04..B-07, B-09), for every git layout
//! and every writable root, and placeholders that leave nothing in the user's repository.
//! Each test plants from inside a real sandbox what would make git or a tool on the host run
//! a command, then runs the host's own git and checks the canary: a file that only that
//! command would create, at a path the sandbox cannot write.

use std::path::{Path, PathBuf};

use crate::util::*;

/// Shell that plants, in the git directory `$1`, every way of making git run `touch MARK`,
/// each of which works on its own: hooks, `core.fsmonitor` in `config` and in
/// `config.worktree` (read once `extensions.worktreeConfig` is on), a `commondir` redirect to
/// a complete copy of the git directory whose configuration does the same, and `info/`.
fn planter(mark: &Path) -> String {
    let m = mark.display();
    format!(
        r#"plant() {{ g=$1; abs=$(cd "$g" && pwd)
  mkdir -p "$g/hooks" 2>/dev/null
  for h in pre-commit post-commit post-checkout reference-transaction; do
    printf '#!/bin/sh\ntouch {m}\n' > "$g/hooks/$h" && chmod +x "$g/hooks/$h"; done
  printf '[core]\n\tfsmonitor = "touch {m}; false"\n[extensions]\n\tworktreeConfig = true\n' >> "$g/config"
  printf '[core]\n\tfsmonitor = "touch {m}; false"\n' > "$g/config.worktree"
  rm -rf "$abs.evil"; cp -r "$abs" "$abs.evil" 2>/dev/null && rm -f "$abs.evil/commondir" && \
    printf '[core]\n\tfsmonitor = "touch {m}; false"\n' >> "$abs.evil/config" && echo "$abs.evil" > "$g/commondir"
  echo 'hidden' >> "$g/info/exclude"
}}
"#
    )
}

/// Runs, on the host, what a user runs in `dir` after the session: status, diff, a commit,
/// a checkout of a new branch, log. Nothing planted may run.
#[track_caller]
fn host_runs_nothing(s: &Sandbox, dir: &Path, mark: &Path) {
    for args in [
        &["status", "--porcelain"][..],
        &["diff"],
        &["-c", "core.fsmonitor=", "add", "-A"],
        &["commit", "-q", "--allow-empty", "-m", "host"],
        &["checkout", "-q", "-b", "host-branch"],
        &["log", "-1", "--oneline"],
        &["status"],
    ] {
        let _ = s.host_git(dir, args);
        assert!(!mark.exists(), "git {args:?} in {} ran a command planted inside the sandbox", dir.display());
    }
}

/// Waits (at most 10 s) until `path` exists, as a placeholder a starting run makes.
fn wait_for(path: &Path) {
    let t = std::time::Instant::now();
    while std::fs::symlink_metadata(path).is_err() && t.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn repo(s: &Sandbox, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    s.host_git_ok(dir, &["init", "-q"]);
    std::fs::write(dir.join("README"), "readme\n").unwrap();
    s.host_git_ok(dir, &["add", "README"]);
    s.host_git_ok(dir, &["commit", "-q", "-m", "init"]);
}

#[test]
fn a_commondir_or_gitfile_redirect_runs_nothing_on_the_host() {
    let s = Sandbox::new("p1-commondir");
    s.git_identity();
    repo(&s, &s.ws());
    let mark = s.path("PWNED");
    // The issue's exact attack, then every sibling on the workspace's own git directory.
    let script = format!(
        "{} cp -r .git .g2; printf '[core]\\n\\tfsmonitor = \"touch {}; false\"\\n' >> .g2/config; \
         echo ../.g2 > .git/commondir; plant .git; echo 'gitdir: .g2' > .git 2>/dev/null; echo done",
        planter(&mark),
        mark.display()
    );
    let o = s.sh(&script);
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    host_runs_nothing(&s, &s.ws(), &mark);
    assert!(!s.path("ws/.git/commondir").exists(), "a commondir was left behind");
}

#[test]
fn a_linked_worktree_commits_inside_and_plants_nothing() {
    let s = Sandbox::new("p2-worktree");
    s.git_identity();
    let main = s.path("main");
    repo(&s, &main);
    std::fs::remove_dir_all(s.ws()).unwrap();
    s.host_git_ok(&main, &["worktree", "add", "-q", s.ws().to_str().unwrap()]);
    let mark = s.path("PWNED");
    let gd = main.join(".git");
    let script = format!(
        "{} echo work > work.txt && git add work.txt && git commit -q -m inside && echo COMMITTED; \
         plant {gd}; plant {gd}/worktrees/ws; echo 'gitdir: {gd}.evil' > .git; echo done",
        planter(&mark),
        gd = gd.display()
    );
    let o = s.run(&["--allow-write", gd.to_str().unwrap()], &["/bin/sh", "-c", &script]);
    assert!(stdout(&o).contains("COMMITTED"), "committing from a linked worktree failed: {}", stderr(&o));
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    assert!(s.host_git_ok(&main, &["log", "--all", "--oneline"]).contains("inside"));
    host_runs_nothing(&s, &s.ws(), &mark);
    host_runs_nothing(&s, &main, &mark);
}

#[test]
fn nested_repositories_and_extra_writable_roots_are_protected() {
    let s = Sandbox::new("p3-nested");
    s.git_identity();
    let lib = s.path("lib");
    let repos: Vec<PathBuf> = vec![s.path("ws/repo1"), s.path("ws/repo2"), s.path("ws/org/deep"), lib.clone()];
    for r in &repos {
        repo(&s, r);
    }
    let mark = s.path("PWNED");
    let mut script = planter(&mark);
    for r in &repos {
        script.push_str(&format!("plant {}/.git; ", r.display()));
    }
    script.push_str("echo done");
    let o = s.run(&["--allow-write", lib.to_str().unwrap()], &["/bin/sh", "-c", &script]);
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    for r in &repos {
        host_runs_nothing(&s, r, &mark);
    }
}

#[test]
fn repositories_recorded_as_gitlinks_are_protected_at_any_depth() {
    // `git status` descends into every populated gitlink of the index, submodule or embedded
    // repository, deeper than any scan goes: the index is what says where they are.
    let s = Sandbox::new("p3-gitlinks");
    s.git_identity();
    let sub_src = s.path("sub-src");
    repo(&s, &sub_src);
    repo(&s, &s.ws());
    let embedded = s.path("ws/vendor/github.com/x/embedded");
    repo(&s, &embedded);
    s.host_git_ok(&s.ws(), &["add", "vendor/github.com/x/embedded"]);
    s.host_git_ok(&s.ws(), &["submodule", "add", "-q", sub_src.to_str().unwrap(), "third_party/deep/sub"]);
    s.host_git_ok(&s.ws(), &["commit", "-q", "-m", "gitlinks"]);
    let mark = s.path("PWNED");
    let script = format!(
        "{} plant vendor/github.com/x/embedded/.git; plant .git/modules/third_party/deep/sub; \
         echo \"gitdir: $(pwd)/.git/modules/third_party/deep/sub.evil\" > third_party/deep/sub/.git; echo done",
        planter(&mark)
    );
    let o = s.sh(&script);
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    host_runs_nothing(&s, &s.ws(), &mark);
    host_runs_nothing(&s, &embedded, &mark);
    host_runs_nothing(&s, &s.path("ws/third_party/deep/sub"), &mark);
}

#[test]
fn hooks_path_and_included_configuration_in_the_work_tree_are_protected() {
    let s = Sandbox::new("p3-hookspath");
    s.git_identity();
    repo(&s, &s.ws());
    std::fs::create_dir_all(s.path("ws/.husky/_")).unwrap();
    std::fs::write(s.path("ws/shared.gitconfig"), "[alias]\n\tst = status\n").unwrap();
    s.host_git_ok(&s.ws(), &["config", "core.hooksPath", ".husky/_"]);
    s.host_git_ok(&s.ws(), &["config", "include.path", "../shared.gitconfig"]);
    let mark = s.path("PWNED");
    let m = mark.display();
    let script = format!(
        "printf '#!/bin/sh\\ntouch {m}\\n' > .husky/_/pre-commit; chmod +x .husky/_/pre-commit; \
         printf '[core]\\n\\tfsmonitor = \"touch {m}; false\"\\n' >> shared.gitconfig; echo done"
    );
    let o = s.sh(&script);
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    host_runs_nothing(&s, &s.ws(), &mark);
}

#[test]
fn a_write_grant_over_home_runs_protects_and_leaves_nothing() {
    let s = Sandbox::new("p4-home");
    s.git_identity();
    let proj = s.path("home/proj");
    repo(&s, &proj);
    s.write("home/.bashrc", "original\n");
    let before = s.listing(&s.home());
    let home = s.home();
    let run = |script: &str| {
        s.palisade_in(
            &proj,
            &[
                "run",
                "--allow-read",
                &bin_dir(),
                "--workspace",
                proj.to_str().unwrap(),
                "--allow-write",
                home.to_str().unwrap(),
                "--",
                "/bin/sh",
                "-c",
                script,
            ],
        )
    };
    let o =
        run("echo evil >> ~/.bashrc; echo evil > ~/.profile; mkdir -p ~/.config/autostart; mkdir -p ~/.local/bin; \
         echo x > ~/notes.txt; cat ~/.ssh/id_rsa; echo done");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("done") && !stdout(&o).contains("canary-secret"), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(std::fs::read_to_string(home.join(".bashrc")).unwrap(), "original\n");
    assert!(!home.join(".profile").exists() && !home.join(".config/autostart").exists());
    assert!(!home.join(".local/bin").exists());
    let mut after = s.listing(&home);
    after.retain(|e| !e.starts_with("notes.txt ") && !e.starts_with(".local "));
    let mut expected = before.clone();
    expected.retain(|e| !e.starts_with(".local "));
    assert_eq!(after, expected, "the run left something in the home directory");
    // The next run reads the policy under the same home as before.
    let o = run("echo again");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_setup_failure_names_the_step_the_path_and_the_error() {
    let s = Sandbox::new("p4-errors");
    s.git_identity();
    repo(&s, &s.ws());
    let before = s.listing(&s.ws());
    // In the supervisor: the placeholder registry cannot be made.
    let audit = s.path("audit.jsonl");
    let o = s
        .command(&s.ws(), &["run", "--audit", audit.to_str().unwrap(), "--", "true"])
        .env("XDG_STATE_HOME", "/proc/palisade-test")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("placeholder registry") && err.contains("/proc/palisade-test/palisade/placeholders"), "{err}");
    assert_eq!(s.listing(&s.ws()), before, "a failed set-up left placeholders");
    // In the sandbox's init, while it builds the view (as root: inside its user namespace
    // the sandbox holds only this uid, so another user's 0700 directory, which root reads
    // through CAP_DAC_OVERRIDE, is out of reach). With and without a cgroup, the message is
    // init's own report, never "Broken pipe", and nothing is left behind.
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the failure inside init needs root (another user's directory)");
        return;
    }
    let dir = s.path("closed");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let sub = dir.join("sub");
    for limits in [&[][..], &["--memory", "unlimited", "--pids", "unlimited"]] {
        let mut opts = vec!["--allow-read", sub.to_str().unwrap()];
        opts.extend_from_slice(limits);
        let o = s.run(&opts, &["true"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{err}");
        assert!(!err.contains("Broken pipe"), "{err}");
        assert!(err.contains(sub.to_str().unwrap()) && err.contains("Permission denied"), "{err}");
        assert_eq!(s.listing(&s.ws()), before, "a failed set-up left placeholders");
    }
}

#[test]
fn placeholders_are_invisible_to_git_read_as_absent_and_leave_nothing() {
    let s = Sandbox::new("p5-placeholders");
    s.git_identity();
    repo(&s, &s.ws());
    let before = s.listing(&s.ws());
    let o = s.sh("echo x > app.py; git add -A && git commit -q -m app && echo COMMITTED; git status --porcelain; \
         cat .mcp.json || echo MCP-ABSENT; test -e .vscode || echo VSCODE-ABSENT; \
         test -e .vscode/settings.json || echo SETTINGS-ABSENT; \
         mkdir .claude 2>/dev/null || echo MKDIR-REFUSED; echo '{}' > .mcp.json || echo WRITE-REFUSED; \
         ls -l .claude; git clean -n -d -x");
    let out = stdout(&o);
    for want in ["COMMITTED", "MCP-ABSENT", "VSCODE-ABSENT", "SETTINGS-ABSENT", "MKDIR-REFUSED", "WRITE-REFUSED"] {
        assert!(out.contains(want), "{want} missing: {out}{}", stderr(&o));
    }
    assert!(out.contains("is protected here; create it outside the sandbox"), "`ls -l` should say why: {out}");
    assert!(!out.contains("Would remove"), "git clean sees placeholders: {out}");
    assert!(!stderr(&o).contains("No such device"), "{}", stderr(&o));
    // The commit holds app.py alone; the host's tree is clean and as it was, plus app.py.
    let files = s.host_git_ok(&s.ws(), &["show", "--name-only", "--format=", "HEAD"]);
    assert_eq!(files.trim(), "app.py");
    assert_eq!(s.host_git_ok(&s.ws(), &["status", "--porcelain"]), "");
    let mut expected = before;
    expected.push("app.py FileType { is_file: true, is_dir: false, is_symlink: false, .. }".into());
    expected.sort();
    assert_eq!(s.listing(&s.ws()).len(), expected.len(), "{:?}", s.listing(&s.ws()));
}

#[test]
fn from_a_subdirectory_git_is_not_confused_by_placeholders() {
    let s = Sandbox::new("p5-subdir");
    s.git_identity();
    let top = s.path("top");
    repo(&s, &top);
    std::fs::create_dir_all(top.join("sub")).unwrap();
    let o = s.palisade_in(&top.join("sub"), &["run", "--", "/bin/sh", "-c", "git status 2>&1; echo done"]);
    let out = stdout(&o);
    assert!(out.contains("done"), "{}", stderr(&o));
    assert!(!out.contains("invalid gitfile"), "{out}");
    // While a run lasts, git on the host in that subdirectory still finds the repository.
    let mut child = s.command(&top.join("sub"), &["run", "--", "sleep", "3"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let during = s.host_git(&top.join("sub"), &["status", "--porcelain"]);
    child.wait().unwrap();
    assert!(during.status.success(), "host git during a run: {}", stderr(&during));
    assert_eq!(stdout(&during), "");
}

#[test]
fn git_init_and_clone_into_a_plain_workspace_are_refused_and_say_why() {
    // A repository made inside would carry a configuration and hooks written inside, which
    // git on the host would run: the workspace cannot become a repository in the sandbox.
    let s = Sandbox::new("p5-init");
    s.git_identity();
    let src = s.path("src-repo");
    repo(&s, &src);
    let o = s.run(
        &["--allow-read", src.to_str().unwrap()],
        &["/bin/sh", "-c", &format!("git init 2>&1; git clone -q {} . 2>&1; ls -l .git; echo done", src.display())],
    );
    let out = stdout(&o);
    assert!(out.contains("done"), "{}", stderr(&o));
    assert!(out.contains("is protected here; create it outside the sandbox"), "{out}");
    assert!(
        stderr(&o).contains("is empty and no git repository, and cannot become one inside the sandbox"),
        "{}",
        stderr(&o)
    );
    assert!(!s.path("ws/.git").exists() && !s.path("ws/HEAD").exists() && !s.path("ws/README").exists());
    // The same workspace after `git init` outside works inside.
    s.host_git_ok(&s.ws(), &["init", "-q"]);
    let o = s.sh("git status --porcelain && echo OK");
    assert!(stdout(&o).contains("OK"), "{}", stderr(&o));
}

#[test]
fn parallel_runs_on_one_workspace_all_start_and_keep_every_protection() {
    let s = Sandbox::new("p7-parallel");
    s.git_identity();
    repo(&s, &s.ws());
    // A long run keeps trying to create protected paths while others start and end.
    let long = s
        .command(
            &s.ws(),
            &[
                "run",
                "--",
                "/bin/sh",
                "-c",
                "i=0; while [ $i -lt 60 ]; do mkdir -p .vscode 2>/dev/null && echo x > .vscode/tasks.json 2>/dev/null \
                 && echo CREATED; echo y > .mcp.json 2>/dev/null && echo CREATED; sleep 0.05; i=$((i+1)); done",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let (ws, home) = (s.ws(), s.home());
            std::thread::spawn(move || {
                let mut failed = Vec::new();
                for _ in 0..60 {
                    let o = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
                        .args(["run", "--", "/bin/true"])
                        .current_dir(&ws)
                        .env_clear()
                        .env("PATH", "/usr/bin:/bin")
                        .env("HOME", &home)
                        .env("XDG_CONFIG_HOME", home.join(".config"))
                        .output()
                        .unwrap();
                    if !o.status.success() {
                        failed.push(String::from_utf8_lossy(&o.stderr).into_owned());
                    }
                }
                failed
            })
        })
        .collect();
    let failed: Vec<String> = loops.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let out = long.wait_with_output().unwrap();
    assert!(failed.is_empty(), "{} of 120 runs failed: {:?}", failed.len(), &failed[..failed.len().min(3)]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("CREATED"), "a protected path was created");
    assert!(!s.path("ws/.vscode").exists() && !s.path("ws/.mcp.json").exists());
    assert_eq!(s.host_git_ok(&s.ws(), &["status", "--porcelain", "--ignored"]), "");
    let registry = s.home().join(".local/state/palisade/placeholders");
    let left: Vec<_> = std::fs::read_dir(&registry).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(left, ["lock"], "run lists left in the registry");
}

#[test]
fn a_killed_supervisor_leaves_placeholders_that_git_ignores_check_reports_and_the_next_run_removes() {
    let s = Sandbox::new("p7-killed");
    s.git_identity();
    repo(&s, &s.ws());
    let mut child = s.command(&s.ws(), &["run", "--", "sleep", "30"]).spawn().unwrap();
    let ph = s.path("ws/.vscode");
    wait_for(&ph);
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(std::fs::symlink_metadata(&ph).is_ok(), "expected a leftover placeholder");
    assert_eq!(s.host_git_ok(&s.ws(), &["status", "--porcelain", "--ignored"]), "", "git sees a leftover");
    let o = s.palisade(&["check"]);
    assert!(stdout(&o).contains("placeholders") && stdout(&o).contains(".vscode"), "{}", stdout(&o));
    let o = s.sh("true");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(&ph).is_err(), "the next run did not remove the leftover");
}

#[test]
fn shell_start_up_files_under_a_writable_root_are_read_only() {
    let s = Sandbox::new("p8-rc");
    s.write("ws/.bashrc", "original\n");
    s.write("ws/.zshrc", "original\n");
    let o = s.sh("echo evil >> .bashrc; echo evil >> .zshrc; echo evil > .profile; echo evil > .zshenv; echo done");
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(s.path("ws/.bashrc")).unwrap(), "original\n");
    assert_eq!(std::fs::read_to_string(s.path("ws/.zshrc")).unwrap(), "original\n");
    assert!(!s.path("ws/.profile").exists() && !s.path("ws/.zshenv").exists());
}

#[test]
fn everyday_git_works_inside() {
    let s = Sandbox::new("p-git-work");
    s.git_identity();
    let remote = s.path("remote");
    repo(&s, &remote);
    let sub_src = s.path("sub-src");
    repo(&s, &sub_src);
    s.host_git_ok(&s.path(""), &["clone", "-q", remote.to_str().unwrap(), s.ws().to_str().unwrap()]);
    s.host_git_ok(&s.ws(), &["submodule", "add", "-q", sub_src.to_str().unwrap(), "libs/sub"]);
    s.host_git_ok(&s.ws(), &["commit", "-q", "-m", "submodule"]);
    // As after a clone with --recurse-submodules: git has written the module's core.worktree
    // (the first update writes configuration, which stays read-only inside).
    s.host_git_ok(&s.ws(), &["submodule", "update", "-q", "--init"]);
    s.host_git_ok(&s.ws(), &["worktree", "add", "-q", "wt"]);
    std::fs::write(remote.join("upstream.txt"), "up\n").unwrap();
    s.host_git_ok(&remote, &["add", "upstream.txt"]);
    s.host_git_ok(&remote, &["commit", "-q", "-m", "upstream"]);
    std::fs::write(sub_src.join("more.txt"), "more\n").unwrap();
    s.host_git_ok(&sub_src, &["add", "more.txt"]);
    s.host_git_ok(&sub_src, &["commit", "-q", "-m", "more"]);
    let script = "set -e
        echo a > a.txt; git add a.txt; git commit -q -m a
        git branch feature; git checkout -q feature; echo b > b.txt; git add b.txt; git commit -q -m b
        git checkout -q main; echo c > c.txt; git add c.txt; git commit -q -m c
        git checkout -q feature; git rebase -q main
        echo dirty >> a.txt; git stash -q; git stash pop -q; git checkout -q a.txt
        git fetch -q origin; git merge -q --no-edit origin/main
        (cd libs/sub && git fetch -q origin && git checkout -q origin/HEAD) ; git submodule update -q
        git worktree add -q wt2 && (cd wt2 && echo w > w.txt && git add w.txt && git commit -q -m w)
        (cd wt && echo v > v.txt && git add v.txt && git commit -q -m v)
        git gc -q
        echo ALL-OK";
    let o = s.run(
        &["--allow-read", remote.to_str().unwrap(), "--allow-read", sub_src.to_str().unwrap()],
        &["/bin/sh", "-c", script],
    );
    assert!(stdout(&o).contains("ALL-OK"), "{}{}", stdout(&o), stderr(&o));
    let log = s.host_git_ok(&s.ws(), &["log", "--all", "--oneline"]);
    for m in ["a", "b", "c", "w", "v", "upstream"] {
        assert!(log.lines().any(|l| l.ends_with(&format!(" {m}"))), "{m} missing from {log}");
    }
    // Nothing left in the tree but what git made.
    let st = s.host_git_ok(&s.ws(), &["status", "--porcelain", "--ignored"]);
    assert!(!st.contains(".vscode") && !st.contains("HEAD"), "{st}");
}

#[test]
fn policy_explain_names_the_git_protection() {
    let s = Sandbox::new("p-explain");
    s.git_identity();
    repo(&s, &s.ws());
    let o = s.palisade(&["policy", "explain", ".git/config"]);
    let out = stdout(&o);
    assert!(out.contains("read-only") && out.contains("configuration of the repository"), "{out}");
    assert!(out.contains("filesystem.protect_git"), "{out}");
    let o = s.palisade(&["policy", "explain", "--path", ".vscode"]);
    assert!(stdout(&o).contains("${writable}/.vscode"), "{}", stdout(&o));
}

#[test]
fn a_repository_made_inside_runs_nothing_on_the_host_and_is_reported() {
    // No mount can stop a sandbox from making a repository; one recorded as a gitlink is
    // visited by the host's next `git status` in the work tree, which would run its config.
    // At the end of the run, what git would run from it is moved aside, and the run says so,
    // on stderr and in the audit log. Decoys (many directories and repositories) do not hide
    // it.
    let s = Sandbox::new("p-newrepo");
    s.git_identity();
    repo(&s, &s.ws());
    let log = s.path("audit.jsonl");
    let mark = s.path("PWNED");
    let script = format!(
        "for i in $(seq 600); do mkdir -p decoy$i/.git/objects decoy$i/.git/refs; echo 'ref: refs/heads/m' > decoy$i/.git/HEAD; done; \
         git init -q evil && git -C evil commit -q --allow-empty -m e && \
         printf '[core]\\n\\tfsmonitor = \"touch {m}; false\"\\n' >> evil/.git/config && \
         printf '#!/bin/sh\\ntouch {m}\\n' > evil/.git/hooks/pre-commit && chmod +x evil/.git/hooks/pre-commit && \
         git -c core.fsmonitor= add evil 2>/dev/null; echo done",
        m = mark.display()
    );
    let o = s.run(&["--audit", log.to_str().unwrap()], &["/bin/sh", "-c", &script]);
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    host_runs_nothing(&s, &s.ws(), &mark);
    let _ = s.host_git(&s.path("ws/evil"), &["commit", "-q", "--allow-empty", "-m", "host"]);
    assert!(!mark.exists(), "a hook of the repository made inside ran on the host");
    let err = stderr(&o);
    let evil = s.path("ws/evil/.git");
    assert!(
        err.contains(&format!("the git repository {} was made or changed inside the sandbox", evil.display())),
        "{err}"
    );
    assert!(err.contains(&format!("git status in {} descends into it", s.ws().display())), "{err}");
    assert!(evil.join("config.palisade-quarantine").exists() && evil.join("hooks.palisade-quarantine").exists());
    let raw = std::fs::read_to_string(&log).unwrap();
    assert!(
        raw.contains("\"kind\":\"new_repository\"")
            && raw.contains("\"gitlink_of\"")
            && raw.contains("\"quarantined\""),
        "{raw}"
    );
    // The repository still works, with git's defaults; moving the files back restores it.
    assert!(s.host_git(&s.path("ws/evil"), &["log", "-1", "--oneline"]).status.success());
    // (The decoys would make the next start refuse, naming the cause.)
    for i in 1..=600 {
        std::fs::remove_dir_all(s.path(&format!("ws/decoy{i}"))).unwrap();
    }
    // A worktree added inside is no such repository: nothing is moved, nothing is said.
    let o = s.sh("git worktree add -q wt 2>&1 && echo added");
    assert!(stdout(&o).contains("added"), "{}{}", stdout(&o), stderr(&o));
    assert!(!stderr(&o).contains("moved aside"), "{}", stderr(&o));
    assert!(s.host_git(&s.path("ws/wt"), &["status", "--porcelain"]).status.success());
    // A run that makes none says nothing.
    let o = s.sh("true");
    assert!(!stderr(&o).contains("inside the sandbox"), "{}", stderr(&o));
}

#[test]
fn files_hard_linked_from_a_cache_are_written_through_and_check_reports_them() {
    // The residual risk, shown from outside: uv and pnpm link installed files from a shared
    // cache by hard link, and a write through the workspace's name reaches the cache. The
    // kernel decides by path, so Palisade cannot stop it; `palisade check` finds such files.
    let s = Sandbox::new("p-hardlinks");
    s.write("cache/pkg/mod.py", "original\n");
    std::fs::create_dir_all(s.path("ws/.venv/pkg")).unwrap();
    std::fs::hard_link(s.path("cache/pkg/mod.py"), s.path("ws/.venv/pkg/mod.py")).unwrap();
    // Links inside the tree only (cargo's target/) are not reported.
    s.write("ws/target/a", "x");
    std::fs::hard_link(s.path("ws/target/a"), s.path("ws/target/b")).unwrap();
    let o = s.sh("echo injected >> .venv/pkg/mod.py; echo done");
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(s.path("cache/pkg/mod.py")).unwrap(), "original\ninjected\n");
    let o = s.palisade(&["check"]);
    let out = stdout(&o);
    assert!(out.contains(&format!("1 files in {} are hard links to files outside it", s.ws().display())), "{out}");
    assert!(out.contains("under .venv/") && out.contains("UV_LINK_MODE=copy"), "{out}");
    assert!(!out.contains("under target/"), "{out}");
    let o = s.palisade(&["check", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["hard_links"]["files"], 1, "{v}");
}

#[test]
fn hooks_linked_into_the_work_tree_and_programs_named_by_configuration_are_protected() {
    let s = Sandbox::new("p-indirect");
    s.git_identity();
    repo(&s, &s.ws());
    let mark = s.path("PWNED");
    let m = mark.display();
    let ws = s.ws();
    std::fs::create_dir_all(ws.join("scripts")).unwrap();
    std::fs::create_dir_all(ws.join("tools")).unwrap();
    std::fs::create_dir_all(ws.join(".husky/_")).unwrap();
    std::fs::write(ws.join("scripts/pre-commit"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(ws.join("scripts/pre-commit"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    std::os::unix::fs::symlink("../../scripts/pre-commit", ws.join(".git/hooks/pre-commit")).unwrap();
    std::fs::write(ws.join("tools/clean.sh"), "#!/bin/sh\ncat\n").unwrap();
    std::fs::set_permissions(ws.join("tools/clean.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(ws.join(".gitattributes"), "*.txt filter=strip\n").unwrap();
    s.host_git_ok(&ws, &["config", "filter.strip.clean", "./tools/clean.sh"]);
    // The user's own configuration: a hooks directory relative to every work tree.
    s.write(
        "home/.gitconfig",
        &format!("{}[core]\n\thooksPath = .husky/_\n", std::fs::read_to_string(s.home().join(".gitconfig")).unwrap()),
    );
    let o = s.sh(&format!(
        "printf '#!/bin/sh\\ntouch {m}\\n' > scripts/pre-commit; printf '#!/bin/sh\\ntouch {m}\\ncat\\n' > tools/clean.sh; \
         printf '#!/bin/sh\\ntouch {m}\\n' > .husky/_/pre-commit; chmod +x .husky/_/pre-commit; \
         printf '#!/bin/sh\\ntouch {m}\\n' > .husky/pre-commit; echo x > a.txt; echo done"
    ));
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    host_runs_nothing(&s, &ws, &mark);
}

#[test]
fn while_a_run_lasts_git_and_shells_on_the_host_keep_working() {
    // A placeholder git cannot read would stop it: files git reads as configuration (a
    // missing include, config.worktree) are held by a file git reads as empty.
    let s = Sandbox::new("p-hostdur");
    s.git_identity();
    let home = s.home();
    s.write(
        "home/.gitconfig",
        &format!(
            "{}[include]\n\tpath = ~/.gitconfig.local\n",
            std::fs::read_to_string(home.join(".gitconfig")).unwrap()
        ),
    );
    let proj = s.path("home/proj");
    repo(&s, &proj);
    s.host_git_ok(&proj, &["config", "extensions.worktreeConfig", "true"]);
    let mut child = s
        .command(
            &proj,
            &[
                "run",
                "--workspace",
                proj.to_str().unwrap(),
                "--allow-write",
                home.to_str().unwrap(),
                "--",
                "sleep",
                "3",
            ],
        )
        .spawn()
        .unwrap();
    wait_for(&home.join(".gitconfig.local"));
    let during = s.host_git(&proj, &["status", "--porcelain"]);
    child.wait().unwrap();
    assert!(during.status.success(), "host git during the run: {}", stderr(&during));
    assert!(!stderr(&during).contains("unable"), "{}", stderr(&during));
    assert!(!home.join(".gitconfig.local").exists(), "left behind");
}

#[test]
fn a_placeholder_removed_on_the_host_stops_the_run() {
    // The kernel detaches a mount whose host name is unlinked, and the path becomes creatable
    // inside; the supervisor notices and stops the sandbox.
    let s = Sandbox::new("p-unlinked");
    s.git_identity();
    repo(&s, &s.ws());
    let ph = s.path("ws/.vscode");
    let remover = {
        let ph = ph.clone();
        std::thread::spawn(move || {
            wait_for(&ph);
            std::thread::sleep(std::time::Duration::from_millis(300));
            let _ = std::fs::remove_file(&ph);
        })
    };
    let o = s.sh("sleep 5; echo survived");
    remover.join().unwrap();
    assert_eq!(o.status.code(), Some(137), "{}{}", stdout(&o), stderr(&o));
    assert!(!stdout(&o).contains("survived"));
    assert!(stderr(&o).contains(".vscode was removed or replaced on the host"), "{}", stderr(&o));
}

#[test]
fn making_placeholders_never_hangs_and_skips_what_no_one_can_write() {
    let s = Sandbox::new("p-nohang");
    s.git_identity();
    repo(&s, &s.ws());
    // A repository whose .git a previous run closed (mode 555, hooks removed).
    let o = s.sh("git init -q d1 && rm -r d1/.git/hooks && chmod 555 d1/.git; echo planted");
    assert!(stdout(&o).contains("planted"), "{}", stderr(&o));
    let mut child = s.command(&s.ws(), &["run", "--", "true"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("palisade run hung while making placeholders");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    // As root the closed directory is no barrier (and no error); as a user it is the user's
    // own directory, so the run refuses, naming it.
    assert!(status.success() || (status.code() == Some(125) && err.contains("d1/.git")), "{status:?} {err}");
    let _ = std::fs::set_permissions(s.path("ws/d1/.git"), std::os::unix::fs::PermissionsExt::from_mode(0o755));
    // A directory of another user, closed to this one: nothing can be made there, by the
    // sandbox either, so no placeholder is needed and the run goes ahead.
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("skipped: a directory closed to this user needs an unprivileged user");
        return;
    }
    let o = s.run(
        &["--allow-write", "/usr/share"],
        &["/bin/sh", "-c", "mkdir /usr/share/.vscode 2>/dev/null || echo refused"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("refused"));
}

#[test]
fn a_concurrent_sandbox_cannot_make_palisade_link_its_file_into_another_workspace() {
    // Placeholders after the first are links to it, made from a descriptor of that very
    // socket: swapping the first one's name for a file of one's own changes nothing.
    let s = Sandbox::new("p-linkrace");
    s.git_identity();
    let shared = s.path("shared");
    std::fs::create_dir_all(&shared).unwrap();
    repo(&s, &s.ws());
    let evil = s.path("evil-gitfile");
    std::fs::write(&evil, "gitdir: /nonexistent-evil\n").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racer = {
        let (stop, target, evil) = (stop.clone(), shared.join(".aider.conf.yml"), evil.clone());
        std::thread::spawn(move || {
            let tmp = target.with_extension("swap");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if std::fs::symlink_metadata(&target)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    let _ = std::fs::copy(&evil, &tmp);
                    let _ = std::fs::rename(&tmp, &target);
                }
                std::hint::spin_loop();
            }
            let _ = std::fs::remove_file(&target);
        })
    };
    for _ in 0..15 {
        let _ = s.run(&["--allow-write", shared.to_str().unwrap()], &["true"]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    racer.join().unwrap();
    for e in std::fs::read_dir(s.ws()).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            assert_ne!(
                std::fs::read_to_string(&p).unwrap_or_default(),
                "gitdir: /nonexistent-evil\n",
                "{} was linked to the racer's file",
                p.display()
            );
        }
    }
    assert_eq!(s.host_git_ok(&s.ws(), &["status", "--porcelain"]), "");
}

#[test]
fn protections_reach_the_work_trees_of_nested_repositories_where_the_files_exist() {
    let s = Sandbox::new("p-nested-names");
    s.git_identity();
    repo(&s, &s.ws());
    let sub = s.path("ws/app");
    repo(&s, &sub);
    s.write("ws/app/.vscode/tasks.json", "{}");
    s.write("ws/app/.envrc", "export A=1\n");
    let o = s.sh("echo evil > app/.vscode/tasks.json; echo evil >> app/.envrc; echo done");
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(sub.join(".vscode/tasks.json")).unwrap(), "{}");
    assert_eq!(std::fs::read_to_string(sub.join(".envrc")).unwrap(), "export A=1\n");
}

#[test]
fn check_names_the_nested_repositories_run_does_not_look_for() {
    // An untracked checkout two levels down is beyond the scan of a work tree: its hooks are
    // writable inside (shown from outside), and `palisade check` names it.
    let s = Sandbox::new("p-deep-nested");
    s.git_identity();
    repo(&s, &s.ws());
    repo(&s, &s.path("ws/near"));
    let deep = s.path("ws/third_party/lib");
    repo(&s, &deep);
    let o = s.sh("echo '#!/bin/sh' > third_party/lib/.git/hooks/pre-commit && echo WRITTEN; \
         echo x > near/.git/hooks/pre-commit || echo NEAR-REFUSED");
    assert!(stdout(&o).contains("WRITTEN") && stdout(&o).contains("NEAR-REFUSED"), "{}{}", stdout(&o), stderr(&o));
    // A directory git would take for a bare repository, as deep.
    for d in ["ws/src/deep/objects", "ws/src/deep/refs"] {
        std::fs::create_dir_all(s.path(d)).unwrap();
    }
    s.write("ws/src/deep/HEAD", "ref: refs/heads/main\n");
    let o = s.palisade(&["check"]);
    let out = stdout(&o);
    assert!(out.contains("2 nested repositories lie deeper than `run` looks"), "{out}");
    assert!(out.contains(s.path("ws/src/deep").to_str().unwrap()), "{out}");
    assert!(
        out.contains(deep.to_str().unwrap()) && !out.contains(&format!("{}\n", s.path("ws/near").display())),
        "{out}"
    );
    let o = s.palisade(&["check", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["unprotected_repositories"].as_array().map(Vec::len), Some(2), "{v}");
}

#[test]
fn too_many_repositories_are_refused_rather_than_left_unprotected() {
    let s = Sandbox::new("p-too-many");
    for i in 0..=512 {
        let g = s.path(&format!("ws/r{i}/.git"));
        std::fs::create_dir_all(g.join("objects")).unwrap();
        std::fs::create_dir_all(g.join("refs")).unwrap();
        std::fs::write(g.join("HEAD"), "ref: refs/heads/main\n").unwrap();
    }
    let o = s.sh("echo ran");
    assert_eq!(o.status.code(), Some(125), "{}{}", stdout(&o), stderr(&o));
    assert!(!stdout(&o).contains("ran"));
    assert!(stderr(&o).contains("more than 512 git repositories lie under the writable directories"), "{}", stderr(&o));
    std::fs::remove_dir_all(s.path("ws/r512")).unwrap();
    let o = s.sh("echo x > r7/.git/hooks/pre-commit || echo REFUSED");
    assert!(stdout(&o).contains("REFUSED"), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn a_work_tree_root_cannot_become_a_bare_repository_and_head_stays_unambiguous() {
    // With .git made invalid (objects moved away), git on the host takes the work tree's
    // top for a bare repository if HEAD, objects/ and refs/ are there, or a commondir
    // naming a directory that has them; its configuration's pager then runs.
    let s = Sandbox::new("p-bare-root");
    s.git_identity();
    repo(&s, &s.ws());
    let mark = s.path("PWNED");
    let cfg = format!("[core]\\n\\tbare = true\\n\\tpager = \"touch {}; cat\"\\n", mark.display());
    let o = s.sh(&format!(
        "git diff HEAD --stat && git log -1 --oneline HEAD >/dev/null && echo HEAD-OK; \
         mkdir -p evil; cp -r .git/objects .git/refs evil/; cp -r .git/objects objects; \
         mkdir refs 2>/dev/null && cp -r .git/refs/. refs/ || echo REFS-REFUSED; \
         echo evil > commondir 2>/dev/null || echo COMMONDIR-REFUSED; \
         cp .git/HEAD HEAD; printf '{cfg}' > config; cp config evil/config; mv .git/objects .git/o2; echo done"
    ));
    let out = stdout(&o);
    assert!(out.contains("HEAD-OK") && out.contains("done"), "{out}{}", stderr(&o));
    host_git_with_a_terminal(&s, &s.ws());
    assert!(!mark.exists(), "git on the host took the workspace for a bare repository");
    assert!(out.contains("REFS-REFUSED") && out.contains("COMMONDIR-REFUSED"), "{out}");
    // While a run lasts, HEAD on the host is as unambiguous as inside.
    let t = s.path("t");
    repo(&s, &t);
    let mut child = s.command(&t, &["run", "--", "sleep", "3"]).spawn().unwrap();
    wait_for(&t.join("refs"));
    let during = s.host_git(&t, &["diff", "HEAD", "--stat"]);
    child.wait().unwrap();
    assert!(during.status.success(), "host git diff HEAD during a run: {}", stderr(&during));
}

#[test]
fn a_linked_worktree_as_the_workspace_says_which_grant_git_needs() {
    let s = Sandbox::new("p-wt-note");
    s.git_identity();
    let main = s.path("main");
    repo(&s, &main);
    s.host_git_ok(&main, &["worktree", "add", "-q", s.path("wt").to_str().unwrap()]);
    let main_git = main.join(".git");
    let wt = s.path("wt");
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--workspace", wt.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "git", "commit", "-q", "--allow-empty", "-m", "wt"]);
        s.palisade_in(&wt, &args)
    };
    let o = run(&[]);
    assert!(
        stderr(&o).contains(&format!("pass --allow-write {} to work with it", main_git.display())),
        "{}",
        stderr(&o)
    );
    let o = run(&["--allow-read", main_git.to_str().unwrap()]);
    assert!(
        stderr(&o).contains(&format!("can read the repository of {} but not commit", s.path("wt").display())),
        "{}",
        stderr(&o)
    );
    let o = run(&["--allow-write", main_git.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

/// A host `git log` in `dir` with a terminal (so that a configured pager starts), then
/// `git status`.
fn host_git_with_a_terminal(s: &Sandbox, dir: &Path) {
    let _ = std::process::Command::new("script")
        .args(["-qc", "git log -1", "/dev/null"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", s.home())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("script (util-linux)");
    let _ = s.host_git(dir, &["status"]);
}

#[test]
fn git_directories_hidden_in_odd_git_files_or_assembled_over_runs_run_nothing_on_the_host() {
    let s = Sandbox::new("p-assembled");
    s.git_identity();
    repo(&s, &s.ws());
    let mark = s.path("PWNED");
    // Shared shell functions, read from outside the workspace.
    s.write(
        "lib.sh",
        &format!(
            "evilcfg() {{ printf '[core]\\n\\tfsmonitor = \"touch {m}; false\"\\n\\tpager = \"touch {m}; cat\"\\n' >> \"$1\"; }}\n\
             mk() {{ git init -q \"$1\" && git -C \"$1\" -c core.fsmonitor= commit -q --allow-empty -m x && evilcfg \"$1/.git/config\"; }}\n",
            m = mark.display()
        ),
    );
    let lib = s.path("lib.sh");
    let run = |script: &str| {
        let o = s.run(
            &["--allow-read", lib.to_str().unwrap()],
            &["/bin/bash", "-c", &format!(". {}; {script}", lib.display())],
        );
        assert!(stdout(&o).contains("done"), "{script}: {}{}", stdout(&o), stderr(&o));
        o
    };
    // A `.git` file whose path holds a newline, or a NUL after it (git reads up to the NUL),
    // and one whose `..` follows a link; each recorded as a gitlink.
    run("mk b1.tmp && mkdir b1 && mv b1.tmp/.git \"b1/real\nx\" && printf 'gitdir: real\\nx\\n' > b1/.git && \
         mk b2.tmp && mkdir b2 && mv b2.tmp/.git b2/realx && printf 'gitdir: realx\\0junk\\n' > b2/.git && \
         mk c1.tmp && mkdir -p c1 deep/a/b && mv c1.tmp/.git deep/a/g && ln -s ../deep/a/b c1/lnk && \
         printf 'gitdir: lnk/../g\\n' > c1/.git && rm -rf b1.tmp b2.tmp c1.tmp && \
         git -c core.fsmonitor= add b1 b2 c1 2>/dev/null; echo done");
    // A git directory prepared in one run, out of sight (two levels down, untracked), and
    // put in place in the next, where git itself writes nothing in it.
    run("mkdir -p .cache && mk tmpd && printf '#!/bin/sh\\ntouch MARK\\n' > tmpd/.git/hooks/pre-commit && \
         mv tmpd/.git .cache/blob && rm -rf tmpd; echo done");
    // (Later than the start's margin for a coarse clock: then a change time alone says it
    // is old.)
    std::thread::sleep(std::time::Duration::from_millis(300));
    run("mkdir sub && mv .cache/blob sub/.git && git -c core.fsmonitor= add sub 2>/dev/null; echo done");
    // The workspace made a bare repository over two runs: a HEAD first (free by design),
    // then refs/, objects/ and a config, with .git made invalid.
    run("cp .git/HEAD HEAD; echo done");
    let o = run(
        "cp -r .git/objects objects; mkdir refs 2>/dev/null && echo REFS-MADE && cp -r .git/refs/. refs/; evilcfg config; \
                 mv .git/objects .git/objects.x; echo done",
    );
    host_git_with_a_terminal(&s, &s.ws());
    assert!(!mark.exists(), "the workspace became a bare repository");
    assert!(!stdout(&o).contains("REFS-MADE"), "{}", stdout(&o));
    std::fs::rename(s.path("ws/.git/objects.x"), s.path("ws/.git/objects")).unwrap();
    for d in ["ws", "ws/b1", "ws/b2", "ws/c1", "ws/sub"] {
        host_git_with_a_terminal(&s, &s.path(d));
        host_runs_nothing(&s, &s.path(d), &mark);
    }
}

#[test]
fn the_quarantine_never_renames_a_placeholder() {
    // At a writable root that is no repository, HEAD and objects/ made inside, with the
    // root's refs held by a placeholder: no repository, nothing moved, nothing left.
    let s = Sandbox::new("p-noph-move");
    let d = s.path("d");
    std::fs::create_dir_all(&d).unwrap();
    let o = s.run(
        &["--allow-write", d.to_str().unwrap()],
        &[
            "/bin/sh",
            "-c",
            &format!(
                "cd {} && echo 'ref: refs/heads/main' > HEAD && mkdir objects && echo '[core]' > config; echo done",
                d.display()
            ),
        ],
    );
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("moved aside"), "{}", stderr(&o));
    let left: Vec<_> =
        std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!left.iter().any(|n| n.contains("palisade-quarantine")), "{left:?}");
    let mut left = left;
    left.sort();
    assert_eq!(left, ["HEAD", "config", "objects"]);
}

/// A repository made inside a directory that the sandbox then makes unreadable cannot be
/// looked for after the run (as an unprivileged user): the run says so, naming the
/// directory. As root the directory is read anyway, and the repository is reported and its
/// configuration and hooks moved aside.
#[test]
fn a_repository_hidden_in_an_unreadable_directory_is_not_passed_over_in_silence() {
    let s = Sandbox::new("p-unlisted");
    s.git_identity();
    let o = s.run(&[], &["/bin/sh", "-c", "mkdir -p a && git init -q a/evil && chmod 000 a && echo done"]);
    let err = stderr(&o);
    assert!(stdout(&o).contains("done"), "{err}");
    std::fs::set_permissions(s.path("ws/a"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    if uid() == 0 {
        assert!(err.contains("was made or changed inside the sandbox"), "{err}");
    } else {
        assert!(err.contains(&format!("{} was made unreadable during the run", s.path("ws/a").display())), "{err}");
    }
}

/// A repository in a directory the sandbox made unsearchable in an earlier run (mode 600:
/// listed, but its `.git` hidden from the next run's search) stays protected: the directory
/// is kept read-only as a whole, so the sandbox can neither open it up again nor write its
/// configuration. (As root the search sees through the mode anyway.)
#[test]
fn a_repository_in_a_directory_made_unsearchable_stays_protected() {
    let s = Sandbox::new("p-unsearchable");
    s.git_identity();
    let proj = s.path("ws/proj");
    repo(&s, &proj);
    let config = std::fs::read_to_string(proj.join(".git/config")).unwrap();
    let o = s.run(&[], &["/bin/sh", "-c", "chmod 600 proj && echo done"]);
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    let attack =
        "chmod 755 proj; printf '[core]\\n\\tfsmonitor = true\\n' >> proj/.git/config; chmod 600 proj; echo done";
    let o = s.run(&[], &["/bin/sh", "-c", attack]);
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    std::fs::set_permissions(&proj, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert_eq!(std::fs::read_to_string(proj.join(".git/config")).unwrap(), config, "{}", stderr(&o));
}
