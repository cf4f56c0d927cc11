//! Planning one path at a time: where a rule lands in the view built so far (host content,
//! inherited, private), the entries it needs (host content, hidden paths, pins,
//! placeholders), parents first; deny globs expanded inside the writable trees.

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

/// How `path` looks: as the deepest entry at or above it makes it.
pub(super) fn seen_in(entries: &[Entry], path: &Path) -> Seen {
    entries.iter().filter(|e| is_within(path, e.path())).max_by_key(|e| depth(e.path())).map_or(Seen::Root, |e| match e
    {
        Entry::Host { writable, .. } => Seen::Host(if *writable { Access::Write } else { Access::Read }),
        // Host content, read-only on the host (writes land in the private layer).
        Entry::Cache { .. } => Seen::Host(Access::Read),
        Entry::Private { .. } => Seen::Private,
        _ => Seen::Masked,
    })
}

/// What the rule protecting a path asks of a backend (see [`palisade_policy::model::PathRule`]).
#[derive(Debug, Clone, Default)]
pub(super) struct Hints {
    pub(super) private_copy: bool,
    /// The kept copy to show writable instead (`filesystem.own_copy`).
    pub(super) own_copy: Option<PathBuf>,
    pub(super) placeholder: Placeholder,
}

/// Decides the entries for one path whose policy access is `want` and which is now seen as
/// `inherited`.
pub(super) fn plan_path(
    path: &Path,
    want: Access,
    hints: Hints,
    inherited: Seen,
    host: &dyn HostFs,
    entries: &mut Vec<Entry>,
) -> Result<(), ViewError> {
    match inherited {
        Seen::Masked => {
            if want != Access::None && host.kind(path).is_some() {
                let denied = entries
                    .iter()
                    .map(Entry::path)
                    .filter(|m| path.starts_with(m))
                    .max_by_key(|m| depth(m))
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                return Err(ViewError::GrantInsideMask { path: path.to_path_buf(), denied });
            }
            Ok(())
        }
        Seen::Root | Seen::Private => {
            if want != Access::None && matches!(host.kind(path), Some(Kind::Dir | Kind::File | Kind::Other)) {
                entries.push(Entry::Host { path: path.to_path_buf(), writable: want == Access::Write });
            }
            Ok(())
        }
        Seen::Host(have) if have == want => Ok(()),
        Seen::Host(have) => walk_to(path, want, have, hints, host, entries),
    }
}

/// Inside host content with access `have`, walks from the nearest entry down to `path`,
/// which the policy wants at `want`. In a writable tree, when `path` is to be hidden or
/// read-only:
/// - each directory on the way is pinned (an entry of its own: Linux binds it onto itself, and
///   a mount point cannot be renamed or removed), so `mv .git .git-old` cannot take the protection away;
/// - a symbolic link on the way is pinned itself and ends the walk: it can no longer be
///   replaced, and what it leads to is decided by the target's own (canonical) rule;
/// - so is a file where a directory is expected (nothing can be created beneath a file, and
///   pinned, it cannot be replaced by a directory);
/// - the first missing component becomes a placeholder.
///
/// Then `path` itself is hidden or shown with the access wanted.
pub(super) fn walk_to(
    path: &Path,
    want: Access,
    have: Access,
    hints: Hints,
    host: &dyn HostFs,
    entries: &mut Vec<Entry>,
) -> Result<(), ViewError> {
    let narrowing = have == Access::Write && want < Access::Write;
    let base =
        entries.iter().map(Entry::path).filter(|m| is_within(path, m)).max_by_key(|m| depth(m)).map(Path::to_path_buf);
    let Some(base) = base else { return Ok(()) };
    let Ok(rest) = path.strip_prefix(&base) else { return Ok(()) };
    let comps: Vec<_> = rest.components().collect();
    let mut cur = base.clone();
    for (i, comp) in comps.iter().enumerate() {
        cur.push(comp);
        let last = i + 1 == comps.len();
        let already = entries.iter().any(|m| same(m.path(), &cur));
        match host.kind(&cur) {
            None => {
                if narrowing && !already {
                    // The rule's kind is for the path itself; a missing ancestor is plain.
                    let kind = if last { hints.placeholder } else { Placeholder::Absent };
                    entries.push(Entry::Placeholder { path: cur.clone(), kind });
                }
                return Ok(());
            }
            Some(Kind::Symlink) => {
                if narrowing && !already {
                    entries.push(Entry::PinnedLink { path: cur.clone() });
                }
                return Ok(());
            }
            Some(kind) if !last => {
                if have == Access::Write && !already {
                    // Pinned writable: only the name is fixed, the contents keep their access.
                    entries.push(Entry::Host { path: cur.clone(), writable: true });
                }
                if kind != Kind::Dir {
                    return Ok(());
                }
            }
            Some(kind) => {
                if want == Access::None {
                    entries.push(Entry::Hidden { path: cur.clone(), dir: kind == Kind::Dir });
                } else if let (Some(copy), true, Kind::File) = (&hints.own_copy, narrowing, kind) {
                    entries.push(Entry::OwnCopy { path: cur.clone(), copy: copy.clone() });
                } else if hints.private_copy && narrowing && kind == Kind::File {
                    entries.push(Entry::PrivateCopy { path: cur.clone() });
                } else {
                    entries.push(Entry::Host { path: cur.clone(), writable: want == Access::Write });
                }
            }
        }
    }
    Ok(())
}

/// Expands a `deny`/`protect` glob against the host. A glob whose literal part lies inside a
/// granted tree is walked from there (`/etc/ssh/ssh_host_*_key`); a glob that starts above
/// every grant (`**/.env`) is walked inside the writable trees only, where an agent works
/// and where such files live, not through the whole of `/usr`.
///
/// With `records` (a directory of this workspace's state), the walk reuses the last run's
/// listing of every directory whose change time is the same ([`super::glob_cache`]); the
/// result is the one a full walk gives.
pub(super) fn expand_glob(
    pattern: &PathPattern,
    roots: &[(PathBuf, bool)],
    host: &dyn HostFs,
    records: Option<&Path>,
) -> Result<Vec<PathBuf>, ViewError> {
    use super::glob_cache::{self, DirRecord, Records};
    let base = pattern.base();
    let starts: Vec<PathBuf> = if roots.iter().any(|(r, _)| is_within(&base, r)) {
        vec![base.clone()]
    } else {
        roots.iter().filter(|(r, w)| *w && is_within(r, &base)).map(|(r, _)| r.clone()).collect()
    };
    let mut stack: Vec<PathBuf> = starts.into_iter().filter(|s| host.kind(s) == Some(Kind::Dir)).collect();
    stack.sort();
    stack.dedup();
    let file = records.map(|d| glob_cache::file_for(d, &pattern.to_string(), &stack));
    let old = file.as_ref().map(|(f, key)| glob_cache::load(f, key)).unwrap_or_default();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let mut new = Records::new();
    // Directories listed again, those whose contents changed counting as `RESAVE`.
    const RESAVE: usize = 16;
    let mut relisted = 0;
    let mut found = Vec::new();
    let mut budget = GLOB_BUDGET;
    while let Some(dir) = stack.pop() {
        // The change time first, then the listing: a change during the listing shows as a
        // newer time next run.
        let stamp = host.stamp(&dir);
        let kept = old.get(dir.as_os_str());
        let record = match (kept, stamp) {
            (Some(r), Some(s)) if !r.racy && r.stamp == s => r.clone(),
            _ => {
                let mut r = DirRecord {
                    stamp: stamp.unwrap_or_default(),
                    racy: stamp.is_none_or(|s| glob_cache::racy(s, now)),
                    entries: 0,
                    matches: Vec::new(),
                    subdirs: Vec::new(),
                };
                let Some(listing) = host.try_list(&dir) else {
                    // A directory that cannot be listed could hold anything: hidden whole,
                    // and never recorded (a sandbox may have made it unreadable to have it
                    // skipped, and restore it in the next run).
                    found.push(dir);
                    continue;
                };
                for (name, kind) in listing {
                    r.entries += 1;
                    let p = dir.join(&name);
                    if pattern.specificity(&p) == Some(depth(&p)) {
                        r.matches.push(name);
                    } else if kind == Kind::Dir {
                        r.subdirs.push(name);
                    }
                }
                // Worth saving when what the directory holds changed, or when many
                // directories changed their time alone (files saved by renaming over
                // them): not for the few the run itself touches (its placeholders'
                // directories), which change every run.
                let same = kept.is_some_and(|k| {
                    k.racy == r.racy && k.entries == r.entries && k.matches == r.matches && k.subdirs == r.subdirs
                });
                relisted += if same { 1 } else { RESAVE };
                r
            }
        };
        budget = budget
            .checked_sub(record.entries)
            .ok_or_else(|| ViewError::GlobTooBroad { pattern: pattern.to_string() })?;
        found.extend(record.matches.iter().map(|n| dir.join(n)));
        stack.extend(record.subdirs.iter().map(|n| dir.join(n)));
        new.insert(dir.into_os_string(), record);
    }
    if let Some((f, key)) = file.filter(|_| relisted >= RESAVE || new.len() != old.len()) {
        glob_cache::save(&f, &key, &new);
    }
    found.sort();
    Ok(found)
}
