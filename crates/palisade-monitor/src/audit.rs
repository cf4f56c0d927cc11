//! The audit log: JSON Lines, one record per event, each carrying its sequence number, the
//! previous record's hash and its own (SHA-256 over the record without its hash), written
//! with one `write` on an `O_APPEND` file as it happens, so a crash loses at most the record
//! being written. [`verify`] detects an edited, removed, reordered or inserted record, and a
//! log that stops before its `session_end`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::event::{Event, SCHEMA_VERSION};

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where events go. Implemented by [`AuditLog`]; a harness can add its own.
pub trait Sink: Send + Sync {
    /// Takes one record (never blocks for long; called from the gateway and the tracer).
    fn record(&self, event: &Event);
    /// Writes whatever is held back (folded repeats); called before the session's totals
    /// are taken.
    fn flush(&self) {}
}

/// Called with every record as it is written (the event and its line, newline included).
pub type Tap = Box<dyn Fn(&Event, &str) + Send + Sync>;

/// An open audit log.
pub struct AuditLog {
    path: PathBuf,
    state: Mutex<State>,
    taps: Mutex<Vec<Tap>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.path).finish()
    }
}

#[derive(Debug)]
struct State {
    file: File,
    seq: u64,
    prev: String,
    /// The first error, kept so a failing disk is reported at the end of the run.
    error: Option<String>,
    totals: crate::event::Totals,
}

impl AuditLog {
    /// Creates a new log (never appends to or overwrites an existing one), mode 0600, with
    /// its directory (mode 0700) if needed.
    pub fn create(path: &Path) -> io::Result<AuditLog> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(dir)?;
        }
        let mut o = OpenOptions::new();
        o.append(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let file = o.open(path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            state: Mutex::new(State { file, seq: 0, prev: GENESIS.into(), error: None, totals: Default::default() }),
            taps: Mutex::new(Vec::new()),
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a live copy of the records (`--events`, `--watch`). Taps run under the log's
    /// lock, in record order, and must not block.
    pub fn add_tap(&self, tap: Tap) {
        self.taps.lock().unwrap_or_else(|e| e.into_inner()).push(tap);
    }

    /// Appends one record.
    pub fn append(&self, event: &Event) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.totals.add(event);
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let event_json = serde_json::to_string(event).map_err(io::Error::other)?;
        let body = format!(
            "{{\"v\":{SCHEMA_VERSION},\"seq\":{},\"time_ms\":{time_ms},\"prev\":\"{}\",\"event\":{event_json}}}",
            st.seq, st.prev
        );
        let hash = hex(&Sha256::digest(body.as_bytes()));
        let line = format!("{},\"hash\":\"{hash}\"}}\n", &body[..body.len() - 1]);
        let written = st.file.write_all(line.as_bytes());
        for tap in self.taps.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            tap(event, &line);
        }
        written?;
        st.seq += 1;
        st.prev = hash;
        Ok(())
    }

    /// Counts of the events recorded so far.
    pub fn totals(&self) -> crate::event::Totals {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).totals.clone()
    }

    /// The first write error, if any record could not be written.
    pub fn error(&self) -> Option<String> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).error.clone()
    }
}

impl Sink for AuditLog {
    fn record(&self, event: &Event) {
        if let Err(e) = self.append(event) {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.error.get_or_insert_with(|| format!("writing the audit log {}: {e}", self.path.display()));
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a verified log holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// How many records.
    pub records: u64,
    /// Their events, in order.
    pub events: Vec<Event>,
}

/// Why a log does not verify: the 1-based line and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct VerifyError {
    /// The 1-based line.
    pub line: u64,
    /// What is wrong with it.
    pub what: String,
}

#[derive(Deserialize)]
struct Record {
    v: u32,
    seq: u64,
    prev: String,
    event: Event,
}

/// Checks a whole log: every record's hash, its link to the previous one, the sequence, and
/// that the log ends with `session_end`.
pub fn verify(path: &Path) -> Result<Summary, VerifyError> {
    let err = |line: u64, what: String| VerifyError { line, what };
    let file = File::open(path).map_err(|e| err(0, format!("cannot open {}: {e}", path.display())))?;
    let mut summary = Summary::default();
    let mut prev = GENESIS.to_owned();
    let mut n = 0u64;
    for line in io::BufReader::new(file).split(b'\n') {
        n += 1;
        let line = line.map_err(|e| err(n, e.to_string()))?;
        let text = std::str::from_utf8(&line).map_err(|_| err(n, "not UTF-8".into()))?;
        let Some(idx) = text.rfind(",\"hash\":\"") else {
            return Err(err(n, "no hash: the record is cut or was not written by Palisade".into()));
        };
        let claimed = text[idx + 9..].strip_suffix("\"}").ok_or_else(|| err(n, "malformed hash field".into()))?;
        let body = format!("{}}}", &text[..idx]);
        if hex(&Sha256::digest(body.as_bytes())) != claimed {
            return Err(err(n, "the record was changed: its hash does not match".into()));
        }
        let rec: Record = serde_json::from_str(&body).map_err(|e| err(n, format!("malformed record: {e}")))?;
        if rec.v != SCHEMA_VERSION {
            return Err(err(n, format!("schema version {} (this Palisade reads {SCHEMA_VERSION})", rec.v)));
        }
        if rec.seq != n - 1 {
            return Err(err(
                n,
                format!("sequence {} where {} was expected: a record was removed, added or moved", rec.seq, n - 1),
            ));
        }
        if rec.prev != prev {
            return Err(err(n, "the chain is broken: a record before this one was removed, added or moved".into()));
        }
        prev = claimed.to_owned();
        summary.events.push(rec.event);
    }
    summary.records = n;
    match summary.events.last() {
        Some(Event::SessionEnd { .. }) => Ok(summary),
        Some(_) => Err(err(n, "the log stops before session_end: it was cut, or the session was killed".into())),
        None => Err(err(0, "the log is empty".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log path in a fresh directory, removed with the guard (tests leave nothing).
    struct Tmp(PathBuf);

    impl std::ops::Deref for Tmp {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for Tmp {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Tmp {
        fn drop(&mut self) {
            if let Some(d) = self.0.parent() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }

    fn tmp(name: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("palisade-audit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Tmp(d.join("log.jsonl"))
    }

    fn sample(path: &Path) {
        let log = AuditLog::create(path).unwrap();
        let start = Event::SessionStart {
            argv: vec!["sh".into(), "-c".into(), "echo \u{1b}[31mred\nline".into()],
            workspace: "/w".into(),
            mode: "namespaces".into(),
            landlock_abi: 7,
            network: "allowlist".into(),
            layers: vec!["built-in default".into()],
            missing: vec![],
            limits: "rlimits".into(),
            denials: "recorded".into(),
            session: None,
        };
        log.record(&start);
        log.record(&Event::Dns {
            name: "evil\n.com".into(),
            qtype: "A".into(),
            allowed: false,
            reason: "not listed".into(),
            answer: None,
            quiet: false,
        });
        log.record(&Event::Connection {
            id: None,
            via: "connect".into(),
            target: "a.com:443".into(),
            allowed: true,
            reason: "allow".into(),
            error: None,
            quiet: false,
        });
        log.record(&Event::SessionEnd { exit_code: Some(0), signal: None, duration_ms: 5, totals: log.totals() });
        assert!(log.error().is_none());
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
    }

    fn write(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    #[test]
    fn a_clean_log_verifies_and_escapes_hostile_strings() {
        let p = tmp("clean");
        sample(&p);
        let s = verify(&p).unwrap();
        assert_eq!(s.records, 4);
        let raw = std::fs::read_to_string(&p).unwrap();
        assert_eq!(raw.lines().count(), 4, "a newline in an event split a record");
        assert!(!raw.contains('\u{1b}'), "an escape sequence reached the file unescaped");
        assert!(AuditLog::create(&p).is_err(), "an existing log must never be reopened");
    }

    #[test]
    fn one_byte_changed_is_detected() {
        let p = tmp("edit");
        sample(&p);
        let mut raw = std::fs::read(&p).unwrap();
        let i = raw.iter().position(|&b| b == b'a').unwrap();
        raw[i] = b'b';
        std::fs::write(&p, raw).unwrap();
        assert!(verify(&p).unwrap_err().what.contains("changed") || verify(&p).is_err());
        let p = tmp("allowed-flip");
        sample(&p);
        let l: Vec<String> =
            lines(&p).into_iter().map(|l| l.replace("\"allowed\":false", "\"allowed\":true")).collect();
        write(&p, &l);
        assert!(verify(&p).unwrap_err().what.contains("changed"));
    }

    #[test]
    fn removed_reordered_and_cut_records_are_detected() {
        let p = tmp("remove");
        sample(&p);
        let mut l = lines(&p);
        l.remove(1);
        write(&p, &l);
        assert_eq!(verify(&p).unwrap_err().line, 2);
        let p = tmp("reorder");
        sample(&p);
        let mut l = lines(&p);
        l.swap(1, 2);
        write(&p, &l);
        assert!(verify(&p).is_err());
        let p = tmp("tail");
        sample(&p);
        let mut l = lines(&p);
        l.pop();
        write(&p, &l);
        assert!(verify(&p).unwrap_err().what.contains("stops before session_end"));
        let p = tmp("half");
        sample(&p);
        let raw = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, &raw[..raw.len() - 20]).unwrap();
        assert!(verify(&p).is_err());
    }
}
