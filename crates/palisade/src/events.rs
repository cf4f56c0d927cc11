//! [`Events`]: the session's audit records, read from the supervisor's events pipe.

use std::io::{self, BufRead, BufReader};

use palisade_monitor::{Event, SCHEMA_VERSION};
use serde::Deserialize;

/// One audit record, as the session's audit log holds it (`docs/events.md`), without its
/// hash chain (`palisade audit verify` checks that on the log itself).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Record {
    /// Its place in the session, from 0 (`session_start`). A gap means records were
    /// dropped because this reader fell behind; the audit log has them.
    pub seq: u64,
    /// When it was recorded: milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What happened.
    pub event: Event,
}

#[derive(Deserialize)]
struct Line {
    v: u32,
    #[serde(flatten)]
    record: Record,
}

/// Parses one line of the stream: a record of this schema version, or why not.
pub(crate) fn parse(line: &str) -> io::Result<Record> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let line: Line = serde_json::from_str(line).map_err(|e| bad(format!("an unreadable audit record: {e}")))?;
    if line.v != SCHEMA_VERSION {
        return Err(bad(format!(
            "an audit record of schema version {} (this library reads {SCHEMA_VERSION}): update the palisade crate or the program",
            line.v
        )));
    }
    Ok(line.record)
}

/// The records of one session, in order, as the supervisor writes them; the iteration ends
/// when the supervisor exits (after `session_end`, unless it was killed). Blocks while
/// waiting for the next record; read it from a thread of its own when you also wait for
/// the child. A record this library cannot read is an [`io::ErrorKind::InvalidData`] item,
/// and the iteration goes on.
///
/// The supervisor never waits for this reader: one that falls behind by more than the
/// stream's buffer misses records (see [`Record::seq`]).
#[derive(Debug)]
pub struct Events {
    reader: BufReader<std::fs::File>,
    line: String,
}

impl Events {
    pub(crate) fn new(pipe: std::fs::File) -> Events {
        Events { reader: BufReader::new(pipe), line: String::new() }
    }
}

impl Iterator for Events {
    type Item = io::Result<Record>;

    fn next(&mut self) -> Option<io::Result<Record>> {
        self.line.clear();
        match self.reader.read_line(&mut self.line) {
            Ok(0) => None,
            Ok(_) => Some(parse(self.line.trim_end())),
            Err(e) => Some(Err(e)),
        }
    }
}
