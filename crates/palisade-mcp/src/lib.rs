//! `palisade mcp`: a Model Context Protocol server over stdio (the official Rust SDK,
//! `rmcp`) whose tools obey the same policy as `palisade run`.
//!
//! - File tools ([`files`]): `read_file`, `write_file`, `edit_file` (one exact replacement),
//!   `list_directory`, `search_files`. A path is opened beneath the host grant that holds it
//!   without following any symbolic link (`openat2` with `RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS`), and decided by `ResolvedPolicy::decide_path`, so `deny` and
//!   `protect` hold exactly as in the sandbox: denied paths are absent, protected ones
//!   read-only.
//! - `run_command` runs `sh -c COMMAND` in a sandbox built from the same policy (`palisade
//!   run` with the same policy flags), with a timeout and an output cap, and returns the exit
//!   status, stdout and stderr.
//!
//! Every call is a `tool_call` record in the session's audit log. A refusal or a failure is
//! an MCP error with a message that names the path and the rule; the server never exits on
//! bad input.

#![deny(missing_docs)]

pub mod files;
mod server;

pub use server::{Config, serve};
