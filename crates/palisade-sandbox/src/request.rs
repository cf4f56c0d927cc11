//! What to run, besides the policy, and the resource limits every backend applies.

use std::ffi::OsString;
use std::path::PathBuf;

use palisade_policy::ResolvedPolicy;
use serde::Serialize;

/// What to run, besides the policy: the input of [`crate::view::build`] and of every
/// backend's [`crate::Backend::plan`].
#[derive(Debug, Clone)]
pub struct Request {
    /// The command and its arguments (never empty: planning refuses an empty one).
    pub argv: Vec<OsString>,
    /// The caller's working directory; used inside when the view shows it, else the
    /// workspace.
    pub cwd: PathBuf,
    /// The environment, already filtered by the policy's `[environment]` (name, value).
    pub env: Vec<(String, String)>,
    /// The private temporary directory (the canonical `${tmp}`).
    pub tmp: PathBuf,
    /// Record every exec (an [`crate::SandboxEvent::Exec`] each), where the backend can.
    pub trace_exec: bool,
    /// Where this workspace's kept copies live (`filesystem.own_copy`; see
    /// [`crate::view::own_copy_path`]), and its globs' last walks (`globs/`, see
    /// `view::glob_cache`); `None`: such files are only protected, and globs are walked
    /// in full every run.
    pub copies: Option<PathBuf>,
    /// A warm session: `argv` is empty, and the backend starts no command of its own but
    /// serves [`crate::Wiring`]'s requests (see [`crate::warm`]).
    pub session: bool,
}

/// Resource limits of a run (`None`: no limit), from the policy's `[process]`. `tmp_size`
/// is not here: it is the size of the private `${tmp}` ([`crate::view::Entry::Private`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Memory of the whole sandbox, in bytes.
    pub memory: Option<u64>,
    /// Processes and threads of the whole sandbox.
    pub pids: Option<u64>,
    /// CPU time of the whole sandbox (all processes added up).
    pub cpu_time: Option<std::time::Duration>,
    /// Wall-clock time of the run; past it the run ends with status 124, as `timeout`'s.
    pub wall_time: Option<std::time::Duration>,
    /// The largest file a process may write, in bytes.
    pub file_size: Option<u64>,
    /// Open files per process.
    pub open_files: Option<u64>,
}

impl Limits {
    /// The policy's limits; `unlimited` becomes `None`.
    pub fn of(policy: &ResolvedPolicy) -> Limits {
        let l = &policy.limits;
        let n =
            |v: &Option<palisade_policy::model::Setting<u64>>| v.as_ref().map(|s| s.value).filter(|v| *v != u64::MAX);
        let d = |v: &Option<palisade_policy::model::Setting<std::time::Duration>>| {
            v.as_ref().map(|s| s.value).filter(|v| *v != std::time::Duration::MAX)
        };
        Limits {
            memory: n(&l.memory),
            pids: n(&l.pids),
            cpu_time: d(&l.cpu_time),
            wall_time: d(&l.wall_time),
            file_size: n(&l.file_size),
            open_files: n(&l.open_files),
        }
    }
}
