//! Monitor rule conditions and actions (`[[monitor.rules]]`), parsed and validated here;
//! the monitor evaluates them.
//!
//! Grammar of `when`:
//! - `tripwire` — a decoy file was opened;
//! - `limit` — a resource limit was reached;
//! - `dns_exfil` — a DNS name with very long or high-entropy labels was queried;
//! - `COUNTER > N in DURATION` — `denied_connections`, `denied_dns`, `denied_files` or `execs`;
//! - `BYTES > SIZE` — `upload_bytes` or `download_bytes` over the whole session;
//! - `exec matches "GLOB"` — a command line (argv joined by spaces) matching a glob.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::units::{format_size, parse_duration, parse_size};

/// What a rate condition (`COUNTER > N in DURATION`) counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Counter {
    /// `denied_connections`: refused connections and refused HTTP requests.
    DeniedConnections,
    /// `denied_dns`: DNS queries the stub refused.
    DeniedDns,
    /// `denied_files`: file accesses Landlock refused (read from the kernel's audit log, so
    /// only as root with audit on).
    DeniedFiles,
    /// `execs`: programs executed.
    Execs,
}

/// What a byte condition (`BYTES > SIZE`) counts, over the whole session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ByteCounter {
    /// `upload_bytes`: bytes out of the sandbox through the gateway.
    UploadBytes,
    /// `download_bytes`: bytes into the sandbox through the gateway.
    DownloadBytes,
}

/// A monitor rule's `when` (the grammar is in the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Condition {
    /// `tripwire`: a decoy file was opened.
    Tripwire,
    /// `limit`: a resource limit was reached.
    Limit,
    /// `dns_exfil`: a DNS name with very long or high-entropy labels was queried.
    DnsExfil,
    /// `COUNTER > N in DURATION`: more than `more_than` events within `within`.
    Rate {
        /// What is counted (`denied_connections`).
        counter: Counter,
        /// The count to exceed (`20`).
        more_than: u64,
        /// The window the events must fall in (`60s`).
        within: Duration,
    },
    /// `BYTES > SIZE`: more than `more_than` bytes one way over the whole session.
    Bytes {
        /// Which way (`upload_bytes`).
        counter: ByteCounter,
        /// The bytes to exceed (`100MiB` is 104,857,600).
        more_than: u64,
    },
    /// `exec matches "GLOB"`: a command line (argv joined by spaces) matches the glob.
    ExecMatches {
        /// The glob, unquoted and checked to compile (`curl *`).
        glob: String,
    },
}

/// A monitor rule's `action`: what to do when its condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Record an event.
    Log,
    /// Record an event and show a prominent message.
    Alert,
    /// Stop the whole sandbox at once.
    Kill,
}

impl Action {
    /// Parses `log`, `alert` or `kill` (lower case only).
    pub fn parse(text: &str) -> Result<Action, String> {
        match text {
            "log" => Ok(Action::Log),
            "alert" => Ok(Action::Alert),
            "kill" => Ok(Action::Kill),
            other => Err(format!("unknown action `{other}` (expected log, alert or kill)")),
        }
    }
}

impl Condition {
    /// Parses a `when` text such as `denied_connections > 20 in 60s`; the error says what
    /// was expected.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let t = text.trim();
        match t {
            "tripwire" => return Ok(Condition::Tripwire),
            "limit" => return Ok(Condition::Limit),
            "dns_exfil" => return Ok(Condition::DnsExfil),
            _ => {}
        }
        if let Some(rest) = t.strip_prefix("exec matches ") {
            let rest = rest.trim();
            let glob = rest
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .or_else(|| rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
                .ok_or_else(|| format!("`{t}`: the pattern must be quoted, e.g. exec matches \"curl *\""))?;
            if glob.is_empty() {
                return Err(format!("`{t}`: empty pattern"));
            }
            globset::Glob::new(glob).map_err(|e| format!("`{t}`: invalid pattern: {}", e.kind()))?;
            return Ok(Condition::ExecMatches { glob: glob.to_owned() });
        }
        let words: Vec<&str> = t.split_whitespace().collect();
        let usage = || {
            format!(
                "`{t}` is not a condition; expected one of: tripwire, limit, dns_exfil, \
                 `denied_connections > 20 in 60s` (also denied_dns, denied_files, execs), \
                 `upload_bytes > 100MiB` (also download_bytes), `exec matches \"GLOB\"`"
            )
        };
        match words.as_slice() {
            [name, ">", n, "in", window] => {
                let counter = match *name {
                    "denied_connections" => Counter::DeniedConnections,
                    "denied_dns" => Counter::DeniedDns,
                    "denied_files" => Counter::DeniedFiles,
                    "execs" => Counter::Execs,
                    _ => return Err(usage()),
                };
                let more_than = n.parse().map_err(|_| format!("`{t}`: `{n}` is not a whole number"))?;
                let within = parse_duration(window).map_err(|e| format!("`{t}`: {e}"))?;
                Ok(Condition::Rate { counter, more_than, within })
            }
            [name, ">", size] => {
                let counter = match *name {
                    "upload_bytes" => ByteCounter::UploadBytes,
                    "download_bytes" => ByteCounter::DownloadBytes,
                    _ => return Err(usage()),
                };
                let more_than = parse_size(size).map_err(|e| format!("`{t}`: {e}"))?;
                Ok(Condition::Bytes { counter, more_than })
            }
            _ => Err(usage()),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Tripwire => f.write_str("tripwire"),
            Condition::Limit => f.write_str("limit"),
            Condition::DnsExfil => f.write_str("dns_exfil"),
            Condition::Rate { counter, more_than, within } => {
                let name = match counter {
                    Counter::DeniedConnections => "denied_connections",
                    Counter::DeniedDns => "denied_dns",
                    Counter::DeniedFiles => "denied_files",
                    Counter::Execs => "execs",
                };
                write!(f, "{name} > {more_than} in {}", humantime::format_duration(*within))
            }
            Condition::Bytes { counter, more_than } => {
                let name = match counter {
                    ByteCounter::UploadBytes => "upload_bytes",
                    ByteCounter::DownloadBytes => "download_bytes",
                };
                write!(f, "{name} > {}", format_size(*more_than).replace(' ', ""))
            }
            Condition::ExecMatches { glob } => write!(f, "exec matches {glob:?}"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Log => "log",
            Action::Alert => "alert",
            Action::Kill => "kill",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        assert_eq!(Condition::parse("tripwire").unwrap(), Condition::Tripwire);
        assert_eq!(
            Condition::parse("denied_connections > 20 in 60s").unwrap(),
            Condition::Rate { counter: Counter::DeniedConnections, more_than: 20, within: Duration::from_secs(60) }
        );
        assert_eq!(
            Condition::parse("upload_bytes > 100MiB").unwrap(),
            Condition::Bytes { counter: ByteCounter::UploadBytes, more_than: 100 << 20 }
        );
        assert_eq!(
            Condition::parse("exec matches \"curl *\"").unwrap(),
            Condition::ExecMatches { glob: "curl *".into() }
        );
        for bad in [
            "",
            "tripwires",
            "denied_connections > x in 60s",
            "execs > 5 in never",
            "uploads > 1G",
            "exec matches curl",
            "exec matches \"[\"",
        ] {
            assert!(Condition::parse(bad).is_err(), "{bad:?} accepted");
        }
        // Display round-trips.
        for s in ["denied_connections > 20 in 1m", "upload_bytes > 100MiB", "exec matches \"rm -rf *\""] {
            assert_eq!(
                Condition::parse(&Condition::parse(s).unwrap().to_string()).unwrap(),
                Condition::parse(s).unwrap()
            );
        }
    }

    #[test]
    fn actions() {
        assert_eq!(Action::parse("kill").unwrap(), Action::Kill);
        assert!(Action::parse("Kill").is_err());
    }
}
