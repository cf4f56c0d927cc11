//! The journal against a recording host: every change recorded first, applied once, undone
//! exactly.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::plan::rights::{AceKind, Inherit};
use crate::sid::Sid;

/// A host that keeps ACL entries and placeholders in memory, and can fail on one path.
#[derive(Default)]
struct Fake {
    aces: BTreeSet<Entry>,
    made: BTreeMap<String, Option<String>>,
    applied: usize,
    fail_at: Option<String>,
    alive: BTreeSet<u32>,
}

impl Host for Fake {
    fn apply(&mut self, e: &Entry) -> io::Result<bool> {
        if self.fail_at.as_deref() == Some(&e.path) {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        if e.path.ends_with("absent") {
            return Ok(false);
        }
        self.applied += 1;
        self.aces.insert(e.clone());
        Ok(true)
    }
    fn present(&mut self, e: &Entry) -> io::Result<Option<bool>> {
        Ok(if e.path.ends_with("absent") { None } else { Some(self.aces.contains(e)) })
    }
    fn revoke(&mut self, e: &Entry) -> io::Result<()> {
        self.aces.remove(e);
        Ok(())
    }
    fn make(&mut self, m: &Made, deny: Option<&Entry>) -> io::Result<()> {
        if self.made.contains_key(&m.path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        self.made.insert(m.path.clone(), m.contents.clone());
        // Made with its deny: in place from the first moment.
        self.aces.extend(deny.cloned());
        Ok(())
    }
    fn remove(&mut self, path: &str) -> io::Result<()> {
        self.made.remove(path);
        Ok(())
    }
    fn alive(&self, pid: u32) -> bool {
        self.alive.contains(&pid)
    }
}

fn ace(path: &str, sid: &str) -> Ace {
    Ace {
        path: path.into(),
        kind: AceKind::Allow,
        sid: Sid(sid.into()),
        mask: rights::MODIFY,
        rights: "modify",
        inherit: Inherit::Subtree,
        on_link: false,
        capability: format!("cap-{sid}"),
    }
}

fn deny(path: &str, sid: &str) -> Ace {
    Ace { kind: AceKind::Deny, mask: rights::WRITE_ANY, rights: "write_any", inherit: Inherit::None, ..ace(path, sid) }
}

fn journal() -> (tempdir::Dir, Journal) {
    let dir = tempdir::Dir::new();
    let j = Journal::open(&dir.0.join("journal.jsonl")).unwrap();
    (dir, j)
}

mod tempdir {
    /// A directory under the system's temporary folder, removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("palisade-journal-{}-{n}", std::process::id()));
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

#[test]
fn entries_are_placed_once_per_workspace_and_recorded_before_they_are_made() {
    let (_d, mut j) = journal();
    let mut host = Fake::default();
    let acl = [ace(r"C:\src\a", "S-1-15-3-1024-1"), ace(r"C:\src\a\b", "S-1-15-3-1024-1")];
    assert_eq!(ensure(&mut j, &mut host, &acl, Mode::Apply).unwrap(), 2);
    assert_eq!(ensure(&mut j, &mut host, &acl, Mode::Apply).unwrap(), 0, "the second run changes nothing");
    assert_eq!(host.applied, 2);
    // A new grant of the policy is added alone (incremental, never the whole set again).
    let more = [acl[0].clone(), acl[1].clone(), ace(r"C:\src\a\c", "S-1-15-3-1024-1")];
    assert_eq!(ensure(&mut j, &mut host, &more, Mode::Apply).unwrap(), 1);
    let state = j.state().unwrap();
    assert!(state.entries.values().all(|s| *s == Status::Applied));
}

#[test]
fn a_grant_of_a_folder_the_host_lacks_is_tried_again_next_run() {
    let (_d, mut j) = journal();
    let mut host = Fake::default();
    let acl = [ace(r"C:\src\absent", "S-1")];
    assert_eq!(ensure(&mut j, &mut host, &acl, Mode::Apply).unwrap(), 0);
    assert!(j.state().unwrap().entries.is_empty(), "nothing is recorded as in place");
}

#[test]
fn a_failure_leaves_an_intent_that_repair_revokes() {
    let (_d, mut j) = journal();
    let mut host = Fake { fail_at: Some(r"C:\src\a\b".into()), ..Fake::default() };
    let acl = [ace(r"C:\src\a", "S-1"), ace(r"C:\src\a\b", "S-1")];
    let e = ensure(&mut j, &mut host, &acl, Mode::Apply).unwrap_err().to_string();
    assert!(e.contains(r"C:\src\a\b") && e.contains("S-1"), "{e}");
    let state = j.state().unwrap();
    assert_eq!(state.entries.get(&Entry::from(&acl[0])), Some(&Status::Applied));
    assert_eq!(state.entries.get(&Entry::from(&acl[1])), Some(&Status::Intended));
    let undone = repair(&mut j, &mut host).unwrap();
    assert_eq!(undone.revoked, [Entry::from(&acl[1])]);
    assert_eq!(j.state().unwrap().entries.len(), 1, "the applied entry is kept");
}

#[test]
fn forbidden_changes_fail_with_every_missing_entry_and_change_nothing() {
    let (_d, mut j) = journal();
    let mut host = Fake::default();
    let acl = [ace(r"C:\src\a", "S-1-15-3-1024-7")];
    let e = ensure(&mut j, &mut host, &acl, Mode::Forbid).unwrap_err();
    let text = e.to_string();
    assert!(text.contains(r"C:\src\a") && text.contains("S-1-15-3-1024-7") && text.contains("modify"), "{text}");
    assert_eq!(host.applied, 0);
    assert!(j.state().unwrap().entries.is_empty());
    // Entries already in place (an administrator placed them) satisfy a forbidding machine.
    ensure(&mut j, &mut host, &acl, Mode::Apply).unwrap();
    assert_eq!(ensure(&mut j, &mut host, &acl, Mode::Forbid).unwrap(), 0);
}

#[test]
fn placeholders_of_dead_runs_are_repaired_and_those_of_live_runs_kept() {
    let (_d, mut j) = journal();
    let mut host = Fake::default();
    let a = [Made { path: r"C:\src\a\.vscode".into(), contents: None }];
    let b = [Made { path: r"C:\src\b\.vscode".into(), contents: None }];
    make(&mut j, &mut host, &a, &[], 100).unwrap();
    make(&mut j, &mut host, &b, &[], 200).unwrap();
    host.alive.insert(200);
    let undone = repair(&mut j, &mut host).unwrap();
    assert_eq!(undone.removed, [r"C:\src\a\.vscode"]);
    assert!(host.made.contains_key(r"C:\src\b\.vscode"));
    unmake(&mut j, &mut host, &b, 200).unwrap();
    assert!(host.made.is_empty() && j.state().unwrap().made.is_empty());
}

#[test]
fn a_failed_make_removes_what_it_made() {
    let (_d, mut j) = journal();
    let mut host = Fake::default();
    host.made.insert(r"C:\src\a\.idea".into(), None);
    let m = [
        Made { path: r"C:\src\a\.vscode".into(), contents: None },
        Made { path: r"C:\src\a\.idea".into(), contents: None },
    ];
    assert!(make(&mut j, &mut host, &m, &[], 1).is_err());
    assert!(!host.made.contains_key(r"C:\src\a\.vscode"));
}

#[test]
fn forget_revokes_exactly_one_workspaces_entries() {
    let (_d, mut j) = journal();
    let mut host = Fake::default();
    let mut a = ace(r"C:\src\a", "S-A");
    a.capability = "palisade.workspace.aaaa.1".into();
    let mut a2 = ace(r"C:\src\a\x", "S-A2");
    a2.capability = "palisade.workspace.aaaa.2".into();
    let mut b = ace(r"C:\src\b", "S-B");
    b.capability = "palisade.workspace.bbbb.1".into();
    let acl = [a.clone(), a2.clone(), b.clone()];
    ensure(&mut j, &mut host, &acl, Mode::Apply).unwrap();
    let undone = forget(&mut j, &mut host, "palisade.workspace.aaaa.").unwrap();
    assert_eq!(undone.revoked.len(), 2, "every capability of the workspace (one per policy it ran with)");
    assert_eq!(host.aces.len(), 1);
    assert!(host.aces.contains(&Entry::from(&b)));
    // Forgotten entries are placed again by the workspace's next run.
    assert_eq!(ensure(&mut j, &mut host, &acl, Mode::Apply).unwrap(), 2);
}

#[test]
fn a_line_cut_by_a_crash_is_skipped() {
    let (d, mut j) = journal();
    let mut host = Fake::default();
    ensure(&mut j, &mut host, &[ace(r"C:\src\a", "S-1")], Mode::Apply).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(d.0.join("journal.jsonl"))
        .unwrap()
        .write_all(b"{\"op\":\"intent\",\"ace\":{\"pa")
        .unwrap();
    drop(j);
    let mut j = Journal::open(&d.0.join("journal.jsonl")).unwrap();
    assert_eq!(j.state().unwrap().entries.len(), 1);
    // The next record is read whole, not glued to the cut line.
    ensure(&mut j, &mut host, &[ace(r"C:\src\b", "S-1")], Mode::Apply).unwrap();
    assert_eq!(j.state().unwrap().entries.len(), 2);
}

#[test]
fn an_entry_lost_with_a_replaced_object_is_placed_again() {
    let (_d, mut j) = journal();
    let mut host = Fake::default();
    let acl = [ace(r"C:\src\a\.git\config", "S-1")];
    ensure(&mut j, &mut host, &acl, Mode::Apply).unwrap();
    // The user's own `git config` renames a new file over the protected one: the new file
    // has only inherited entries.
    host.aces.clear();
    assert_eq!(ensure(&mut j, &mut host, &acl, Mode::Apply).unwrap(), 1);
    assert!(host.aces.contains(&Entry::from(&acl[0])));
}

#[test]
fn parallel_runs_share_a_placeholder_and_the_last_one_removes_it() {
    let (_d, mut j) = journal();
    let mut host = Fake::default();
    let m = [Made { path: r"C:\src\a\.vscode".into(), contents: None }];
    host.alive.extend([1, 2]);
    make(&mut j, &mut host, &m, &[], 1).unwrap();
    // The second run shares the first one's placeholder (making it again would fail).
    make(&mut j, &mut host, &m, &[], 2).unwrap();
    unmake(&mut j, &mut host, &m, 1).unwrap();
    host.alive.remove(&1);
    assert!(host.made.contains_key(&m[0].path), "run 2 still needs it");
    unmake(&mut j, &mut host, &m, 2).unwrap();
    assert!(host.made.is_empty());
    assert!(j.state().unwrap().made.is_empty());
}

#[test]
fn a_placeholder_left_by_a_run_that_died_is_used_again() {
    let (_d, mut j) = journal();
    let mut host = Fake::default();
    let m = [Made { path: r"C:\src\a\.vscode".into(), contents: None }];
    make(&mut j, &mut host, &m, &[], 7).unwrap();
    // Run 7 died; run 8 finds the placeholder in place and goes on.
    make(&mut j, &mut host, &m, &[], 8).unwrap();
    host.alive.insert(8);
    assert!(repair(&mut j, &mut host).unwrap().removed.is_empty(), "run 8 uses it");
    // Something else at a protected path (not made by Palisade) stops the run.
    let other = [Made { path: r"C:\src\a\.idea".into(), contents: None }];
    host.made.insert(other[0].path.clone(), None);
    assert!(make(&mut j, &mut host, &other, &[], 8).is_err());
}

#[test]
fn a_protected_path_gone_between_planning_and_set_up_stops_the_run() {
    let (_d, mut j) = journal();
    let mut host = Fake::default();
    let e = ensure(&mut j, &mut host, &[deny(r"C:\src\a\absent", "S-1")], Mode::Apply).unwrap_err();
    assert!(matches!(e, EnsureError::Vanished(_)), "{e}");
    assert!(e.to_string().contains("run again"), "{e}");
}

#[test]
fn placeholders_are_made_with_their_deny_and_joined_by_overlapping_runs() {
    let (_d, mut j) = journal();
    let mut host = Fake::default();
    let m = [Made { path: r"C:\src\a\.vscode".into(), contents: None }];
    let acl = [deny(r"C:\src\a\.vscode", "S-1")];
    let used = make(&mut j, &mut host, &m, &acl, 1).unwrap();
    assert!(host.aces.contains(&Entry::from(&acl[0])), "the deny came with the folder");
    assert_eq!(used.len(), 1);
    // Run 2 was planned while run 1 ran: it saw .vscode as an existing protected path (no
    // placeholder in its plan, only the deny), and joins run 1's placeholder.
    host.alive.extend([1, 2]);
    let used2 = make(&mut j, &mut host, &[], &acl, 2).unwrap();
    assert_eq!(used2.len(), 1);
    unmake(&mut j, &mut host, &used, 1).unwrap();
    host.alive.remove(&1);
    assert!(host.made.contains_key(&m[0].path), "run 2 still uses it");
    unmake(&mut j, &mut host, &used2, 2).unwrap();
    assert!(host.made.is_empty());
}
