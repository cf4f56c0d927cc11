//! `palisade`: the command-line front end. Parses arguments, loads the policy, hands work to
//! the library crates, and maps every outcome to an exit status (see [`exit`]).

mod cli;
mod cmd_audit;
mod cmd_check;
mod cmd_mcp;
mod cmd_policy;
mod cmd_profiles;
mod cmd_run;
mod cmd_session;
#[cfg(windows)]
mod cmd_windows;
mod exit;
mod tree_scan;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// A failure of Palisade itself, reported on stderr with exit status 125.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    /// What to do about it, when there is something to say.
    pub hint: Option<String>,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure { message: e.to_string(), hint: None }
    }
}

/// What a command returns: an exit status, or a failure of Palisade itself.
pub type Outcome = Result<u8, Failure>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::FAILURE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let json = match &cli.command {
        Command::Run(r) => r.json,
        _ => false,
    };
    let outcome = match cli.command {
        Command::Run(args) => cmd_run::run(args),
        Command::Session(cmd) => cmd_session::run(cmd),
        Command::Policy(cmd) => cmd_policy::run(cmd),
        Command::Check(args) => cmd_check::run(args),
        Command::Audit(cmd) => cmd_audit::run(cmd),
        Command::Profiles => cmd_profiles::run(),
        Command::Mcp(args) => cmd_mcp::run(args),
        #[cfg(windows)]
        Command::Forget { workspace } => cmd_windows::forget(&workspace),
        #[cfg(windows)]
        Command::Repair => cmd_windows::repair(),
        #[cfg(windows)]
        Command::Setup { remove } => cmd_windows::setup(remove),
        #[cfg(windows)]
        Command::BrokerService => cmd_windows::broker_service(),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            if json {
                let v = serde_json::json!({ "level": "error", "message": f.message, "hint": f.hint, "exit_code": exit::FAILURE });
                eprintln!("{v}");
            } else {
                eprintln!("palisade: {}", f.message);
                if let Some(h) = &f.hint {
                    eprintln!("  hint: {h}");
                }
            }
            ExitCode::from(exit::FAILURE)
        }
    }
}
