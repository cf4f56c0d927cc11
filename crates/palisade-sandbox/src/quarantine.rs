//! What a backend is asked to move aside after a run: git directories the sandbox made or
//! changed, whose configuration and hooks the host's git would otherwise obey. The moving
//! itself ([`crate::Backend::move_aside`]) needs the platform's way to reach a path without
//! following a link the sandbox planted.

use std::path::{Path, PathBuf};

/// A file moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// Where it was.
    pub from: PathBuf,
    /// Where it is now (`NAME.palisade-quarantine`, or `...-N`, in the same directory).
    pub to: PathBuf,
}

/// One git directory to look at.
#[derive(Debug, Clone, Copy)]
pub struct Suspect<'a> {
    /// The writable root it lies below (canonical).
    pub root: &'a Path,
    /// The git directory (canonical).
    pub git_dir: &'a Path,
    /// Its work tree, when known (its `.git` is looked at).
    pub work_tree: Option<&'a Path>,
    /// Recorded as a gitlink in an index that was there before the run.
    pub gitlink: bool,
    /// The common directory a `commondir` may name and stay (a worktree added to a
    /// repository that was there).
    pub keep_commondir_of: Option<&'a Path>,
}
