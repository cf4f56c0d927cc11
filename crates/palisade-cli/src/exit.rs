//! Exit statuses, the conventions of `env`, `timeout` and container runtimes. This module
//! is their only owner.

/// Palisade itself failed: bad policy, missing kernel feature, setup error.
pub const FAILURE: u8 = 125;
/// The command was found but cannot be executed.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub const CANNOT_EXECUTE: u8 = 126;
/// The command was not found.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub const NOT_FOUND: u8 = 127;
/// The run reached its wall-clock limit (`--wall-time`), as `timeout` reports it. Other
/// limits stop the sandbox with SIGKILL: 137, as container runtimes report an OOM kill.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub const TIMED_OUT: u8 = 124;
