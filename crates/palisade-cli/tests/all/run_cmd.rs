//! `palisade run` refuses, with 125, whenever it cannot enforce the policy.

use crate::util::*;

#[test]
fn run_never_runs_the_command_unsandboxed() {
    let s = Sandbox::new("run-refuses");
    let marker = s.root.join("ran");
    let o = s.palisade(&[
        "run",
        "--",
        "/bin/sh",
        "-c",
        &format!("echo pwned > {}", marker.display()),
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(!marker.exists(), "the command ran");
}

#[test]
fn run_requires_a_command() {
    let s = Sandbox::new("run-nocmd");
    assert_eq!(s.palisade(&["run"]).status.code(), Some(125));
}

#[test]
fn run_json_diagnostics() {
    let s = Sandbox::new("run-json");
    let o = s.palisade(&["run", "--json", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    let v: serde_json::Value = serde_json::from_str(stderr(&o).lines().last().unwrap()).unwrap();
    assert_eq!(v["exit_code"], 125);
    assert_eq!(v["level"], "error");
}
