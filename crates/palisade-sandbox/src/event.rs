//! What a running sandbox reports, whatever the platform.

use std::path::PathBuf;

/// One report from a running sandbox. Sent from the backend's own threads, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxEvent {
    /// A process in the sandbox called `execve` (or the platform's equivalent); pids as the
    /// sandbox sees them (0 when unknown).
    Exec { pid: u32, ppid: u32, path: String, argv: Vec<String>, cwd: String },
    /// A decoy was opened (host path).
    Tripwire { path: PathBuf },
    /// A limit stopped the run: the `[process]` key (`memory`, `pids`, `cpu_time`,
    /// `wall_time`, `tmp_size`) or `protection` (a protection was removed on the host), and
    /// what happened, in words.
    Limit { limit: String, detail: String },
    /// The platform refused something and said so: what was missing (`fs.read_file`), and
    /// the object.
    Denial { blockers: Vec<String>, object: String },
}

/// Where a backend sends its [`SandboxEvent`]s. Called from any thread; must not block for
/// long (the exec tracer waits on it).
pub trait Events: Send + Sync {
    fn event(&self, e: SandboxEvent);
}
