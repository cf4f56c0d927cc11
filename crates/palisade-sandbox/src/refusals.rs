//! The end-of-run summary of what was refused: connections, HTTP requests, DNS names and
//! file accesses, counted from the audit records as they are written, so the user sees
//! refusals without `--watch` (off with `--quiet`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use palisade_monitor::Event;

/// At most this many distinct names are kept per kind; the rest are only counted.
const KEEP: usize = 64;
/// Names shown per kind in the summary.
const SHOW: usize = 3;

/// Refusals seen so far, by kind and name.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    seen: Mutex<[Kind; 5]>,
}

/// One kind's counts.
#[derive(Debug, Default, Clone)]
struct Kind {
    total: u64,
    by_name: BTreeMap<String, u64>,
}

impl Kind {
    fn add(&mut self, name: &str, n: u64) {
        self.total += n;
        if let Some(c) = self.by_name.get_mut(name) {
            *c += n;
        } else if self.by_name.len() < KEEP {
            self.by_name.insert(name.to_owned(), n);
        }
    }

    /// `12 connections (a.com:443 ×10, b.org:80 ×2)`.
    fn said(&self, one: &str, many: &str) -> Option<String> {
        if self.total == 0 {
            return None;
        }
        let mut top: Vec<(&String, &u64)> = self.by_name.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let names: Vec<String> =
            // Names come from the sandbox: escaped, never interpreted by the terminal.
            top.iter()
                .take(SHOW)
                .map(|(n, c)| {
                    let n = palisade_monitor::live::printable(n);
                    if **c > 1 { format!("{n} ×{c}") } else { n }
                })
                .collect();
        let more = if top.len() > SHOW { ", …" } else { "" };
        let what = if self.total == 1 { one } else { many };
        Some(format!("{} {what} ({}{more})", self.total, names.join(", ")))
    }
}

const CONNECTIONS: usize = 0;
const REQUESTS: usize = 1;
const DNS: usize = 2;
const FILES: usize = 3;
/// Refusals the policy expects (`network.quiet`), of any kind.
const EXPECTED: usize = 4;

impl Refusals {
    /// Counts one record (a folded `repeated` record counts as many).
    pub(crate) fn see(&self, event: &Event) {
        let (event, n) = match event {
            Event::Repeated { count, event } => (event.as_ref(), *count),
            e => (e, 1),
        };
        let (kind, name) = match event {
            Event::Connection { allowed: false, quiet: true, target, .. } => (EXPECTED, target.clone()),
            Event::Request { allowed: false, quiet: true, host, port, .. } => (EXPECTED, format!("{host}:{port}")),
            Event::Dns { allowed: false, quiet: true, name, .. } => (EXPECTED, name.clone()),
            Event::Connection { allowed: false, target, .. } => (CONNECTIONS, target.clone()),
            Event::Request { allowed: false, host, port, .. } => (REQUESTS, format!("{host}:{port}")),
            Event::Dns { allowed: false, name, .. } => (DNS, name.clone()),
            Event::Denial { object, .. } => (FILES, object.clone()),
            _ => return,
        };
        self.seen.lock().unwrap_or_else(|e| e.into_inner())[kind].add(&name, n);
    }

    /// The summary line, or `None` when nothing unexpected was refused (expected refusals
    /// alone are not worth a line; with others, they are counted at the end).
    pub(crate) fn summary(&self) -> Option<String> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut parts: Vec<String> = [
            seen[CONNECTIONS].said("connection", "connections"),
            seen[REQUESTS].said("HTTP request", "HTTP requests"),
            seen[DNS].said("DNS name", "DNS names"),
            seen[FILES].said("file access", "file accesses"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            return None;
        }
        if seen[EXPECTED].total > 0 {
            parts.push(format!("and {} expected (network.quiet)", seen[EXPECTED].total));
        }
        Some(parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(target: &str) -> Event {
        Event::Connection {
            id: None,
            via: "proxy".into(),
            target: target.into(),
            allowed: false,
            reason: "r".into(),
            error: None,
            quiet: false,
        }
    }

    #[test]
    fn refusals_are_counted_by_name_and_the_most_frequent_shown() {
        let r = Refusals::default();
        assert_eq!(r.summary(), None);
        for _ in 0..3 {
            r.see(&conn("a.example:443"));
        }
        r.see(&Event::Repeated { count: 10, event: Box::new(conn("b.example:443")) });
        r.see(&conn("c.example:80"));
        r.see(&conn("d.example:22"));
        let s = r.summary().unwrap();
        assert!(s.starts_with("15 connections (b.example:443 ×10, a.example:443 ×3, c.example:80, …)"), "{s}");
    }

    #[test]
    fn expected_refusals_alone_say_nothing_and_beside_others_are_only_counted() {
        let r = Refusals::default();
        let quiet = |t: &str| Event::Connection {
            id: None,
            via: "connect".into(),
            target: t.into(),
            allowed: false,
            reason: "r".into(),
            error: None,
            quiet: true,
        };
        r.see(&quiet("play.googleapis.com:443"));
        assert_eq!(r.summary(), None);
        r.see(&conn("evil.example:443"));
        assert_eq!(r.summary().unwrap(), "1 connection (evil.example:443), and 1 expected (network.quiet)");
    }

    #[test]
    fn names_from_the_sandbox_are_escaped() {
        let r = Refusals::default();
        r.see(&conn("\r\x1b[2Khide.example:443"));
        let s = r.summary().unwrap();
        assert!(!s.contains('\x1b') && !s.contains('\r') && s.contains("\\u{1b}[2Khide"), "{s}");
    }

    #[test]
    fn the_names_kept_are_bounded_but_every_refusal_is_counted() {
        let r = Refusals::default();
        for i in 0..10_000 {
            r.see(&conn(&format!("h{i}.example:443")));
        }
        assert!(r.summary().unwrap().starts_with("10000 connections"));
        assert!(r.seen.lock().unwrap()[CONNECTIONS].by_name.len() <= KEEP);
    }
}
