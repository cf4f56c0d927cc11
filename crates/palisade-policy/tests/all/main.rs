//! Integration tests of the policy crate: one binary, a module per concern.

mod builtin;
mod fs_resolve;
mod git_layouts;
mod narrowing;
mod semantics;
mod util;
