//! Decisions: for a path, a network target or an environment variable, what the rules say
//! and which rule said it. Every backend, the gateway and `policy explain` use these.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::host::Target;
use crate::model::*;

/// What a path may be used for inside the sandbox, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Absent from the sandbox's view.
    None,
    /// Visible and read-only.
    Read,
    /// Visible and writable.
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::None => "denied (invisible)",
            Access::Read => "read-only",
            Access::Write => "read-write",
        })
    }
}

/// The decision for one path.
#[derive(Debug, Clone, Serialize)]
pub struct PathDecision<'a> {
    /// The path decided: absolute and canonical, as given.
    pub path: PathBuf,
    /// What the sandbox may do with it, after any `protect` cap.
    pub access: Access,
    /// The rule that decided visibility and write access (`None`: no rule covers the path).
    pub rule: Option<&'a PathRule>,
    /// A `protect` rule that capped the access at read-only.
    pub protected_by: Option<&'a PathRule>,
}

impl fmt::Display for PathDecision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.path.display(), self.access)?;
        match self.rule {
            Some(r) => {
                writeln!(f, "  rule:  {} {:?}  [{}]", r.kind.key(), r.origin.text, r.origin)?;
                if r.cache && self.access == Access::Read {
                    writeln!(
                        f,
                        "  inside: writable, into a private layer over this directory kept for this workspace across runs (a cache); the host's files stay as they are"
                    )?;
                }
            }
            None => writeln!(f, "  rule:  none matches; paths are invisible unless a rule grants them")?,
        }
        if let Some(p) = self.protected_by {
            writeln!(f, "  capped read-only by: protect {:?}  [{}]", p.origin.text, p.origin)?;
            if p.own_copy {
                writeln!(
                    f,
                    "  inside: writable, a copy of its own, kept for this workspace across runs (seeded from this file, again when it changes); this file stays as it is"
                )?;
            }
            if p.private_copy {
                writeln!(
                    f,
                    "  inside: a private copy that git may rewrite; changes end with the run, this file stays as it is"
                )?;
            }
        }
        Ok(())
    }
}

/// Picks the most specific rule covering `path`; at equal specificity the strongest kind
/// (deny > protect > write > read); at equal kind, the later (higher-layer) rule.
fn most_specific<'a>(rules: impl Iterator<Item = &'a PathRule>, path: &Path) -> Option<&'a PathRule> {
    let mut best: Option<(usize, PathKind, &PathRule)> = None;
    for r in rules {
        if let Some(s) = r.pattern.specificity(path)
            && best.is_none_or(|(bs, bk, _)| (s, r.kind) >= (bs, bk))
        {
            best = Some((s, r.kind, r));
        }
    }
    best.map(|(_, _, r)| r)
}

impl Rules {
    /// Decides `path`, which must be absolute and already canonical.
    pub fn decide_path(&self, path: &Path) -> PathDecision<'_> {
        self.decide_path_among(path, |_| true)
    }

    /// Decides `path` with only the rules `keep` accepts.
    pub fn decide_path_among(&self, path: &Path, keep: impl Fn(&PathRule) -> bool) -> PathDecision<'_> {
        let rules = || self.paths.iter().filter(|r| keep(r));
        let winner = most_specific(rules(), path);
        let (rule, protected_by) = match winner {
            Some(w) if w.kind == PathKind::Protect => {
                (most_specific(rules().filter(|r| r.kind != PathKind::Protect), path), Some(w))
            }
            other => (other, None),
        };
        let base = match rule.map(|r| r.kind) {
            Some(PathKind::Read) => Access::Read,
            Some(PathKind::Write) => Access::Write,
            Some(PathKind::Deny) | Some(PathKind::Protect) | None => Access::None,
        };
        let access = if protected_by.is_some() { base.min(Access::Read) } else { base };
        PathDecision { path: path.to_path_buf(), access, rule, protected_by }
    }

    /// Decides a connection to `target`.
    pub fn decide_net(&self, target: &Target) -> NetDecision<'_> {
        let (allowed, reason) = if self.mode() == NetMode::None {
            (false, NetReason::ModeNone { set_by: self.net_mode.as_ref() })
        } else if let Some(r) = self.net_deny.iter().rev().find(|r| r.pattern.matches(target)) {
            (false, NetReason::DeniedBy(r))
        } else if let Some(r) = self.net_allow.iter().rev().find(|r| r.pattern.matches(target)) {
            (true, NetReason::AllowedBy(r))
        } else {
            (false, NetReason::NotListed)
        };
        NetDecision { target: target.clone(), allowed, reason, allowlist: self.net_allow.len() }
    }

    /// Decides whether the variable `name` from the parent environment is passed in.
    pub fn decide_env(&self, name: &str) -> EnvDecision<'_> {
        if let Some(s) = self.env_set.iter().find(|s| s.name == name) {
            return EnvDecision::Set(s);
        }
        let Some(pass) = self.env_pass.iter().rev().find(|r| env_match(&r.pattern, name, false)) else {
            return EnvDecision::NotPassed;
        };
        let by_name = self.env_pass.iter().any(|r| r.pattern == name);
        match self.env_deny.iter().find(|r| env_match(&r.pattern, name, true)) {
            Some(deny) if !by_name => EnvDecision::Secret { pass, deny },
            _ => EnvDecision::Passed(pass),
        }
    }

    /// Builds the sandbox's environment from the parent's: passed variables, then `set`.
    /// Names or values that are not UTF-8 are dropped.
    pub fn environment(&self, parent: impl IntoIterator<Item = (OsString, OsString)>) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = parent
            .into_iter()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| matches!(self.decide_env(k), EnvDecision::Passed(_)))
            .collect();
        for s in &self.env_set {
            out.retain(|(k, _)| *k != s.name);
            out.push((s.name.clone(), s.value.clone()));
        }
        out.sort();
        out
    }
}

/// Matches an environment pattern where `*` stands for any run of characters.
pub fn env_match(pattern: &str, name: &str, ignore_case: bool) -> bool {
    fn go(p: &[u8], n: &[u8], ic: bool) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..], ic)),
            Some((c, rest)) => n
                .split_first()
                .is_some_and(|(d, nrest)| (if ic { c.eq_ignore_ascii_case(d) } else { c == d }) && go(rest, nrest, ic)),
        }
    }
    go(pattern.as_bytes(), name.as_bytes(), ignore_case)
}

/// The decision for one connection target.
#[derive(Debug, Clone, Serialize)]
pub struct NetDecision<'a> {
    /// The target decided: host and port (`github.com:443`).
    pub target: Target,
    /// Whether a connection to it may be made.
    pub allowed: bool,
    /// The rule, or the mode, that decided.
    pub reason: NetReason<'a>,
    /// How many allow rules the policy has (so that "not listed" can say whether the list
    /// was empty).
    pub allowlist: usize,
}

/// Why a network decision went the way it did: the rule or the mode that decided.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", content = "rule", rename_all = "snake_case")]
pub enum NetReason<'a> {
    /// The network mode is `none`.
    ModeNone {
        /// The `network.mode` setting that chose `none`; `None` when no layer sets a mode.
        set_by: Option<&'a Setting<NetMode>>,
    },
    /// A deny rule matched (deny beats allow).
    DeniedBy(&'a NetRule),
    /// An allow rule matched.
    AllowedBy(&'a NetRule),
    /// The mode is `allowlist` and nothing on the list matches.
    NotListed,
}

impl fmt::Display for NetDecision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.target, if self.allowed { "allowed" } else { "denied" })?;
        match &self.reason {
            NetReason::ModeNone { set_by: Some(s) } => {
                writeln!(f, "  rule:  network mode \"none\"  [{}]", s.origin)
            }
            NetReason::ModeNone { set_by: None } => {
                writeln!(f, "  rule:  network mode \"none\" (no layer enables the network)")
            }
            NetReason::DeniedBy(r) => {
                writeln!(f, "  rule:  deny {:?}  [{}]", r.origin.text, r.origin)
            }
            NetReason::AllowedBy(r) => {
                writeln!(f, "  rule:  allow {:?}  [{}]", r.origin.text, r.origin)
            }
            NetReason::NotListed if self.allowlist == 0 => {
                writeln!(f, "  rule:  not on the allowlist, which is empty: nothing is reachable")
            }
            NetReason::NotListed => writeln!(
                f,
                "  rule:  not on the allowlist ({} {}, none matches; `palisade policy show` lists them)",
                self.allowlist,
                if self.allowlist == 1 { "entry" } else { "entries" }
            ),
        }
    }
}

/// The decision for one environment variable.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnvDecision<'a> {
    /// Set by the policy to a fixed value.
    Set(&'a EnvSet),
    /// Passed through from the parent.
    Passed(&'a EnvRule),
    /// Matched a pass pattern but looks like a secret; pass it by exact name to keep it.
    Secret {
        /// The `pass` pattern that matched (`LC_*`).
        pass: &'a EnvRule,
        /// The `deny` pattern that matched, compared without regard to case (`*TOKEN*`).
        deny: &'a EnvRule,
    },
    /// Not on the pass list.
    NotPassed,
}
