//! Folding repeated records, so that a flood of identical denials costs a counter instead of
//! a record each: within a one-second window, the first of a kind of record is written as is
//! and the identical ones after it are counted; when the window closes, one `repeated` record
//! carries the count. Memory is bounded by [`MAX_KEYS`] whatever arrives; past it the window
//! closes early.
//!
//! Only refusals (connections, Landlock denials) and DNS answers fold: an exec, a tripwire, a limit, an allowed connection or
//! a session boundary is always written on its own.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::event::Event;

/// Length of a folding window.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Distinct records tracked in one window.
pub const MAX_KEYS: usize = 4096;

/// Folds identical refusals within a second into one `repeated` record.
#[derive(Debug, Default)]
pub struct Folder {
    started: Option<Instant>,
    /// The record's JSON → (the event, how many were folded after the first).
    seen: HashMap<String, (Event, u64)>,
}

fn foldable(e: &Event) -> bool {
    matches!(
        e,
        Event::Dns { .. }
            | Event::Connection { allowed: false, .. }
            | Event::Request { allowed: false, .. }
            | Event::Denial { .. }
    )
}

impl Folder {
    /// What to write for `event` arriving at `now`, in order: `repeated` records for a window
    /// that closed, then `event` itself unless it was folded.
    pub fn push(&mut self, event: &Event, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        let expired = self.started.is_some_and(|s| now.duration_since(s) >= WINDOW);
        if expired || self.seen.len() >= MAX_KEYS || matches!(event, Event::SessionEnd { .. }) {
            out.extend(self.flush());
        }
        if !foldable(event) {
            out.push(event.clone());
            return out;
        }
        let Ok(key) = serde_json::to_string(event) else {
            out.push(event.clone());
            return out;
        };
        self.started.get_or_insert(now);
        match self.seen.get_mut(&key) {
            Some((_, n)) => *n += 1,
            None => {
                self.seen.insert(key, (event.clone(), 0));
                out.push(event.clone());
            }
        }
        out
    }

    /// Closes the window: a `repeated` record for each record folded in it.
    pub fn flush(&mut self) -> Vec<Event> {
        self.started = None;
        let mut out: Vec<Event> = self
            .seen
            .drain()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(_, (e, n))| Event::Repeated { count: n, event: Box::new(e) })
            .collect();
        // Deterministic order for readers and tests.
        out.sort_by_cached_key(|e| serde_json::to_string(e).unwrap_or_default());
        out
    }

    /// Distinct records held now.
    pub fn held(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Totals;

    fn dns(name: &str) -> Event {
        Event::Dns {
            name: name.into(),
            qtype: "A".into(),
            allowed: false,
            reason: "no".into(),
            answer: None,
            quiet: false,
        }
    }

    #[test]
    fn identical_records_fold_into_one_count() {
        let mut f = Folder::default();
        let t0 = Instant::now();
        let mut written = Vec::new();
        for i in 0..1000u64 {
            written.extend(f.push(&dns("evil.test"), t0 + Duration::from_micros(i)));
        }
        written.extend(f.push(&Event::Tripwire { path: "~/.ssh/id_ed25519".into() }, t0));
        written.extend(f.push(&dns("evil.test"), t0 + WINDOW));
        written.extend(f.flush());
        assert_eq!(
            written,
            vec![
                dns("evil.test"),
                Event::Tripwire { path: "~/.ssh/id_ed25519".into() },
                Event::Repeated { count: 999, event: Box::new(dns("evil.test")) },
                dns("evil.test"),
            ]
        );
        let mut totals = Totals::default();
        written.iter().for_each(|e| totals.add(e));
        assert_eq!(totals.dns_denied, 1001);
        assert_eq!(totals.tripwires, 1);
    }

    #[test]
    fn execs_and_allowed_connections_never_fold() {
        let mut f = Folder::default();
        let t0 = Instant::now();
        let exec = Event::Exec { pid: 2, ppid: 1, path: "/bin/true".into(), argv: vec![], cwd: "/".into() };
        let n: usize = (0..10).map(|_| f.push(&exec, t0).len()).sum();
        assert_eq!(n, 10);
        assert_eq!(f.held(), 0);
    }

    #[test]
    fn distinct_records_keep_memory_bounded() {
        let mut f = Folder::default();
        let t0 = Instant::now();
        let mut written = 0usize;
        for i in 0..100_000u64 {
            written += f.push(&dns(&format!("n{i}.test")), t0).len();
            assert!(f.held() <= MAX_KEYS);
        }
        assert_eq!(written, 100_000, "distinct records are all written");
    }

    #[test]
    fn session_end_flushes_first() {
        let mut f = Folder::default();
        let t0 = Instant::now();
        f.push(&dns("a.test"), t0);
        f.push(&dns("a.test"), t0);
        let end = Event::SessionEnd { exit_code: Some(0), signal: None, duration_ms: 1, totals: Totals::default() };
        let out = f.push(&end, t0);
        assert!(matches!(out[0], Event::Repeated { count: 1, .. }));
        assert_eq!(out[1], end);
    }
}
