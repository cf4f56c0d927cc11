//! Integration tests of the policy crate: one binary, a module per concern.

mod builtin;
// Real symlinks and git on the file system: Unix only (Windows paths are their own issue).
#[cfg(unix)]
mod fs_resolve;
#[cfg(unix)]
mod git_layouts;
mod narrowing;
mod semantics;
mod util;
