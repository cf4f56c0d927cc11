//! Runs a shell script in a sandbox over the current directory, printing each program it
//! executes and each thing it was refused, as it happens; exits with the script's status.
//!
//! ```text
//! cargo run -p palisade --example watch -- 'ls; cat ~/.ssh/id_rsa; curl -s https://example.com'
//! ```
//!
//! (`palisade` must be on `PATH`.)

use std::io::{self, Write};

use palisade::{Event, Sandbox};

fn main() -> io::Result<()> {
    let script = std::env::args().nth(1).unwrap_or_else(|| "ls; cat /etc/shadow".into());
    let code = watch(&Sandbox::new(), &script, &mut io::stdout())?;
    std::process::exit(code)
}

/// Runs `script` with `sh -c`, writes a line to `out` per exec, refused connection,
/// Landlock denial and tripwire, and returns the exit code (128+N for signal N).
pub fn watch(sandbox: &Sandbox, script: &str, out: &mut dyn Write) -> io::Result<i32> {
    let mut child = sandbox.command("sh").args(["-c", script]).spawn()?;
    // The records end when the supervisor exits, so reading them all, then waiting, is enough.
    for record in child.take_events().into_iter().flatten() {
        match record?.event {
            Event::Exec { argv, .. } => writeln!(out, "exec {}", argv.join(" "))?,
            Event::Connection { target, allowed: false, reason, .. } => writeln!(out, "refused {target}: {reason}")?,
            Event::Denial { blockers, object } => writeln!(out, "denied {object} ({})", blockers.join(", "))?,
            Event::Tripwire { path } => writeln!(out, "tripwire {path}")?,
            Event::SessionEnd { exit_code, .. } => writeln!(out, "end {exit_code:?}")?,
            _ => {}
        }
    }
    let status = child.wait()?;
    Ok(status.code().unwrap_or(128))
}
