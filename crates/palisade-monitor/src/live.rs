//! Live copies of the event stream: `--events` (the audit records themselves, as JSON Lines,
//! for harnesses) and `--watch` (one short line per event, for people). Each output has a
//! bounded queue and its own writer thread, so a reader that stops reading never blocks the
//! supervisor, the gateway or the exec tracer: when the queue is full, records are dropped
//! from the copy (a harness sees the gap in `seq`) and counted; the audit log has them all.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::event::Event;

/// Records queued per output before the copy starts dropping.
pub const QUEUE: usize = 4096;

/// One live output.
pub struct LiveOutput {
    tx: Mutex<Option<SyncSender<Vec<u8>>>>,
    /// The writer, until its thread is started.
    pending: Mutex<Option<Pending>>,
    done: Mutex<Option<Receiver<()>>>,
    dropped: AtomicU64,
}

struct Pending {
    out: Box<dyn Write + Send>,
    rx: Receiver<Vec<u8>>,
    done: SyncSender<()>,
}

impl std::fmt::Debug for LiveOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveOutput").field("dropped", &self.dropped()).finish()
    }
}

impl LiveOutput {
    /// A live output to `out`, queueing at most `capacity` records. Records queue until
    /// [`LiveOutput::start`] starts the writer thread (Palisade starts the sandbox from a
    /// single-threaded process, so threads come after).
    pub fn new(out: impl Write + Send + 'static, capacity: usize) -> Arc<LiveOutput> {
        let (tx, rx) = sync_channel::<Vec<u8>>(capacity);
        let (done_tx, done_rx) = sync_channel::<()>(1);
        Arc::new(LiveOutput {
            tx: Mutex::new(Some(tx)),
            pending: Mutex::new(Some(Pending { out: Box::new(out), rx, done: done_tx })),
            done: Mutex::new(Some(done_rx)),
            dropped: AtomicU64::new(0),
        })
    }

    /// Starts the writer thread (once; later calls do nothing).
    pub fn start(&self) -> std::io::Result<()> {
        let Some(Pending { mut out, rx, done }) = self.pending.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        std::thread::Builder::new().name("palisade-live".into()).spawn(move || {
            for bytes in rx {
                // A reader that went away (EPIPE) ends the copy, not the session.
                if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
            let _ = done.send(());
        })?;
        Ok(())
    }

    /// Queues `bytes`; never blocks.
    pub fn send(&self, bytes: Vec<u8>) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let sent = match tx.as_ref() {
            Some(tx) => match tx.try_send(bytes) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many records the copy has dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Closes the queue and waits up to `wait` for the writer to drain it (a reader that is
    /// not reading does not hold up the end of the run for longer).
    pub fn finish(&self, wait: Duration) {
        let _ = self.start();
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(done) = self.done.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = done.recv_timeout(wait);
        }
    }
}

/// Strings from the sandbox are escaped, never interpreted by a terminal.
pub fn printable(s: &str) -> String {
    s.escape_debug().to_string()
}

/// The `--watch` line for an event.
pub fn watch_line(event: &Event) -> String {
    let verdict = |allowed: bool| if allowed { "allow" } else { "DENY " };
    let body = match event {
        Event::SessionStart { mode, landlock_abi, network, missing, limits, .. } => {
            let mut s = format!(
                "start  {mode}, Landlock ABI {landlock_abi}, network {}, limits by {}",
                printable(network),
                printable(limits)
            );
            if !missing.is_empty() {
                s.push_str(&format!(
                    "; NOT enforced: {}",
                    missing.iter().map(|m| printable(m)).collect::<Vec<_>>().join(", ")
                ));
            }
            s
        }
        Event::Exec { pid, argv, path, .. } => {
            let shown = if argv.is_empty() {
                printable(path)
            } else {
                argv.iter().map(|a| printable(a)).collect::<Vec<_>>().join(" ")
            };
            let mut shown: String = shown.chars().take(200).collect();
            if shown.len() >= 200 {
                shown.push('…');
            }
            format!("exec   [{pid}] {shown}")
        }
        Event::Dns { name, qtype, allowed, .. } => {
            format!("dns    {} {} {}", verdict(*allowed), printable(name), printable(qtype))
        }
        Event::Connection { via, target, allowed, reason, .. } => {
            let mut s = format!("net    {} {} ({})", verdict(*allowed), printable(target), printable(via));
            if !allowed {
                s.push_str(&format!(": {}", printable(reason)));
            }
            s
        }
        Event::Request { via, method, host, port, path, allowed, reason, status, .. } => {
            let status = status.map_or_else(String::new, |s| format!(" -> {s}"));
            let mut s = format!(
                "http   {} {} {}:{port}{} ({}){status}",
                verdict(*allowed),
                printable(method),
                printable(host),
                printable(path),
                printable(via)
            );
            if !allowed {
                s.push_str(&format!(": {}", printable(reason)));
            }
            s
        }
        Event::ConnectionEnd { target, bytes_up, bytes_down, duration_ms, .. } => format!(
            "net    closed {} after {duration_ms} ms: {bytes_up} bytes up, {bytes_down} down",
            printable(target)
        ),
        Event::Inbound { port, host_port, peer, bytes_in, bytes_out, duration_ms, error } => match error {
            Some(e) => {
                format!("in     {} -> :{host_port} -> sandbox :{port} not carried: {}", printable(peer), printable(e))
            }
            None => format!(
                "in     {} -> :{host_port} -> sandbox :{port}, {duration_ms} ms: {bytes_in} bytes in, {bytes_out} out",
                printable(peer)
            ),
        },
        Event::Traffic { direction, total } => format!("bytes  the session's {} passed {total}", printable(direction)),
        Event::Repeated { count, event } => {
            let inner = watch_line(event);
            let inner = inner.trim_end().strip_prefix("palisade: ").unwrap_or(&inner).to_owned();
            format!("{inner}   (x{count} more)")
        }
        Event::Denial { blockers, object } => {
            format!("DENIED {} {}", printable(&blockers.join(",")), printable(object))
        }
        Event::Tripwire { path } => format!("TRIPWIRE {} was opened", printable(path)),
        Event::Limit { limit, detail } => format!("LIMIT  {}: {}", printable(limit), printable(detail)),
        Event::NewRepository { path, gitlink_of, quarantined } => {
            let of = gitlink_of.as_deref().map_or(String::new(), |o| format!(" (a gitlink of {})", printable(o)));
            let moved = if quarantined.is_empty() {
                String::new()
            } else {
                format!("; moved aside: {}", printable(&quarantined.join(", ")))
            };
            format!("REPO   {} was made inside{of}{moved}", printable(path))
        }
        Event::ToolCall { tool, target, allowed, reason } => format!(
            "TOOL   {} {} {}: {}",
            printable(tool),
            printable(target),
            if *allowed { "done" } else { "REFUSED" },
            printable(reason)
        ),
        Event::Command { id, argv, cwd } => {
            format!("cmd    #{id} {} (in {})", printable(&argv.join(" ")), printable(cwd))
        }
        Event::CommandEnd { id, exit_code, signal, duration_ms, error } => match (exit_code, signal, error) {
            (_, _, Some(e)) => format!("cmd    #{id} did not start: {}", printable(e)),
            (_, Some(sig), None) => format!("cmd    #{id} killed by signal {sig} after {duration_ms} ms"),
            (c, None, None) => format!("cmd    #{id} exit {} after {duration_ms} ms", c.unwrap_or(0)),
        },
        Event::MonitorAction { rule, action, reason, .. } => {
            format!("RULE   {:?} fired: {} ({})", printable(rule), printable(action), printable(reason))
        }
        Event::SessionEnd { exit_code, signal, duration_ms, .. } => match (exit_code, signal) {
            (_, Some(sig)) => format!("end    killed by signal {sig} after {duration_ms} ms"),
            (Some(c), None) => format!("end    exit {c} after {duration_ms} ms"),
            (None, None) => format!("end    after {duration_ms} ms"),
        },
    };
    format!("palisade: {body}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that blocks until told to go on, like a pipe nobody reads.
    struct Stuck(Arc<Mutex<Vec<u8>>>, Receiver<()>);
    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _ = self.1.recv();
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_reader_never_blocks_and_drops_are_counted() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (go, wait) = sync_channel(0);
        let live = LiveOutput::new(Stuck(seen.clone(), wait), 8);
        live.start().unwrap();
        for i in 0..100_000u32 {
            live.send(format!("{i}\n").into_bytes());
        }
        // One record is held by the writer, 8 are queued, the rest dropped.
        assert!(live.dropped() >= 100_000 - 9, "{}", live.dropped());
        drop(go);
        live.finish(Duration::from_secs(5));
        let text = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("0\n"), "{text}");
        assert!(text.lines().count() <= 9);
    }

    #[test]
    fn watch_lines_escape_hostile_strings() {
        let e = Event::Exec {
            pid: 3,
            ppid: 1,
            path: "/x".into(),
            argv: vec!["evil\n\u{1b}[2Jname".into(), "a\rb".into()],
            cwd: "/".into(),
        };
        let line = watch_line(&e);
        assert_eq!(line.matches('\n').count(), 1);
        assert!(!line.contains('\u{1b}') && !line.contains('\r'));
        assert!(line.contains("evil\\n\\u{1b}[2Jname"), "{line}");
    }
}
