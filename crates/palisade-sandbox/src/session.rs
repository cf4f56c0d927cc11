//! A run's session: every [`SandboxEvent`] becomes an audit record (through the monitor,
//! whose rules see it too), limits are said on stderr and remembered for the exit status.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use palisade_monitor::live::LiveOutput;
use palisade_monitor::{AuditLog, Event, Sink};

use crate::exit::TIMED_OUT;
use crate::{Events, Exit, SandboxEvent};

/// Records a run's events; see the module.
pub struct Session {
    sink: Arc<dyn Sink>,
    /// Decoy paths under it are shown as `~/...`, as the user wrote them.
    home: PathBuf,
    /// Messages as JSON lines (`--json`) instead of text.
    json: bool,
    /// The first limit that stopped the run: (key, detail).
    limit: Mutex<Option<(String, String)>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("home", &self.home).field("json", &self.json).finish()
    }
}

impl Session {
    /// A session recording into `sink`; decoys under `home` are shown as `~/...`; messages
    /// as JSON lines when `json`.
    pub fn new(sink: Arc<dyn Sink>, home: PathBuf, json: bool) -> Arc<Session> {
        Arc::new(Session { sink, home, json, limit: Mutex::new(None) })
    }

    /// The first limit that stopped the run: its key and what happened.
    pub fn limit(&self) -> Option<(String, String)> {
        self.limit.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The exit status of a run that ended as `exit`: the command's, or 124 when its
    /// wall-clock limit stopped it.
    pub fn status(&self, exit: Exit) -> u8 {
        match self.limit() {
            Some((k, _)) if k == "wall_time" => TIMED_OUT,
            _ => exit.status(),
        }
    }

    fn say_limit(&self, limit: &str, detail: &str) {
        if self.json {
            let v =
                format!("{{\"level\":\"error\",\"limit\":{},\"reason\":{}}}", json_string(limit), json_string(detail));
            eprintln!("{v}");
        } else if limit == "protection" {
            eprintln!("palisade: stopped: {detail}");
        } else {
            eprintln!("palisade: limit: {detail} ([process] {limit})");
        }
    }
}

/// A JSON string literal (the monitor's records are serialised by serde; this is for the
/// one message line).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The session's monitor: the audit log, the policy's rules, and what `alert` (a line on
/// stderr) and `kill` (`kill`, which the backend's kill switch provides) do.
pub fn monitor(
    log: &Arc<AuditLog>,
    rules: &[palisade_policy::model::MonitorRule],
    kill: Box<dyn Fn() + Send + Sync>,
    json: bool,
) -> Arc<dyn Sink> {
    let alert = move |f: &palisade_monitor::rules::Fired| {
        if json {
            let v = serde_json::json!({ "level": "alert", "rule": f.rule, "condition": f.condition, "action": f.action.to_string(), "reason": f.reason });
            eprintln!("{v}");
        } else {
            eprintln!("palisade: ALERT: rule {:?} ({}): {}; action: {}", f.rule, f.condition, f.reason, f.action);
        }
    };
    Arc::new(palisade_monitor::rules::Monitor::new(log.clone(), rules, Box::new(alert), kill))
}

impl Session {
    /// Ends the session: folded records written, `session_end` with the totals, a failure
    /// to write the log said, and the live streams drained (at most 2 s each) with what they
    /// dropped said. `status` is the run's exit status (125 when Palisade failed).
    pub fn end(&self, log: &AuditLog, live: &[(&'static str, Arc<LiveOutput>)], status: u8, duration_ms: u64) {
        let (exit_code, signal) = match status {
            c if c > 128 && c < 160 => (None, Some(i32::from(c) - 128)),
            c => (Some(i32::from(c)), None),
        };
        self.sink.flush();
        self.sink.record(&Event::SessionEnd { exit_code, signal, duration_ms, totals: log.totals() });
        if let Some(e) = log.error() {
            eprintln!("palisade: {e}");
        }
        for (name, out) in live {
            out.finish(std::time::Duration::from_secs(2));
            if out.dropped() > 0 {
                eprintln!(
                    "palisade: {name}: {} records were not shown (the reader fell behind); the audit log {} has them all",
                    out.dropped(),
                    log.path().display()
                );
            }
        }
    }
}

impl Events for Session {
    fn event(&self, e: SandboxEvent) {
        match e {
            SandboxEvent::Exec { pid, ppid, path, argv, cwd } => {
                self.sink.record(&Event::Exec { pid, ppid, path, argv, cwd });
            }
            SandboxEvent::Tripwire { path } => {
                let shown = path
                    .strip_prefix(&self.home)
                    .map_or_else(|_| path.display().to_string(), |r| format!("~/{}", r.display()));
                self.sink.record(&Event::Tripwire { path: shown });
            }
            SandboxEvent::Limit { limit, detail } => {
                self.sink.record(&Event::Limit { limit: limit.clone(), detail: detail.clone() });
                self.say_limit(&limit, &detail);
                self.limit.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert((limit, detail));
            }
            SandboxEvent::Denial { blockers, object } => {
                self.sink.record(&Event::Denial { blockers, object });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that plays a script of events and ends as told: the session code runs end
    /// to end, events in, audit log and exit status out, without a kernel.
    struct Recording {
        script: Vec<SandboxEvent>,
        exit: Exit,
    }

    impl Recording {
        fn run(self, events: &dyn Events) -> Exit {
            for e in self.script {
                events.event(e);
            }
            self.exit
        }
    }

    fn log() -> (tempdir::Dir, Arc<palisade_monitor::AuditLog>) {
        let d = tempdir::Dir::new();
        let l = Arc::new(palisade_monitor::AuditLog::create(&d.0.join("a.jsonl")).unwrap());
        (d, l)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
                let p = std::env::temp_dir().join(format!("palisade-session-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn kinds(log: &palisade_monitor::AuditLog) -> Vec<serde_json::Value> {
        std::fs::read_to_string(log.path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone())
            .collect()
    }

    #[test]
    fn events_in_records_and_exit_status_out() {
        let (_d, log) = log();
        let s = Session::new(log.clone(), "/home/u".into(), true);
        let exit = Recording {
            script: vec![
                SandboxEvent::Exec {
                    pid: 2,
                    ppid: 1,
                    path: "/bin/sh".into(),
                    argv: vec!["sh".into()],
                    cwd: "/w".into(),
                },
                SandboxEvent::Tripwire { path: "/home/u/.ssh/id_ed25519".into() },
                SandboxEvent::Denial { blockers: vec!["fs.read_file".into()], object: "path=/etc/shadow".into() },
                SandboxEvent::Limit { limit: "wall_time".into(), detail: "ran past 1 s".into() },
                SandboxEvent::Limit { limit: "memory".into(), detail: "later".into() },
            ],
            exit: Exit::Signal(9),
        }
        .run(s.as_ref());
        let events = kinds(&log);
        let k: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(k, ["exec", "tripwire", "denial", "limit", "limit"]);
        assert_eq!(events[1]["path"], "~/.ssh/id_ed25519", "decoys as the user wrote them");
        assert_eq!(s.limit().unwrap().0, "wall_time", "the first limit is the one kept");
        assert_eq!(s.status(exit), TIMED_OUT);
        assert!(palisade_monitor::AuditLog::create(log.path()).is_err(), "never reopened");
        s.end(&log, &[], s.status(exit), 5);
        let end = kinds(&log).pop().unwrap();
        assert_eq!((end["kind"].as_str(), end["exit_code"].as_i64()), (Some("session_end"), Some(124)));
        assert_eq!(end["totals"]["execs"], 1);
    }

    #[test]
    fn a_run_without_limits_keeps_the_commands_status() {
        let (_d, log) = log();
        let s = Session::new(log, "/home/u".into(), false);
        let kill = Recording { script: vec![], exit: Exit::Signal(9) }.run(s.as_ref());
        assert_eq!(s.status(kill), 137);
        assert_eq!(s.status(Exit::Code(3)), 3);
        assert_eq!(s.status(Exit::Code(256 + 2)), 2);
        assert_eq!(json_string("a\"b\\\n"), r#""a\"b\\\u000a""#);
    }
}
