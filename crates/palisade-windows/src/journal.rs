//! The journal of every change Palisade makes to the host on Windows: written before the
//! change is made, so a crash between the two leaves a record of what may be there.
//!
//! One file of JSON lines (`%LOCALAPPDATA%\palisade\journal.jsonl`), appended and flushed to
//! disk before each change. Each line is a [`Record`]: the intent to place an exact ACL entry
//! (path, kind, trustee SID, mask, inheritance), its confirmation, its revocation, the making
//! and removal of a placeholder. Replaying the lines gives [`State`]: what is in place.
//!
//! Rules:
//! - An ACL entry is placed once and kept: each run checks that every entry of its plan is on
//!   its object (one read of the object's DACL; an object replaced since has lost it) and
//!   places only what is missing, so the next run of a workspace usually changes nothing.
//!   A plan's capability is named after exactly its entries (`plan::WORKSPACE_CAPABILITY`),
//!   so entries of another plan are never this run's, and are left for the runs that hold
//!   them. [`forget`] revokes every entry of one workspace's capabilities, exactly the tuples
//!   recorded, nothing else. A deny entry whose object is gone at set-up stops the run.
//! - The journal is locked (`LockFileEx` through `File::lock`) while it is open, so a run's
//!   set-up and `repair` never interleave.
//! - A placeholder is made with its deny entry in one step, shared by the runs of a
//!   workspace that overlap (a run planned while another runs sees it as an existing
//!   protected path and joins it), and removed when the last of them ends; [`repair`]
//!   removes what runs that died left, and revokes entries whose intent was recorded but
//!   whose confirmation was not.
//! - With ACL changes forbidden by the machine's administrator ([`Mode::Forbid`]),
//!   [`ensure`] changes nothing and fails with every entry it would have needed: path,
//!   principal and right.
//!
//! The host side is a trait ([`Host`]), so all of this is tested on Linux with a recording
//! host; Windows' implementation is `sys::acl`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::{Ace, Made, rights};

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Record {
    /// About to place `ace`.
    Intent {
        /// The entry.
        ace: Entry,
    },
    /// `ace` is in place.
    Applied {
        /// The entry.
        ace: Entry,
    },
    /// `ace` was removed.
    Revoked {
        /// The entry.
        ace: Entry,
    },
    /// About to make a placeholder for run `pid`.
    Made {
        /// Where.
        path: String,
        /// The supervisor's process id.
        pid: u32,
    },
    /// Run `pid` no longer needs the placeholder at `path` (removed when no other run
    /// does; `pid` absent: removed whatever ran).
    Removed {
        /// Where.
        path: String,
        /// The run that let it go.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
}

/// An ACL entry as journaled: the exact tuple a revoke removes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entry {
    /// The object.
    pub path: String,
    /// `allow` or `deny`.
    pub kind: String,
    /// The trustee.
    pub sid: String,
    /// The access mask.
    pub mask: u32,
    /// The ACE's inheritance flags.
    pub flags: u32,
    /// Set on a link itself.
    #[serde(default)]
    pub on_link: bool,
    /// The capability the SID belongs to (`palisade.workspace.TAG.SET`).
    #[serde(default)]
    pub capability: String,
}

impl From<&Ace> for Entry {
    fn from(a: &Ace) -> Entry {
        Entry {
            path: a.path.clone(),
            kind: match a.kind {
                rights::AceKind::Allow => "allow".into(),
                rights::AceKind::Deny => "deny".into(),
            },
            sid: a.sid.0.clone(),
            mask: a.mask,
            flags: a.inherit.flags(),
            on_link: a.on_link,
            capability: a.capability.clone(),
        }
    }
}

/// Where an entry stands after replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Intended, not confirmed: it may or may not be there.
    Intended,
    /// In place.
    Applied,
}

/// What the journal says is on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// ACL entries not revoked.
    pub entries: BTreeMap<Entry, Status>,
    /// Placeholders not removed, with the runs that use them (parallel runs of one
    /// workspace share each placeholder; the last one removes it).
    pub made: BTreeMap<String, Vec<u32>>,
}

/// Whether ACL changes are allowed on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Place the entries the plan needs.
    Apply,
    /// Never change an ACL (the administrator's setting): fail with what would be needed.
    Forbid,
}

/// What the host does for the journal (Windows: `sys::acl`).
pub trait Host {
    /// Places `e` on its object (merged into the DACL, canonical order); `false` when the
    /// object does not exist (nothing placed: a grant of a folder the host does not have).
    ///
    /// # Errors
    /// The system's error.
    fn apply(&mut self, e: &Entry) -> io::Result<bool>;
    /// Whether `e` is on its object now (an entry of the same type, trustee and flags whose
    /// mask holds `e`'s); `None` when the object does not exist. Asked on every run: an
    /// object replaced since (a file renamed over it) has lost its explicit entries.
    ///
    /// # Errors
    /// The system's error.
    fn present(&mut self, e: &Entry) -> io::Result<Option<bool>>;
    /// Removes exactly `e` (same type, trustee, mask and flags), if present.
    ///
    /// # Errors
    /// The system's error (an absent object is no error).
    fn revoke(&mut self, e: &Entry) -> io::Result<()>;
    /// Makes a placeholder (an empty directory, or a file with these contents) with `deny`
    /// already on it (in the security descriptor it is created with: no moment exists in
    /// which it is writable from inside); fails when something is there.
    ///
    /// # Errors
    /// The system's error.
    fn make(&mut self, m: &Made, deny: Option<&Entry>) -> io::Result<()>;
    /// Removes the placeholder at `path` if it is still what a placeholder is (an empty
    /// directory, or a file of at most 64 bytes); leaves anything else.
    ///
    /// # Errors
    /// The system's error.
    fn remove(&mut self, path: &str) -> io::Result<()>;
    /// Whether the process `pid` is running.
    fn alive(&self, pid: u32) -> bool;
}

/// The journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Opens (creating) the journal at `path` and locks it until dropped (waiting for
    /// another process that holds it).
    ///
    /// # Errors
    /// When it cannot be opened for appending or locked.
    pub fn open(path: &Path) -> io::Result<Journal> {
        let mut file = OpenOptions::new().create(true).append(true).read(true).open(path)?;
        file.lock()?;
        // A line cut by a crash is ended, so the next record starts a line of its own.
        let len = file.metadata()?.len();
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        Ok(Journal { path: path.to_path_buf(), file })
    }

    /// Appends `r` and flushes it to disk before returning (a write-ahead record).
    ///
    /// # Errors
    /// When the write or the flush fails: the change must then not be made.
    pub fn record(&mut self, r: &Record) -> io::Result<()> {
        let mut line = serde_json::to_string(r).map_err(io::Error::other)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()
    }

    /// Replays the journal. A line that does not parse (a write cut by a crash) is skipped.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn state(&self) -> io::Result<State> {
        let mut s = State::default();
        for line in BufReader::new(File::open(&self.path)?).lines() {
            let Ok(r) = serde_json::from_str::<Record>(&line?) else { continue };
            match r {
                Record::Intent { ace } => {
                    s.entries.entry(ace).or_insert(Status::Intended);
                }
                Record::Applied { ace } => {
                    s.entries.insert(ace, Status::Applied);
                }
                Record::Revoked { ace } => {
                    s.entries.remove(&ace);
                }
                Record::Made { path, pid } => {
                    s.made.entry(path).or_default().push(pid);
                }
                Record::Removed { path, pid: Some(pid) } => {
                    if let Some(runs) = s.made.get_mut(&path) {
                        runs.retain(|p| *p != pid);
                        if runs.is_empty() {
                            s.made.remove(&path);
                        }
                    }
                }
                Record::Removed { path, pid: None } => {
                    s.made.remove(&path);
                }
            }
        }
        Ok(s)
    }
}

/// Why [`ensure`] did not put every entry in place.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    /// ACL changes are forbidden here and entries are missing.
    #[error(
        "this machine forbids Palisade to change ACLs, and the run needs these entries that are not in place: {}; an administrator can place them, or allow changes in %ProgramData%\\palisade\\machine.toml",
        describe(.0)
    )]
    Forbidden(Vec<Entry>),
    /// A path the plan protects is gone (changed on the host between planning and set-up).
    #[error("{} was there when the run was planned and is gone now; run again", .0.path)]
    Vanished(Entry),
    /// The journal or the host failed at `entry`.
    #[error("placing {}: {source}", describe(std::slice::from_ref(entry)))]
    Host {
        /// The entry.
        entry: Entry,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn describe(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(|e| format!("{} {} {:#x} ({}) for {}", e.path, e.kind, e.mask, rights::name(e.mask), e.sid))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Puts every entry of `acl` in place that is not on its object now (intent recorded, entry
/// placed, confirmation recorded, one at a time) and returns how many it placed (0 on most
/// runs of a workspace but its first). An allow entry whose object does not exist is
/// skipped (a grant of a folder the host lacks); a deny entry's object must exist (the
/// placeholders are made before this is called).
///
/// # Errors
/// [`EnsureError`]: with [`Mode::Forbid`], the entries that are missing; a deny entry whose
/// object is gone; otherwise the first failure (entries placed before it stay recorded).
pub fn ensure(journal: &mut Journal, host: &mut dyn Host, acl: &[Ace], mode: Mode) -> Result<usize, EnsureError> {
    let mut missing = Vec::new();
    for e in acl.iter().map(Entry::from) {
        let fail = |source| EnsureError::Host { entry: e.clone(), source };
        match host.present(&e).map_err(fail)? {
            Some(true) => {}
            Some(false) => missing.push(e),
            None if e.kind == "deny" => return Err(EnsureError::Vanished(e)),
            None => {}
        }
    }
    if missing.is_empty() {
        return Ok(0);
    }
    if mode == Mode::Forbid {
        return Err(EnsureError::Forbidden(missing));
    }
    let mut placed = 0;
    for e in &missing {
        let fail = |source| EnsureError::Host { entry: e.clone(), source };
        journal.record(&Record::Intent { ace: e.clone() }).map_err(fail)?;
        let record = if host.apply(e).map_err(fail)? {
            placed += 1;
            Record::Applied { ace: e.clone() }
        } else {
            Record::Revoked { ace: e.clone() }
        };
        journal.record(&record).map_err(fail)?;
    }
    Ok(placed)
}

/// Makes the run's placeholders, each journaled first and made with its deny entry from
/// `acl`, and joins the placeholders of overlapping runs that this plan saw as existing
/// protected paths (a deny of every changing right in `acl` at a path the journal holds as a
/// live run's placeholder). Returns every placeholder this run uses, for [`unmake`]. A
/// placeholder the journal knows is used as it is, not made again.
///
/// # Errors
/// The first failure; those made before it are let go again.
pub fn make(journal: &mut Journal, host: &mut dyn Host, made: &[Made], acl: &[Ace], pid: u32) -> io::Result<Vec<Made>> {
    let state = journal.state()?;
    let deny_at = |path: &str| {
        acl.iter()
            .find(|a| a.path == path && a.kind == rights::AceKind::Deny && a.mask == rights::WRITE_ANY)
            .map(Entry::from)
    };
    let mut used: Vec<Made> = Vec::new();
    for m in made {
        // Ours already: a live run's, or one a run that died left (found again, not made).
        let known = state.made.contains_key(&m.path);
        let deny = deny_at(&m.path);
        let r = journal.record(&Record::Made { path: m.path.clone(), pid }).and_then(|()| {
            match host.make(m, deny.as_ref()) {
                Err(e) if known && e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            }
        });
        used.push(m.clone());
        if let Err(e) = r {
            let _ = unmake(journal, host, &used, pid);
            return Err(e);
        }
    }
    for a in acl.iter().filter(|a| a.kind == rights::AceKind::Deny && a.mask == rights::WRITE_ANY) {
        let live = state.made.get(&a.path).is_some_and(|runs| runs.iter().any(|p| *p != pid && host.alive(*p)));
        if live && !used.iter().any(|m| m.path == a.path) {
            journal.record(&Record::Made { path: a.path.clone(), pid })?;
            used.push(Made { path: a.path.clone(), contents: None });
        }
    }
    Ok(used)
}

/// Lets go of the run's placeholders: each is removed unless another live run uses it.
///
/// # Errors
/// The first failure (the others are still tried; `repair` finds what is left).
pub fn unmake(journal: &mut Journal, host: &mut dyn Host, made: &[Made], pid: u32) -> io::Result<()> {
    let state = journal.state()?;
    let mut first = Ok(());
    for m in made.iter().rev() {
        let others = state.made.get(&m.path).is_some_and(|runs| runs.iter().any(|p| *p != pid && host.alive(*p)));
        let r = if others { Ok(()) } else { host.remove(&m.path) }
            .and_then(|()| journal.record(&Record::Removed { path: m.path.clone(), pid: Some(pid) }));
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// What [`repair`] and [`forget`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Undone {
    /// Placeholders removed.
    pub removed: Vec<String>,
    /// ACL entries revoked.
    pub revoked: Vec<Entry>,
}

/// Undoes what crashed runs left: placeholders of runs no longer alive, and entries whose
/// intent was recorded without a confirmation.
///
/// # Errors
/// The first failure (the journal keeps what was not undone).
pub fn repair(journal: &mut Journal, host: &mut dyn Host) -> io::Result<Undone> {
    let state = journal.state()?;
    let mut done = Undone::default();
    for (path, runs) in &state.made {
        if !runs.iter().any(|p| host.alive(*p)) {
            host.remove(path)?;
            journal.record(&Record::Removed { path: path.clone(), pid: None })?;
            done.removed.push(path.clone());
        }
    }
    for (e, status) in &state.entries {
        if *status == Status::Intended {
            revoke(journal, host, e)?;
            done.revoked.push(e.clone());
        }
    }
    Ok(done)
}

/// Revokes every journaled entry of a capability whose name starts with `prefix` (one
/// workspace's: `palisade forget WORKSPACE`), exactly as journaled.
///
/// # Errors
/// The first failure.
pub fn forget(journal: &mut Journal, host: &mut dyn Host, prefix: &str) -> io::Result<Undone> {
    let state = journal.state()?;
    let mut done = Undone::default();
    for e in state.entries.keys().filter(|e| e.capability.starts_with(prefix)) {
        revoke(journal, host, e)?;
        done.revoked.push(e.clone());
    }
    Ok(done)
}

fn revoke(journal: &mut Journal, host: &mut dyn Host, e: &Entry) -> io::Result<()> {
    host.revoke(e)?;
    journal.record(&Record::Revoked { ace: e.clone() })
}

#[cfg(test)]
mod tests;
