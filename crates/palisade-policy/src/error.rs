//! Errors of the policy layer.
//!
//! Every error that comes from a policy source names where: the file (or `command line`),
//! the line and column when there is one, and the key.

use std::fmt;
use std::path::PathBuf;

/// Where a value came from: a file position, or a command-line flag.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Site {
    /// A file path, `<built-in>`, `<profile NAME>` or `command line`.
    pub source: String,
    /// 1-based line, 0 when the source has no lines (command line).
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// The dotted key (`filesystem.deny`) or the flag (`--deny`).
    pub key: String,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: {}", self.source, self.line, self.column, self.key)
        } else {
            write!(f, "{}: {}", self.source, self.key)
        }
    }
}

/// An error while loading, parsing or resolving a policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A value is malformed, unknown or out of range.
    #[error("{site}: {message}")]
    Invalid {
        /// Where the value was written.
        site: Site,
        /// What is wrong with it: "unknown network mode `open` (expected none or allowlist)".
        message: String,
    },
    /// The project file tried to grant more than the layers below it.
    #[error(
        "{site}: the project policy may only narrow access, but this widens it: {why}\n  (if you trust this project, pass --trust-project)"
    )]
    Widening {
        /// Where the widening entry was written.
        site: Site,
        /// What it grants that the layers below do not, in words.
        why: String,
    },
    /// A policy file could not be read.
    #[error("cannot read policy file {}: {source}", path.display())]
    Read {
        /// The file, as Palisade tried to open it.
        path: PathBuf,
        /// Why it could not be read: not found (a `--policy` file), permission denied, not
        /// UTF-8.
        #[source]
        source: std::io::Error,
    },
    /// A named profile does not exist.
    #[error("unknown profile `{name}` (built-in profiles: {known}; user profiles live in {dir})")]
    UnknownProfile {
        /// The profile asked for with `--profile NAME`.
        name: String,
        /// The built-in profiles' names, comma-separated (`claude, codex, gemini`).
        known: String,
        /// Where user profiles are read from (`$XDG_CONFIG_HOME/palisade/profiles`).
        dir: String,
    },
    /// The environment Palisade runs in is unusable (no home directory, bad workspace).
    #[error("{0}")]
    Setup(String),
}

impl PolicyError {
    /// Shorthand for [`PolicyError::Invalid`].
    pub fn invalid(site: Site, message: impl Into<String>) -> Self {
        PolicyError::Invalid { site, message: message.into() }
    }

    /// The site of the error, when it has one.
    pub fn site(&self) -> Option<&Site> {
        match self {
            PolicyError::Invalid { site, .. } | PolicyError::Widening { site, .. } => Some(site),
            _ => None,
        }
    }
}
