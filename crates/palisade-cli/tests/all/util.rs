use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A throwaway home, config directory and workspace; removed on drop.
pub struct Sandbox {
    pub root: PathBuf,
}

impl Sandbox {
    pub fn new(tag: &str) -> Sandbox {
        let root = std::env::temp_dir().join(format!("palisade-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["home/.config/palisade", "home/.ssh", "ws"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("home/.ssh/id_rsa"), "canary-secret").unwrap();
        Sandbox { root: std::fs::canonicalize(&root).unwrap() }
    }

    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    pub fn ws(&self) -> PathBuf {
        self.root.join("ws")
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// `palisade ARGS` run in the workspace with only this sandbox's home and config.
    pub fn palisade(&self, args: &[&str]) -> Output {
        self.palisade_in(&self.ws(), args)
    }

    pub fn palisade_in(&self, cwd: &Path, args: &[&str]) -> Output {
        self.command(cwd, args).output().unwrap()
    }

    /// The `palisade ARGS` command, not started yet.
    pub fn command(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_palisade"));
        c.args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.home().join(".config"));
        c
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The probe binary built alongside `palisade`.
pub fn probe_bin() -> &'static str {
    env!("CARGO_BIN_EXE_palisade-probe")
}

/// The directory holding the test binaries, granted read-only to sandboxes under test.
pub fn bin_dir() -> String {
    Path::new(probe_bin()).parent().unwrap().to_string_lossy().into_owned()
}

impl Sandbox {
    /// `palisade run --allow-read <bin dir> OPTS -- CMD...`
    pub fn run(&self, opts: &[&str], cmd: &[&str]) -> Output {
        let bin = bin_dir();
        let mut args = vec!["run", "--allow-read", &bin];
        args.extend_from_slice(opts);
        args.push("--");
        args.extend_from_slice(cmd);
        self.palisade(&args)
    }

    /// Runs a shell script in the sandbox with the default policy.
    pub fn sh(&self, script: &str) -> Output {
        self.run(&[], &["/bin/sh", "-c", script])
    }

    /// Runs `palisade-probe ARGS` in the sandbox and returns what it printed.
    pub fn probe(&self, opts: &[&str], args: &[&str]) -> String {
        let mut cmd = vec![probe_bin()];
        cmd.extend_from_slice(args);
        let o = self.run(opts, &cmd);
        assert_eq!(o.status.code(), Some(0), "probe {args:?} failed: {}{}", stdout(&o), stderr(&o));
        stdout(&o).trim().to_owned()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Waits (`secs` at most) for the workspace file `name`, which a command inside makes
    /// to say it is ready; fails the test with `what` when it never comes.
    #[track_caller]
    pub fn wait_for_ws_file(&self, name: &str, secs: u64, what: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while !self.ws().join(name).exists() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// The kernel's verdict on an attempt that must be refused: any errno, never `ok`.
#[track_caller]
pub fn assert_refused(result: &str, what: &str) {
    assert!(result != "ok" && !result.is_empty(), "{what} was allowed ({result})");
}

impl Sandbox {
    /// Gives the sandbox's home a git identity (read by git on the host, with `HOME` set to
    /// that home, and inside, where the built-in policy shows `~/.gitconfig` read-only).
    pub fn git_identity(&self) {
        self.write(
            "home/.gitconfig",
            "[user]\n\tname = t\n\temail = t@example.invalid\n[init]\n\tdefaultBranch = main\n[protocol \"file\"]\n\tallow = always\n",
        );
    }

    /// `git ARGS` on the host in `dir`, as the user would run it after (or during) a run:
    /// with the sandbox's home as `HOME` and no system configuration.
    pub fn host_git(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.home())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap()
    }

    /// Like [`Sandbox::host_git`], asserting success.
    #[track_caller]
    pub fn host_git_ok(&self, dir: &Path, args: &[&str]) -> String {
        let o = self.host_git(dir, args);
        assert!(o.status.success(), "git {args:?} in {}: {}{}", dir.display(), stdout(&o), stderr(&o));
        stdout(&o)
    }

    /// Entries of a directory, sorted, with their kind: what `ls -la` would show of it.
    pub fn listing(&self, dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                format!("{} {:?}", e.file_name().to_string_lossy(), e.file_type().unwrap())
            })
            .collect();
        v.sort();
        v
    }
}

/// A free port on the host's loopback (free when asked; the caller binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `python3 -m http.server` serving `root` on the host's loopback at `port` (with `--cgi`
/// when asked), bounded by `timeout`; ready when this returns, stopped on drop.
pub struct HttpServer {
    pub port: u16,
    child: std::process::Child,
}

impl HttpServer {
    pub fn start(root: &Path, port: u16, cgi: bool, home: &Path) -> HttpServer {
        let mut args = vec!["300", "/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1"];
        if cgi {
            args.push("--cgi");
        }
        let port_text = port.to_string();
        args.push(&port_text);
        let child = Command::new("timeout")
            .args(&args)
            .current_dir(root)
            .env("HOME", home)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        HttpServer { port, child }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        // SIGTERM, which `timeout` passes on to the server (SIGKILL would orphan it).
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// This process's user id, from `/proc/self/status`: caches kept between runs of the tests
/// are per user (the unprivileged pass cannot write root's).
pub fn uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("Uid:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}
