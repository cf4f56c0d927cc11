//! `palisade check`: what this machine can enforce, and whether `run` would work.

use crate::Outcome;
use crate::cli::CheckArgs;

pub fn run(args: CheckArgs) -> Outcome {
    let verdict = "refuse: no enforcement backend in this build";
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "platform": std::env::consts::OS, "run": "refuse", "reason": verdict })
        );
    } else {
        println!("platform: {}", std::env::consts::OS);
        println!("run would: {verdict}");
    }
    Ok(1)
}
