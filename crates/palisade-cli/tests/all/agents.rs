//! The real agent CLIs from npm, run the way a user runs them: each under its profile, in a
//! fresh home and workspace, in a tmux pane, without a route to its model. Their first-run
//! flow must complete with no write error, their state must survive into a second run, and
//! the host's copy of their configuration must stay as it was. Skipped, with the reason
//! printed, where npm, tmux or the registry is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

/// Versions measured for docs/profiles.md.
const GEMINI: &str = "@google/gemini-cli@0.61.0";
const CODEX: &str = "@openai/codex@0.171.0";
const CLAUDE: &str = "@anthropic-ai/claude-code@2.1.197";

/// Installs `packages` globally into `~/.npm-global` (a prefix users set with `npm config
/// set prefix`), which the sandbox does not show unless the profile's `programs` finds it on
/// `PATH` (the npm cache is shared between runs of this user), or says why not.
fn install(s: &Sandbox, packages: &[&str]) -> Option<PathBuf> {
    for tool in ["npm", "tmux", "node"] {
        if Command::new(tool).arg("-V").output().is_err() && Command::new(tool).arg("--version").output().is_err() {
            eprintln!("skipped: {tool} is not installed");
            return None;
        }
    }
    let prefix = s.home().join(".npm-global");
    // One npm cache per user (the unprivileged pass cannot write root's), kept between runs.
    let cache = format!("/var/tmp/palisade-npm-cache-{}", uid());
    let o = Command::new("timeout")
        .args(["300", "npm", "install", "-g", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .args(packages)
        .env("npm_config_cache", &cache)
        .env("npm_config_update_notifier", "false")
        .output()
        .unwrap();
    if !o.status.success() {
        eprintln!(
            "skipped: npm install {} failed (is the registry reachable?): {}",
            packages.join(" "),
            String::from_utf8_lossy(&o.stderr).lines().rev().take(3).collect::<Vec<_>>().join(" | ")
        );
        return None;
    }
    Some(prefix)
}

/// A tmux session running `palisade run ARGS` with the sandbox's environment.
struct Pane {
    name: String,
    socket: PathBuf,
    /// The pane's first process: `palisade run` (the shell `exec`s it).
    pid: Option<u32>,
}

impl Pane {
    fn start(s: &Sandbox, prefix: &Path, env: &[(&str, &str)], args: &[&str]) -> Pane {
        // A server of its own for each pane (the last one's may still be going away).
        static PANES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = PANES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("p{n}");
        let socket = s.root.join(format!("tmux-{n}.sock"));
        let mut cmd = format!(
            "cd {} && exec env -i PATH={}/bin:/usr/local/bin:/usr/bin:/bin HOME={} XDG_CONFIG_HOME={}/.config TERM=xterm-256color",
            s.ws().display(),
            prefix.display(),
            s.home().display(),
            s.home().display()
        );
        for (k, v) in env {
            cmd.push_str(&format!(" {k}={v}"));
        }
        cmd.push_str(&format!(" {}", env!("CARGO_BIN_EXE_palisade")));
        for a in args {
            cmd.push_str(&format!(" '{a}'"));
        }
        // The pane stays after the command ends, so its last screen can be read.
        let status = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["new-session", "-d", "-x", "160", "-y", "50", "-s", &name])
            .arg(format!("{cmd}; echo PANE-EXIT=$?; sleep 600"))
            .status()
            .unwrap();
        assert!(status.success());
        let o = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["display-message", "-p", "-t", &name, "#{pane_pid}"])
            .output()
            .unwrap();
        let pid = String::from_utf8_lossy(&o.stdout).trim().parse().ok();
        Pane { name, socket, pid }
    }

    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["capture-pane", "-p", "-S", "-200", "-t", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Waits (at most 60 s) for `text` on the screen; the screen either way.
    fn wait_for(&self, text: &str) -> (bool, String) {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.contains(text) || Instant::now() > until {
                return (screen.contains(text), screen);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Sends keys, once the screen has settled (a TUI drawn is not yet reading its input).
    fn keys(&self, keys: &[&str]) {
        std::thread::sleep(Duration::from_millis(1500));
        for k in keys {
            Command::new("tmux").arg("-S").arg(&self.socket).args(["send-keys", "-t", &self.name, k]).status().unwrap();
            std::thread::sleep(Duration::from_millis(400));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-S").arg(&self.socket).arg("kill-server").status();
        // The sandbox ends (and stops writing in the test's home) before the test's
        // directories are removed: wait for `palisade run` to exit (10 s at most).
        if let Some(pid) = self.pid {
            let until = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Whether a file `name` holding `text` was kept in one of the workspace's private layers
/// (`filesystem.cache`), where the profiles keep the agent's state.
fn kept_in_layer(s: &Sandbox, name: &str, text: &str) -> bool {
    let copies = s.home().join(".local/state/palisade/copies");
    std::fs::read_dir(&copies).into_iter().flatten().flatten().any(|ws| {
        std::fs::read_dir(ws.path().join("caches"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|layer| std::fs::read_to_string(layer.path().join("upper").join(name)).is_ok_and(|t| t.contains(text)))
    })
}

/// No write error of any kind on a screen.
fn no_write_error(screen: &str) {
    for bad in ["Read-only file system", "Failed to save", "EROFS", "Permission denied", "failed to persist"] {
        assert!(!screen.contains(bad), "`{bad}` on the screen:\n{screen}");
    }
}

#[test]
fn gemini_gets_through_its_first_run_and_keeps_its_choices() {
    let s = Sandbox::new("agent-gemini");
    let Some(prefix) = install(&s, &[GEMINI]) else { return };
    let args = ["run", "--profile", "gemini", "--", "gemini"];
    {
        // No trust prompt: the profile trusts the workspace (Gemini CLI cannot save trust in
        // the protected trustedFolders.json, and exits 52 when it tries).
        let pane = Pane::start(&s, &prefix, &[], &args);
        let (ok, screen) = pane.wait_for("How would you like to authenticate");
        assert!(ok, "no sign-in screen:\n{screen}");
        // "Use Gemini API Key": the choice is saved in the sandbox's own copy of settings.json.
        pane.keys(&["Down", "Enter"]);
        let (ok, screen) = pane.wait_for("Enter Gemini API Key");
        assert!(ok, "{screen}");
        no_write_error(&screen);
    }
    // Nothing written on the host; the choice lives in the workspace's layer.
    assert!(!s.home().join(".gemini/settings.json").exists());
    assert!(kept_in_layer(&s, "settings.json", "selectedType"), "the auth choice was not kept");
    // Second run, with a key: straight to the prompt (the choice persisted).
    let pane = Pane::start(&s, &prefix, &[("GEMINI_API_KEY", "test-key")], &args);
    let (ok, screen) = pane.wait_for("Type your message");
    assert!(ok, "the second run did not reach the prompt:\n{screen}");
    no_write_error(&screen);
}

#[test]
fn codex_reaches_its_sign_in_and_keeps_its_login() {
    let s = Sandbox::new("agent-codex");
    let Some(prefix) = install(&s, &[CODEX]) else { return };
    let args = ["run", "--profile", "codex", "--", "codex"];
    {
        let pane = Pane::start(&s, &prefix, &[("OPENAI_API_KEY", "sk-test")], &args);
        let (ok, screen) = pane.wait_for("Sign in another way");
        assert!(ok, "no sign-in screen:\n{screen}");
        // "Sign in another way" > "Use an OpenAI API key" > save the key from the environment.
        pane.keys(&["Down", "Down", "Enter"]);
        let (ok, screen) = pane.wait_for("Use an OpenAI API key");
        assert!(ok, "{screen}");
        pane.keys(&["Enter"]);
        let (ok, screen) = pane.wait_for("Press enter to save");
        assert!(ok, "{screen}");
        pane.keys(&["Enter"]);
        let (ok, screen) = pane.wait_for("Ask Codex to do anything");
        assert!(ok, "no prompt after signing in:\n{screen}");
        no_write_error(&screen);
    }
    // Kept in the workspace's layer, never on the host.
    assert!(!s.home().join(".codex/auth.json").exists(), "the login was written on the host");
    assert!(kept_in_layer(&s, "auth.json", "OPENAI_API_KEY"), "the login was not kept");
    // Second run: no sign-in screen, straight to the prompt.
    let pane = Pane::start(&s, &prefix, &[("OPENAI_API_KEY", "sk-test")], &args);
    let (ok, screen) = pane.wait_for("Ask Codex to do anything");
    assert!(ok && !screen.contains("Sign in with ChatGPT"), "the login did not persist:\n{screen}");
}

#[test]
fn claude_gets_through_its_onboarding_and_trust_and_keeps_them() {
    let s = Sandbox::new("agent-claude");
    let Some(prefix) = install(&s, &[CLAUDE]) else { return };
    // No route to Anthropic: Vertex AI (a dummy project) takes the onboarding's connectivity
    // check out of the way; nothing else changes (see docs/profiles.md).
    let env =
        [("CLAUDE_CODE_USE_VERTEX", "1"), ("CLOUD_ML_REGION", "us-east5"), ("ANTHROPIC_VERTEX_PROJECT_ID", "test")];
    let env_args: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut full = vec!["run", "--profile", "claude"];
    for e in &env_args {
        full.extend(["--env", e]);
    }
    full.extend(["--", "claude"]);
    {
        let pane = Pane::start(&s, &prefix, &[], &full);
        let (ok, screen) = pane.wait_for("Choose the text style");
        assert!(ok, "no onboarding:\n{screen}");
        pane.keys(&["Enter"]);
        let (ok, screen) = pane.wait_for("Security notes");
        assert!(ok, "{screen}");
        pane.keys(&["Enter"]);
        let (ok, screen) = pane.wait_for("Yes, I trust this folder");
        assert!(ok, "no trust prompt:\n{screen}");
        pane.keys(&["Enter"]);
        let (ok, screen) = pane.wait_for("for shortcuts");
        assert!(ok, "no prompt after the onboarding:\n{screen}");
        no_write_error(&screen);
        // Leave it (its tmux server goes with it).
        pane.keys(&["/exit", "Enter"]);
        std::thread::sleep(Duration::from_secs(2));
    }
    // Kept in the workspace's private layer over ~/.claude: nothing written on the host.
    assert!(!s.home().join(".claude.json").exists() && !s.home().join(".claude/.claude.json").exists());
    assert!(kept_in_layer(&s, ".claude.json", "hasCompletedOnboarding"), "the onboarding was not kept");
    // Second run: straight to the prompt.
    let pane = Pane::start(&s, &prefix, &[], &full);
    let (ok, screen) = pane.wait_for("for shortcuts");
    assert!(ok && !screen.contains("Choose the text style") && !screen.contains("trust this folder"), "{screen}");
    no_write_error(&screen);
}

/// An agent installed the usual ways (npm's global prefix in the home, a native installer's
/// link in `~/.local/bin`) is found as the shell finds it, and only its install location
/// becomes readable: no registry needed.
#[test]
fn an_agent_installed_under_the_home_is_found_on_path_and_nothing_else_there_is_shown() {
    let s = Sandbox::new("programs");
    let pkg = ".npm-global/lib/node_modules/fake-agent";
    s.write(&format!("home/{pkg}/package.json"), "{\"name\":\"fake-agent\"}\n");
    s.write(&format!("home/{pkg}/lib/data.txt"), "agent data\n");
    s.write(&format!("home/{pkg}/bin/cli.sh"), "#!/bin/sh\n# As node does for its main module: the link resolved.\nhere=$(dirname \"$(readlink -f \"$0\")\")\necho \"agent ran: $(cat \"$here/../lib/data.txt\")\"\n");
    s.write("home/.npm-global/etc/npmrc", "//registry/:_authToken=npm-secret\n");
    let cli = s.home().join(pkg).join("bin/cli.sh");
    std::fs::set_permissions(&cli, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(s.home().join(".npm-global/bin")).unwrap();
    std::os::unix::fs::symlink(
        "../lib/node_modules/fake-agent/bin/cli.sh",
        s.home().join(".npm-global/bin/fake-agent"),
    )
    .unwrap();
    // The same name further on PATH: the shell would not pick it, nor may the sandbox.
    s.write("decoy/fake-agent", "#!/bin/sh\necho decoy\n");
    std::fs::set_permissions(s.root.join("decoy/fake-agent"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    s.write("home/.config/palisade/profiles/fake.toml", "[filesystem]\nprograms = [\"fake-agent\"]\n");
    let path = format!("{}/.npm-global/bin:/usr/bin:/bin:{}/decoy", s.home().display(), s.root.display());
    let run = |profile: Option<&str>, cmd: &[&str]| {
        let mut args = vec!["run", "--allow-read"];
        let decoy = s.root.join("decoy").display().to_string();
        args.push(&decoy);
        if let Some(p) = profile {
            args.extend(["--profile", p]);
        }
        args.push("--");
        args.extend_from_slice(cmd);
        let mut c = s.command(&s.ws(), &args);
        c.env("PATH", &path);
        c.output().unwrap()
    };
    // Without the profile: the install location is not shown; the decoy answers, and the
    // run warns that the shell would have picked another file.
    let o = run(None, &["fake-agent"]);
    assert_eq!(stdout(&o), "decoy\n", "{}", stderr(&o));
    assert!(stderr(&o).contains(".npm-global/bin/fake-agent"), "{}", stderr(&o));
    // With it: the shell's pick, its package readable, the rest of the prefix not.
    let o = run(Some("fake"), &["fake-agent"]);
    assert_eq!(stdout(&o), "agent ran: agent data\n", "{}", stderr(&o));
    let npmrc = s.home().join(".npm-global/etc/npmrc").display().to_string();
    let o = run(Some("fake"), &["cat", &npmrc]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!stdout(&o).contains("npm-secret"));
    // Nothing is writable there.
    let data = s.home().join(pkg).join("lib/data.txt").display().to_string();
    let o = run(Some("fake"), &["sh", "-c", &format!("echo x > {data}")]);
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(s.home().join(pkg).join("lib/data.txt")).unwrap(), "agent data\n");
    // policy explain names why.
    let mut c = s.command(&s.ws(), &["policy", "explain", "--profile", "fake", &data]);
    c.env("PATH", &path);
    let o = c.output().unwrap();
    assert!(stdout(&o).contains("filesystem.programs") && stdout(&o).contains("leads to"), "{}", stdout(&o));
    // A command the sandbox could have planted (the workspace's .venv/bin first on PATH, a
    // link to a secret): nothing is granted, and the run says why.
    s.write("home/Documents/secret.txt", "programs-secret\n");
    std::fs::create_dir_all(s.ws().join(".venv/bin")).unwrap();
    std::os::unix::fs::symlink(s.home().join("Documents/secret.txt"), s.ws().join(".venv/bin/fake-agent")).unwrap();
    let secret = s.home().join("Documents/secret.txt").display().to_string();
    let mut c = s.command(&s.ws(), &["run", "--profile", "fake", "--", "cat", &secret]);
    c.env("PATH", format!("{}/.venv/bin:{path}", s.ws().display()));
    let o = c.output().unwrap();
    assert!(!stdout(&o).contains("programs-secret"), "{}", stdout(&o));
    assert!(stderr(&o).contains("where the sandbox can write"), "{}", stderr(&o));
    // A chain through the workspace (`npm link` of a package there): a link the sandbox
    // swapped in the middle grants nothing either.
    std::fs::create_dir_all(s.ws().join("cc")).unwrap();
    s.write("ws/cc/package.json", "{}\n");
    std::os::unix::fs::symlink(s.home().join("Documents/secret.txt"), s.ws().join("cc/cli.js")).unwrap();
    std::os::unix::fs::symlink(s.ws().join("cc"), s.home().join(".npm-global/lib/node_modules/cc")).unwrap();
    std::os::unix::fs::symlink("../lib/node_modules/cc/cli.js", s.home().join(".npm-global/bin/linked-agent")).unwrap();
    s.write("home/.config/palisade/profiles/linked.toml", "[filesystem]\nprograms = [\"linked-agent\"]\n");
    let mut c = s.command(&s.ws(), &["run", "--profile", "linked", "--", "cat", &secret]);
    c.env("PATH", &path);
    let o = c.output().unwrap();
    assert!(!stdout(&o).contains("programs-secret"), "{}", stdout(&o));
    assert!(stderr(&o).contains("where the sandbox can write"), "{}", stderr(&o));
    // Not on PATH: said, and nothing granted.
    let o = s.palisade(&["run", "--profile", "fake", "--", "true"]);
    assert!(stderr(&o).contains("`fake-agent`") && stderr(&o).contains("not on your PATH"), "{}", stderr(&o));
}
