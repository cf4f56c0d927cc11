//! Planning one path at a time: where a rule lands in the view built so far (bound from the
//! host, inherited, private), the binds, masks and placeholders it needs, parents first; deny
//! globs expanded inside the writable trees; the Landlock rules that mirror the mounts.

use super::*;

#[derive(Debug, Clone, Copy)]
pub(super) enum Candidate {
    Private(u64),
    Rule,
}

impl Candidate {
    pub(super) fn is_private(&self) -> bool {
        matches!(self, Candidate::Private(_))
    }
}

pub(super) fn limit(
    policy: &ResolvedPolicy,
    f: impl Fn(&palisade_policy::model::Limits) -> &Option<palisade_policy::model::Setting<u64>>,
    default: u64,
) -> u64 {
    f(&policy.limits).as_ref().map_or(default, |s| s.value)
}

pub(super) fn depth(p: &Path) -> usize {
    p.components().count()
}

/// Equality of two normalised paths, byte by byte.
pub(super) fn same(a: &Path, b: &Path) -> bool {
    a.as_os_str() == b.as_os_str()
}

/// The view at `path`: that of the deepest mounted ancestor-or-self.
pub(super) fn view_of(mounted: &[(PathBuf, View)], path: &Path) -> View {
    mounted.iter().filter(|(m, _)| is_within(path, m)).max_by_key(|(m, _)| depth(m)).map_or(View::Root, |(_, v)| *v)
}

/// Decides the operation for one path whose policy access is `want` and whose current view is
/// `inherited`.
/// What the rule protecting a path asks of a backend (see [`palisade_policy::model::PathRule`]).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Hints {
    pub(super) private_copy: bool,
    pub(super) placeholder: Placeholder,
}

pub(super) fn plan_path(
    path: &Path,
    want: Access,
    hints: Hints,
    inherited: View,
    host: &dyn HostView,
    mounts: &mut Vec<MountOp>,
    mounted: &mut Vec<(PathBuf, View)>,
) -> Result<(), PlanError> {
    match inherited {
        View::Masked => {
            if want != Access::None && host.kind(path).is_some() {
                let denied = mounted
                    .iter()
                    .filter(|(m, _)| path.starts_with(m))
                    .max_by_key(|(m, _)| depth(m))
                    .map(|(m, _)| m.clone())
                    .unwrap_or_default();
                return Err(PlanError::GrantInsideMask { path: path.to_path_buf(), denied });
            }
            Ok(())
        }
        View::Root | View::Private => {
            if want != Access::None && matches!(host.kind(path), Some(Kind::Dir | Kind::File | Kind::Other)) {
                mount(mounts, mounted, MountOp::Bind { path: path.to_path_buf(), writable: want == Access::Write });
            }
            Ok(())
        }
        View::Host(have) if have == want => Ok(()),
        View::Host(have) => walk_to(path, want, have, hints, host, mounts, mounted),
    }
}

/// Inside host content with access `have`, walks from the nearest mount down to `path`,
/// which the policy wants at `want`. In a writable tree, when `path` is to be hidden or
/// read-only:
/// - each directory on the way is bound onto itself (pinned): a mount point cannot be renamed
///   or removed, so `mv .git .git-old` cannot take the protection away;
/// - a symbolic link on the way is pinned itself and ends the walk: it can no longer be
///   replaced, and what it leads to is decided by the target's own (canonical) rule;
/// - so is a file where a directory is expected (nothing can be created beneath a file, and
///   pinned, it cannot be replaced by a directory);
/// - the first missing component becomes a placeholder.
///
/// Then `path` itself is masked or bound with the access wanted.
pub(super) fn walk_to(
    path: &Path,
    want: Access,
    have: Access,
    hints: Hints,
    host: &dyn HostView,
    mounts: &mut Vec<MountOp>,
    mounted: &mut Vec<(PathBuf, View)>,
) -> Result<(), PlanError> {
    let narrowing = have == Access::Write && want < Access::Write;
    let base = mounted.iter().filter(|(m, _)| is_within(path, m)).max_by_key(|(m, _)| depth(m)).map(|(m, _)| m.clone());
    let Some(base) = base else { return Ok(()) };
    let Ok(rest) = path.strip_prefix(&base) else { return Ok(()) };
    let comps: Vec<_> = rest.components().collect();
    let mut cur = base.clone();
    for (i, comp) in comps.iter().enumerate() {
        cur.push(comp);
        let last = i + 1 == comps.len();
        let already = mounted.iter().any(|(m, _)| same(m, &cur));
        match host.kind(&cur) {
            None => {
                if narrowing && !already {
                    // The rule's kind is for the path itself; a missing ancestor is plain.
                    let kind = if last { hints.placeholder } else { Placeholder::Absent };
                    mount(mounts, mounted, MountOp::Placeholder { path: cur.clone(), kind });
                }
                return Ok(());
            }
            Some(Kind::Symlink) => {
                if narrowing && !already {
                    mount(mounts, mounted, MountOp::PinLink { path: cur.clone() });
                }
                return Ok(());
            }
            Some(kind) if !last => {
                if have == Access::Write && !already {
                    // Pinned writable: only the name is fixed, the contents keep their access.
                    mount(mounts, mounted, MountOp::Bind { path: cur.clone(), writable: true });
                }
                if kind != Kind::Dir {
                    return Ok(());
                }
            }
            Some(kind) => {
                if want == Access::None {
                    mount(mounts, mounted, MountOp::Mask { path: cur.clone(), dir: kind == Kind::Dir });
                } else if hints.private_copy && narrowing && kind == Kind::File {
                    mount(mounts, mounted, MountOp::PrivateCopy { path: cur.clone() });
                } else {
                    mount(mounts, mounted, MountOp::Bind { path: cur.clone(), writable: want == Access::Write });
                }
            }
        }
    }
    Ok(())
}

/// Records `op` and the view it gives its path.
pub(super) fn mount(mounts: &mut Vec<MountOp>, mounted: &mut Vec<(PathBuf, View)>, op: MountOp) {
    let view = match &op {
        MountOp::Bind { writable, .. } => View::Host(if *writable { Access::Write } else { Access::Read }),
        MountOp::Tmpfs { .. } => View::Private,
        _ => View::Masked,
    };
    mounted.push((op.path().to_path_buf(), view));
    mounts.push(op);
}

/// Expands a `deny`/`protect` glob against the host. A glob whose literal part lies inside a
/// granted tree is walked from there (`/etc/ssh/ssh_host_*_key`); a glob that starts above
/// every grant (`**/.env`) is walked inside the writable trees only, where an agent works
/// and where such files live, not through the whole of `/usr`.
pub(super) fn expand_glob(
    pattern: &PathPattern,
    roots: &[(PathBuf, bool)],
    host: &dyn HostView,
) -> Result<Vec<PathBuf>, PlanError> {
    let base = pattern.base();
    let starts: Vec<PathBuf> = if roots.iter().any(|(r, _)| is_within(&base, r)) {
        vec![base.clone()]
    } else {
        roots.iter().filter(|(r, w)| *w && is_within(r, &base)).map(|(r, _)| r.clone()).collect()
    };
    let mut found = Vec::new();
    let mut budget = GLOB_BUDGET;
    let mut stack: Vec<PathBuf> = starts.into_iter().filter(|s| host.kind(s) == Some(Kind::Dir)).collect();
    stack.sort();
    stack.dedup();
    while let Some(dir) = stack.pop() {
        for (name, kind) in host.list(&dir) {
            budget = budget.checked_sub(1).ok_or_else(|| PlanError::GlobTooBroad { pattern: pattern.to_string() })?;
            let p = dir.join(name);
            if pattern.specificity(&p) == Some(depth(&p)) {
                found.push(p);
            } else if kind == Kind::Dir {
                stack.push(p);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Landlock grants mirror the binds: read-only binds are readable, writable binds and
/// private file systems writable. Masks need no rule: they grant nothing. A bind inside
/// another that grants as much needs none either: Landlock's rules only add rights along the
/// path, so the enclosing rule already covers it (a read-only bind inside the workspace is
/// read-only by its mount flag, and a rule for it would grant nothing more). Pins and the
/// protections in a repository are such binds; skipping them saves an `open` and a
/// `landlock_add_rule` each.
pub(super) fn landlock_plan(mounts: &[MountOp]) -> LandlockPlan {
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
    for m in mounts {
        match m {
            MountOp::Bind { path, writable: true } | MountOp::Tmpfs { path, .. } if !covered(&lp, path, true) => {
                lp.write.push(path.clone())
            }
            MountOp::Bind { path, writable: false } if !covered(&lp, path, false) => lp.read.push(path.clone()),
            MountOp::PrivateCopy { .. } if !lp.write.iter().any(|w| w == Path::new(PRIVATE_COPIES)) => {
                lp.write.push(PRIVATE_COPIES.into())
            }
            _ => {}
        }
    }
    lp
}
