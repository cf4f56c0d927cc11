//! What a running sandbox reports, whatever the platform.

use std::path::PathBuf;

/// One report from a running sandbox. Sent from the backend's own threads, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxEvent {
    /// A process in the sandbox called `execve` (or the platform's equivalent).
    Exec {
        /// Its pid as the sandbox sees it (0 when unknown).
        pid: u32,
        /// Its parent's pid as the sandbox sees it (0 when unknown).
        ppid: u32,
        /// The path it asked for (for `execveat` with an empty path: `fd N`).
        path: String,
        /// Its arguments.
        argv: Vec<String>,
        /// Its working directory.
        cwd: String,
    },
    /// A decoy was opened.
    Tripwire {
        /// The decoy's host path.
        path: PathBuf,
    },
    /// A limit stopped the run.
    Limit {
        /// The `[process]` key (`memory`, `pids`, `cpu_time`, `wall_time`, `tmp_size`), or
        /// `protection` (a protection was removed on the host).
        limit: String,
        /// What happened, in words.
        detail: String,
    },
    /// The platform refused something and said so.
    Denial {
        /// What was missing (`fs.read_file`, `scope.signal`).
        blockers: Vec<String>,
        /// The object, as the denied process saw it (`path=...`).
        object: String,
    },
}

/// Where a backend sends its [`SandboxEvent`]s. Called from any thread; must not block for
/// long (the exec tracer waits on it).
pub trait Events: Send + Sync {
    /// Takes one report.
    fn event(&self, e: SandboxEvent);
}
