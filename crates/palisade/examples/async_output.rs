//! Runs several commands in sandboxes at once from async code (tokio), each with its own
//! policy, and prints what each wrote and how many programs it executed.
//!
//! ```text
//! cargo run -p palisade --features tokio --example async_output
//! ```
//!
//! (`palisade` must be on `PATH`.)

use std::io;
use std::process::Stdio;

use palisade::{Event, Sandbox};

fn main() -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let results = rt.block_on(run_all(&Sandbox::new(), &["echo hello", "ls / | wc -l", "cat ~/.ssh/id_rsa"]))?;
    for (script, code, stdout, execs) in results {
        println!("{script:?}: exit {code}, {execs} programs, stdout {:?}", String::from_utf8_lossy(&stdout));
    }
    Ok(())
}

/// Runs each script with `sh -c` in its own sandbox, concurrently; returns, per script, its
/// exit code, its stdout and the number of `exec` records of its session.
pub async fn run_all(sandbox: &Sandbox, scripts: &[&str]) -> io::Result<Vec<(String, i32, Vec<u8>, usize)>> {
    let mut tasks = Vec::new();
    for script in scripts {
        let mut child =
            sandbox.command("sh").args(["-c", script]).stdout(Stdio::piped()).stdin(Stdio::null()).spawn_async()?;
        let script = script.to_string();
        tasks.push(tokio::spawn(async move {
            let mut events = child.take_events().expect("events are on by default");
            let mut stdout = child.child.stdout.take().expect("stdout is piped");
            let read = async {
                let mut buf = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut buf).await.map(|_| buf)
            };
            let count = async {
                let mut execs = 0;
                while let Some(record) = events.next().await {
                    if let Event::Exec { .. } = record?.event {
                        execs += 1;
                    }
                }
                Ok::<_, io::Error>(execs)
            };
            let (out, execs) = tokio::try_join!(read, count)?;
            let status = child.wait().await?;
            Ok::<_, io::Error>((script, status.code().unwrap_or(128), out, execs))
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.map_err(io::Error::other)??);
    }
    Ok(results)
}
