//! [`Sandbox`]: the policy choices shared by the commands it makes.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::Command;

/// The policy for commands run in a Palisade sandbox: the options of `palisade run`, as a
/// builder. Cheap to clone; holds no resources. Each option is applied when a command is
/// spawned, by the `palisade` supervisor, which reports a bad option (an unknown profile, a
/// malformed host) as exit status 125 with its reason on stderr.
///
/// Paths are given as `palisade run` takes them: absolute, `~/…`, or relative to the
/// workspace. The layers still apply beneath these options: the built-in defaults, your
/// `$XDG_CONFIG_HOME/palisade/policy.toml` and the workspace's `.palisade.toml` (which may
/// only narrow unless [`Sandbox::trust_project`]).
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub(crate) program: PathBuf,
    pub(crate) options: Vec<OsString>,
    pub(crate) supervisor_env: Vec<(OsString, OsString)>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Sandbox {
    /// The built-in policy (and your layers), with the `palisade` program found on `PATH`.
    pub fn new() -> Sandbox {
        Sandbox::with_program("palisade")
    }

    /// The same, with the supervisor at `program` (a path, or a name looked up on `PATH`).
    pub fn with_program(program: impl Into<PathBuf>) -> Sandbox {
        Sandbox { program: program.into(), options: Vec::new(), supervisor_env: Vec::new() }
    }

    fn option(mut self, name: &str, value: impl AsRef<OsStr>) -> Sandbox {
        self.options.push(name.into());
        self.options.push(value.as_ref().to_owned());
        self
    }

    fn flag(mut self, name: &str) -> Sandbox {
        self.options.push(name.into());
        self
    }

    /// The project directory (`--workspace`): writable inside; its `.palisade.toml` is the
    /// project layer. Default: the command's working directory ([`Command::current_dir`]),
    /// else your process's.
    pub fn workspace(self, dir: impl AsRef<Path>) -> Sandbox {
        self.option("--workspace", dir.as_ref())
    }

    /// A profile (`--profile`): built-in (`codex`, `claude`, `gemini`, …) or
    /// `$XDG_CONFIG_HOME/palisade/profiles/NAME.toml`.
    pub fn profile(self, name: &str) -> Sandbox {
        self.option("--profile", name)
    }

    /// A trusted policy file above the project's (`--policy`, repeatable).
    pub fn policy_file(self, file: impl AsRef<Path>) -> Sandbox {
        self.option("--policy", file.as_ref())
    }

    /// Makes `path` visible, read-only (`--allow-read`).
    pub fn allow_read(self, path: impl AsRef<OsStr>) -> Sandbox {
        self.option("--allow-read", path)
    }

    /// Makes `path` visible and writable (`--allow-write`).
    pub fn allow_write(self, path: impl AsRef<OsStr>) -> Sandbox {
        self.option("--allow-write", path)
    }

    /// Hides `path`, a path or a glob such as `**/.env` (`--deny`).
    pub fn deny(self, path: impl AsRef<OsStr>) -> Sandbox {
        self.option("--deny", path)
    }

    /// Keeps `path` read-only even inside a writable directory (`--protect`).
    pub fn protect(self, path: impl AsRef<OsStr>) -> Sandbox {
        self.option("--protect", path)
    }

    /// Allows connections to `HOST[:PORT]` (every port if omitted) through Palisade's
    /// gateway; switches the network from none to the allowlist (`--allow-net`).
    pub fn allow_net(self, host: &str) -> Sandbox {
        self.option("--allow-net", host)
    }

    /// Refuses `HOST[:PORT]`, whatever allows it (`--deny-net`).
    pub fn deny_net(self, host: &str) -> Sandbox {
        self.option("--deny-net", host)
    }

    /// Lets the project's `.palisade.toml` widen access (`--trust-project`).
    pub fn trust_project(self) -> Sandbox {
        self.flag("--trust-project")
    }

    /// A resource limit by its `palisade run` option without the dashes: `memory` (`4GiB`),
    /// `pids`, `cpu_time` (`30m`), `wall_time` (`2h`; past it, exit status 124),
    /// `file_size`, `tmp_size`, `open_files`; any of them `unlimited`.
    pub fn limit(self, name: &str, value: &str) -> Sandbox {
        self.option(&format!("--{}", name.replace('_', "-")), value)
    }

    /// Writes the audit log to `file`, which must not exist yet and must not be writable in
    /// the sandbox (`--audit`; default: a new file under `$XDG_STATE_HOME/palisade/sessions`).
    pub fn audit(self, file: impl AsRef<Path>) -> Sandbox {
        self.option("--audit", file.as_ref())
    }

    /// Where user namespaces are unavailable, runs with Landlock and seccomp only
    /// (`--allow-degraded`); `session_start` names what is missing.
    pub fn allow_degraded(self) -> Sandbox {
        self.flag("--allow-degraded")
    }

    /// Does not record every exec (`--no-exec-trace`; saves a round trip per exec).
    pub fn no_exec_trace(self) -> Sandbox {
        self.flag("--no-exec-trace")
    }

    /// Sets `key=value` in the supervisor's own environment, which is otherwise your
    /// process's: `HOME`, `XDG_CONFIG_HOME` and `XDG_STATE_HOME` choose where Palisade reads
    /// your policy layer and profiles and keeps its state and session logs (an application
    /// may give Palisade directories of its own). The sandbox's environment is made from it
    /// by the policy, as always.
    pub fn supervisor_env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Sandbox {
        self.supervisor_env.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// A command to run in a sandbox with this policy: `program` is looked up on the
    /// sandbox's `PATH`, as `palisade run` does.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        Command::new(self.clone(), program.as_ref())
    }

    /// Starts a warm session with this policy: see [`crate::Session`].
    ///
    /// # Errors
    /// As [`crate::Session::start`].
    pub fn start_session(&self) -> std::io::Result<crate::Session> {
        crate::Session::start(self)
    }
}
