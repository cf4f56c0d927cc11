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

/// Installs `packages` into a prefix under `s` (the npm cache shared between runs of this
/// user), or says why not.
fn install(s: &Sandbox, packages: &[&str]) -> Option<PathBuf> {
    for tool in ["npm", "tmux", "node"] {
        if Command::new(tool).arg("-V").output().is_err() && Command::new(tool).arg("--version").output().is_err() {
            eprintln!("skipped: {tool} is not installed");
            return None;
        }
    }
    let prefix = s.root.join("agents");
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
        Pane { name, socket }
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
    }
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
    let read = prefix.display().to_string();
    let args = ["run", "--profile", "gemini", "--allow-read", &read, "--", "gemini"];
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
    // The host's settings.json is as Palisade made it; the choice lives in the copy.
    assert_eq!(std::fs::read_to_string(s.home().join(".gemini/settings.json")).unwrap(), "{}\n");
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
    let read = prefix.display().to_string();
    let args = ["run", "--profile", "codex", "--allow-read", &read, "--", "codex"];
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
    assert!(s.home().join(".codex/auth.json").is_file(), "the login was not kept on the host");
    // Second run: no sign-in screen, straight to the prompt.
    let pane = Pane::start(&s, &prefix, &[("OPENAI_API_KEY", "sk-test")], &args);
    let (ok, screen) = pane.wait_for("Ask Codex to do anything");
    assert!(ok && !screen.contains("Sign in with ChatGPT"), "the login did not persist:\n{screen}");
}
