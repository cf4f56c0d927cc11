//! End-to-end tests of the `palisade` command: real binary, throwaway home and workspace,
//! Tests make a few raw system calls (SysV IPC, renameat2) to set up attacks.
#![allow(unsafe_code)]
//! real sandboxes.

mod agents;
mod audit;
mod caches;
mod escape_fs;
mod escape_proc;
mod gateway_http;
mod library;
mod limits;
mod mcp;
mod mirrors;
mod network;
mod policy_cmd;
mod protect;
mod publish;
mod run_cmd;
mod sessions;
mod terminal;
mod tidy;
mod tools;
mod util;
