//! `palisade run`: resolve the policy, then enforce it and run the command.

use crate::cli::RunArgs;
use crate::cmd_policy::load_policy;
use crate::{Failure, Outcome};

pub fn run(args: RunArgs) -> Outcome {
    // The policy is loaded and validated first, so policy errors are reported as such.
    let (_env, _policy) = load_policy(&args.policy)?;
    // No enforcement backend exists in this build: refuse rather than run unsandboxed.
    Err(Failure {
        message: "this build of Palisade has no enforcement backend for this platform yet; refusing to run the command unsandboxed".into(),
        hint: Some("`palisade check` shows what this machine can enforce".into()),
    })
}
