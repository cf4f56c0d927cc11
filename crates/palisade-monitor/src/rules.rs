//! Monitor rules (`[[monitor.rules]]`) evaluated over the event stream, with bounded memory:
//! a rate rule keeps at most its threshold + 1 timestamps, whatever the flood.
//!
//! Evaluated: `tripwire`, `limit`, `exec matches`, `dns_exfil`, the `execs`,
//! `denied_connections` and `denied_dns` rates, and the byte budgets (on the gateway's
//! `traffic` events, see [`byte_marks`]), and `denied_files` (Landlock's `denial` events with
//! an `fs.` blocker, recorded when the kernel's audit log can be read).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use palisade_policy::model::MonitorRule;
use palisade_policy::monitor::{Action, ByteCounter, Condition, Counter};

use crate::event::Event;

/// A rule that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The rule's name (or its condition when unnamed).
    pub rule: String,
    /// Its condition, as written.
    pub condition: String,
    /// What to do.
    pub action: Action,
    /// What made it fire, in words.
    pub reason: String,
}

impl Fired {
    /// The `monitor_action` record of it.
    pub fn event(&self) -> Event {
        Event::MonitorAction {
            rule: self.rule.clone(),
            condition: self.condition.clone(),
            action: self.action.to_string(),
            reason: self.reason.clone(),
        }
    }
}

#[derive(Debug)]
struct State {
    /// For `exec matches`: the compiled pattern.
    matcher: Option<globset::GlobMatcher>,
    rule: MonitorRule,
    name: String,
    times: VecDeque<Instant>,
    /// A rate rule fires once per window, not on every event past the threshold.
    quiet_until: Option<Instant>,
    /// A byte rule fires once per session.
    done: bool,
}

/// The rules of a session.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<State>,
}

impl Engine {
    /// An engine with nothing seen yet.
    pub fn new(rules: &[MonitorRule]) -> Engine {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, r)| State {
                matcher: match &r.when {
                    Condition::ExecMatches { glob } => globset::Glob::new(glob).ok().map(|g| g.compile_matcher()),
                    _ => None,
                },
                name: r.name.clone().unwrap_or_else(|| format!("rule {}", i + 1)),
                rule: r.clone(),
                times: VecDeque::new(),
                quiet_until: None,
                done: false,
            })
            .collect();
        Engine { rules }
    }

    /// Feeds one event; returns the rules it made fire.
    pub fn observe(&mut self, event: &Event, now: Instant) -> Vec<Fired> {
        let mut fired = Vec::new();
        for st in &mut self.rules {
            let reason = match (&st.rule.when, event) {
                (Condition::Rate { counter, more_than, within }, e) => {
                    let hit = match (counter, e) {
                        (Counter::DeniedConnections, Event::Connection { allowed: false, quiet: false, .. })
                        | (Counter::DeniedConnections, Event::Request { allowed: false, quiet: false, .. })
                        | (Counter::DeniedDns, Event::Dns { allowed: false, quiet: false, .. })
                        | (Counter::Execs, Event::Exec { .. }) => true,
                        (Counter::DeniedFiles, Event::Denial { blockers, .. }) => {
                            blockers.iter().any(|b| b.starts_with("fs."))
                        }
                        _ => false,
                    };
                    if !hit {
                        continue;
                    }
                    rate(st, *more_than, *within, now)
                }
                (Condition::DnsExfil, Event::Dns { name, .. }) => exfil_like(name),
                (Condition::Tripwire, Event::Tripwire { path }) => Some(format!("{path} was opened")),
                (Condition::Bytes { counter, more_than }, Event::Traffic { direction, total }) => {
                    let dir = match counter {
                        ByteCounter::UploadBytes => "upload",
                        ByteCounter::DownloadBytes => "download",
                    };
                    if st.done || direction != dir || *total <= *more_than {
                        continue;
                    }
                    st.done = true;
                    Some(format!("the session's {dir} reached {total} bytes"))
                }
                (Condition::Limit, Event::Limit { limit, detail }) => Some(format!("{limit}: {detail}")),
                (Condition::ExecMatches { .. }, Event::Exec { argv, path, .. }) => {
                    let line = if argv.is_empty() { path.clone() } else { argv.join(" ") };
                    st.matcher.as_ref().filter(|m| m.is_match(&line)).map(|_| format!("{line:?} was run"))
                }
                _ => None,
            };
            if let Some(reason) = reason {
                fired.push(Fired {
                    rule: st.name.clone(),
                    condition: st.rule.when.to_string(),
                    action: st.rule.action,
                    reason,
                });
            }
        }
        fired
    }
}

/// The byte totals the gateway must report when crossed (`traffic` events): each byte rule's
/// threshold, for upload and for download, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ByteMarks {
    /// Upload totals, in bytes.
    pub up: Vec<u64>,
    /// Download totals, in bytes.
    pub down: Vec<u64>,
}

/// The [`ByteMarks`] of a policy's rules.
pub fn byte_marks(rules: &[MonitorRule]) -> ByteMarks {
    let mut m = ByteMarks::default();
    for r in rules {
        if let Condition::Bytes { counter, more_than } = r.when {
            match counter {
                ByteCounter::UploadBytes => m.up.push(more_than),
                ByteCounter::DownloadBytes => m.down.push(more_than),
            }
        }
    }
    m.up.sort_unstable();
    m.up.dedup();
    m.down.sort_unstable();
    m.down.dedup();
    m
}

fn rate(st: &mut State, more_than: u64, within: Duration, now: Instant) -> Option<String> {
    st.times.push_back(now);
    while st.times.front().is_some_and(|t| now.duration_since(*t) > within) {
        st.times.pop_front();
    }
    let cap = usize::try_from(more_than).unwrap_or(usize::MAX).saturating_add(1);
    while st.times.len() > cap {
        st.times.pop_front();
    }
    if (st.times.len() as u64) <= more_than || st.quiet_until.is_some_and(|q| now < q) {
        return None;
    }
    st.quiet_until = Some(now + within);
    Some(format!("more than {more_than} in {}", humantime_secs(within)))
}

fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// A DNS name that looks like data smuggled in labels: a label over 40 bytes, or a long
/// label made of hex or base32/64-like characters with high entropy.
pub fn exfil_like(name: &str) -> Option<String> {
    for label in name.split('.') {
        if label.len() > 40 {
            return Some(format!("a {}-byte label", label.len()));
        }
        if label.len() >= 20 && entropy(label) > 3.5 {
            return Some(format!("a high-entropy label ({:.1} bits per character)", entropy(label)));
        }
    }
    None
}

fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

/// The session's monitor: every event goes to the audit log and through the rules; a rule
/// that fires is recorded, and `alert` and `kill` call back into the caller (which prints,
/// and stops the sandbox).
pub struct Monitor {
    log: std::sync::Arc<crate::audit::AuditLog>,
    engine: std::sync::Mutex<Engine>,
    /// Held while writing, so records from the gateway, exec and tripwire threads keep the
    /// order in which they were folded.
    fold: std::sync::Mutex<crate::fold::Folder>,
    on_alert: Box<dyn Fn(&Fired) + Send + Sync>,
    on_kill: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").field("log", &self.log.path()).finish()
    }
}

impl Monitor {
    /// A monitor that records into `log`, evaluates `rules`, and calls `on_alert` for an
    /// `alert` or `kill` and `on_kill` for a `kill`.
    pub fn new(
        log: std::sync::Arc<crate::audit::AuditLog>,
        rules: &[MonitorRule],
        on_alert: Box<dyn Fn(&Fired) + Send + Sync>,
        on_kill: Box<dyn Fn() + Send + Sync>,
    ) -> Monitor {
        Monitor { log, engine: std::sync::Mutex::new(Engine::new(rules)), fold: Default::default(), on_alert, on_kill }
    }
}

impl crate::audit::Sink for Monitor {
    fn flush(&self) {
        let mut fold = self.fold.lock().unwrap_or_else(|e| e.into_inner());
        for e in fold.flush() {
            self.log.record(&e);
        }
    }

    fn record(&self, event: &Event) {
        let now = Instant::now();
        {
            let mut fold = self.fold.lock().unwrap_or_else(|e| e.into_inner());
            for e in fold.push(event, now) {
                self.log.record(&e);
            }
        }
        let fired = self.engine.lock().unwrap_or_else(|e| e.into_inner()).observe(event, now);
        for f in fired {
            self.log.record(&f.event());
            match f.action {
                Action::Log => {}
                Action::Alert => (self.on_alert)(&f),
                Action::Kill => {
                    (self.on_alert)(&f);
                    (self.on_kill)();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::model::{LayerKind, Origin};

    fn rule(when: &str, action: Action) -> MonitorRule {
        let site = palisade_policy::Site { source: "t".into(), line: 1, column: 1, key: "monitor.rules".into() };
        MonitorRule {
            name: None,
            when: Condition::parse(when).unwrap(),
            action,
            origin: Origin { layer: LayerKind::User, site, text: when.into() },
        }
    }

    fn denied() -> Event {
        Event::Connection {
            id: None,
            via: "http".into(),
            target: "x.com:443".into(),
            allowed: false,
            reason: "no".into(),
            error: None,
            quiet: false,
        }
    }

    #[test]
    fn limit_rules_fire_on_limit_events_only() {
        let mut e = Engine::new(&[rule("limit", Action::Kill)]);
        let now = Instant::now();
        assert!(e.observe(&denied(), now).is_empty());
        let hit = Event::Limit { limit: "upload".into(), detail: "spent".into() };
        let fired = e.observe(&hit, now);
        assert_eq!(fired.len(), 1);
        assert_eq!((fired[0].action, fired[0].reason.as_str()), (Action::Kill, "upload: spent"));
    }

    #[test]
    fn a_burst_fires_once_per_window() {
        let mut e = Engine::new(&[rule("denied_connections > 3 in 60s", Action::Alert)]);
        let t0 = Instant::now();
        let fired: Vec<_> = (0..10).flat_map(|i| e.observe(&denied(), t0 + Duration::from_millis(i))).collect();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].action, Action::Alert);
        // Spread out, the same count does not fire.
        let mut e = Engine::new(&[rule("denied_connections > 3 in 1s", Action::Kill)]);
        let fired: Vec<_> = (0..10).flat_map(|i| e.observe(&denied(), t0 + Duration::from_secs(i * 2))).collect();
        assert!(fired.is_empty());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood() {
        let mut e = Engine::new(&[rule("denied_connections > 5 in 1h", Action::Log)]);
        let t0 = Instant::now();
        for i in 0..1_000_000u64 {
            e.observe(&denied(), t0 + Duration::from_nanos(i));
        }
        assert!(e.rules[0].times.len() <= 6);
    }

    #[test]
    fn byte_rules_fire_once_on_traffic_past_their_threshold() {
        let rules = [rule("upload_bytes > 1MiB", Action::Kill), rule("download_bytes > 10MiB", Action::Alert)];
        assert_eq!(byte_marks(&rules), ByteMarks { up: vec![1 << 20], down: vec![10 << 20] });
        let mut e = Engine::new(&rules);
        let now = Instant::now();
        let t = |d: &str, n: u64| Event::Traffic { direction: d.into(), total: n };
        assert!(e.observe(&t("upload", 1 << 20), now).is_empty());
        assert!(e.observe(&t("download", 2 << 20), now).is_empty());
        let fired = e.observe(&t("upload", (1 << 20) + 1), now);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].action, Action::Kill);
        assert!(e.observe(&t("upload", 5 << 20), now).is_empty(), "fired twice");
    }

    #[test]
    fn dns_exfil() {
        let mut e = Engine::new(&[rule("dns_exfil", Action::Alert)]);
        let dns = |n: &str| Event::Dns {
            name: n.into(),
            qtype: "A".into(),
            allowed: false,
            reason: "no".into(),
            answer: None,
            quiet: false,
        };
        assert!(e.observe(&dns("api.github.com"), Instant::now()).is_empty());
        assert_eq!(e.observe(&dns(&format!("{}.evil.tld", "a".repeat(50))), Instant::now()).len(), 1);
        assert_eq!(e.observe(&dns("4f2a9c7b1e8d3f6a0b5c2e9d.evil.tld"), Instant::now()).len(), 1);
    }
}
