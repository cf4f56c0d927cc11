//! How the sandboxed command ended.

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// It (or the sandbox's init) was killed by this signal.
    Signal(i32),
}

impl Exit {
    /// The conventional exit status: the code, or 128 + the signal number (as `env` and
    /// container runtimes report a killed child).
    pub fn status(self) -> u8 {
        match self {
            Exit::Code(c) => (c & 0xff) as u8,
            Exit::Signal(s) => (128 + s).min(255) as u8,
        }
    }
}
