//! End-to-end tests of the `palisade` command: real binary, throwaway home and workspace.

mod policy_cmd;
mod run_cmd;
mod util;
