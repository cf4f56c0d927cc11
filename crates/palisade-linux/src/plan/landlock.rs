//! The Landlock rules that mirror the view's mounts.

use std::path::Path;

use palisade_policy::pathrule::is_within;
use palisade_sandbox::view::Entry;

use super::{LandlockPlan, PRIVATE_COPIES};

/// Landlock grants mirror the binds: read-only host entries are readable, writable ones and
/// private directories writable. Masks need no rule: they grant nothing. A bind inside
/// another that grants as much needs none either: Landlock's rules only add rights along the
/// path, so the enclosing rule already covers it (a read-only bind inside the workspace is
/// read-only by its mount flag, and a rule for it would grant nothing more). Pins and the
/// protections in a repository are such binds; skipping them saves an `open` and a
/// `landlock_add_rule` each.
pub(super) fn landlock_plan(entries: &[Entry]) -> LandlockPlan {
    let mut lp = LandlockPlan {
        list: vec!["/".into()],
        proc: vec!["/proc".into()],
        devices: vec!["/dev".into()],
        write: vec!["/dev/shm".into()],
        ..LandlockPlan::default()
    };
    let covered = |lp: &LandlockPlan, path: &Path, writable: bool| {
        lp.write.iter().any(|w| is_within(path, w)) || (!writable && lp.read.iter().any(|r| is_within(path, r)))
    };
    for m in entries {
        match m {
            Entry::Host { path, writable: true } | Entry::Private { path, .. } if !covered(&lp, path, true) => {
                lp.write.push(path.clone())
            }
            Entry::Host { path, writable: false } if !covered(&lp, path, false) => lp.read.push(path.clone()),
            Entry::OwnCopy { path, .. } | Entry::Cache { path, .. } if !covered(&lp, path, true) => {
                lp.write.push(path.clone())
            }
            Entry::PrivateCopy { .. } if !lp.write.iter().any(|w| w == Path::new(PRIVATE_COPIES)) => {
                lp.write.push(PRIVATE_COPIES.into())
            }
            _ => {}
        }
    }
    lp
}
