//! The executor's error for a failed set-up step: what was being done, to which path, and the
//! operating system's error, so that a failure reads "open (no symlinks) the host's
//! /w/p/x: Permission denied" and never a bare errno.

use std::io;
use std::path::{Path, PathBuf};

/// A failed step: what was being done, to which path, and the OS error.
#[derive(Debug)]
pub struct StepError {
    /// What was being done, as a verb phrase that reads before the path (`clone the mount
    /// tree of`, `create`).
    pub step: &'static str,
    /// The path it was done to.
    pub path: PathBuf,
    /// The operating system's error.
    pub err: io::Error,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.step, self.path.display(), self.err)
    }
}

impl std::error::Error for StepError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.err)
    }
}

/// Tags an I/O result with its step and path.
pub fn at<T>(step: &'static str, path: &Path, r: io::Result<T>) -> Result<T, StepError> {
    r.map_err(|err| StepError { step, path: path.to_path_buf(), err })
}
