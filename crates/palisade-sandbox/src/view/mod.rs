//! The neutral file-system view: what the sandbox sees at each host path, decided from the
//! policy and the host, before any platform mechanism is chosen.
//!
//! [`build`] walks the policy's path rules parents first and yields [`Entry`]s: private
//! directories, host content read-only or writable, hidden paths, placeholders for protected
//! paths that do not exist yet, pinned links, private copies. Paths are the same inside the
//! sandbox as on the host. Each backend realises the same view with its own mechanism (Linux:
//! mounts in a fresh root, then Landlock over them; Windows: ACL grants to a capability SID;
//! macOS: an SBPL profile) and says in its enforcement report what it could not realise.
//!
//! Why a path is in the view is the policy's own answer: `palisade policy explain PATH`
//! (`ResolvedPolicy::decide_path`) names the rule and the layer that decided it. Planning
//! reads the host only through [`HostFs`], so it is tested with an in-memory host
//! (`palisade_policy::hostfs::MemFs`).

use std::path::{Path, PathBuf};

use palisade_policy::model::Placeholder;
use palisade_policy::pathrule::{PathPattern, is_within};
use palisade_policy::{Access, PathKind, ResolvedPolicy};
use serde::Serialize;

pub use palisade_policy::hostfs::{HostFs, Kind};

use crate::Request;

mod glob_cache;
mod paths;

use paths::*;

/// What the sandbox sees at one path (and beneath it, until a deeper entry). Serialised as
/// `{"entry": "host", "path": ..., "writable": true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum Entry {
    /// A private, empty, writable directory of at most `size` bytes (the sandbox's `${tmp}`,
    /// its home directory): nothing from the host, gone when the run ends.
    Private {
        /// Where it appears.
        path: PathBuf,
        /// Its capacity in bytes.
        size: u64,
    },
    /// The host's `path` and everything beneath it, read-only or writable.
    Host {
        /// The host path, shown at the same place.
        path: PathBuf,
        /// Whether the sandbox may change it.
        writable: bool,
    },
    /// Hidden: what the host has at `path` can be neither read nor listed nor changed.
    Hidden {
        /// The hidden path.
        path: PathBuf,
        /// Whether the host has a directory there (else a file or another kind).
        dir: bool,
    },
    /// `path` is missing on the host, under a writable tree, and must stay uncreatable: the
    /// sandbox sees nothing there and can create nothing. What stands on the host meanwhile
    /// is `kind` ([`Placeholder`]: nothing git reads, empty git configuration, or a
    /// `commondir` saying `.`, which the sandbox sees too).
    Placeholder {
        /// The missing path.
        path: PathBuf,
        /// What stands in for it.
        #[serde(default, skip_serializing_if = "Placeholder::is_absent")]
        kind: Placeholder,
    },
    /// A symbolic link at or above a protected path in a writable tree: it can be neither
    /// removed nor replaced; where it leads is decided by its target's own rule.
    PinnedLink {
        /// The link.
        path: PathBuf,
    },
    /// A protected file that tools rewrite in place (git's configuration): the sandbox reads
    /// and writes a private copy; the host's file cannot be changed, renamed or removed.
    /// Changes end with the run.
    PrivateCopy {
        /// The protected file.
        path: PathBuf,
    },
    /// A protected file of which the sandbox keeps a copy of its own (`filesystem.own_copy`,
    /// an agent's configuration): `copy`, a file Palisade keeps for the workspace, is read
    /// and written at `path`; the host's file stays as it is.
    OwnCopy {
        /// The protected file.
        path: PathBuf,
        /// The kept copy on the host (outside everything the sandbox sees).
        copy: PathBuf,
    },
    /// A cache (`filesystem.cache`): the host's directory at `path`, read-only, under a
    /// private writable layer that Palisade keeps for the workspace (see
    /// `copies::cache_dirs`), so the sandbox sees what the host has downloaded and
    /// adds to it without changing a host file. `lower`: whether the host has the directory
    /// (if not, the layer alone is shown).
    Cache {
        /// The host directory.
        path: PathBuf,
        /// The layer: what the sandbox wrote, kept across runs (on the host, outside
        /// everything the sandbox sees).
        upper: PathBuf,
        /// This run's scratch directory for the layer, on the same file system.
        work: PathBuf,
        /// Whether the host's directory exists, to show beneath the layer.
        lower: bool,
    },
    /// A symbolic link to `target`, where a grant was written through a link on the host
    /// (`/lib64` → `/usr/lib64`), so the written path still resolves.
    Link {
        /// Where the link appears.
        path: PathBuf,
        /// Where it leads.
        target: PathBuf,
    },
    /// A read-only file with these contents over an existing file (`/etc/resolv.conf`
    /// naming the gateway's DNS stub).
    File {
        /// The file replaced.
        path: PathBuf,
        /// What the sandbox reads there.
        contents: String,
    },
}

impl Entry {
    /// The path this entry decides.
    pub fn path(&self) -> &Path {
        match self {
            Entry::Private { path, .. }
            | Entry::Host { path, .. }
            | Entry::Hidden { path, .. }
            | Entry::Placeholder { path, .. }
            | Entry::PinnedLink { path }
            | Entry::PrivateCopy { path }
            | Entry::OwnCopy { path, .. }
            | Entry::Cache { path, .. }
            | Entry::Link { path, .. }
            | Entry::File { path, .. } => path,
        }
    }
}

/// How a path looks inside the sandbox: the kind of its deepest covering [`Entry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// No entry covers it: the sandbox's own empty, read-only root.
    Root,
    /// A private directory: writable, nothing from the host.
    Private,
    /// Host content with this access.
    Host(Access),
    /// Hidden, a placeholder, a pinned link, a private copy or a file: nothing below it
    /// comes from the host.
    Masked,
}

/// The sandbox's file-system view; see the module.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsView {
    /// Parents before children; at most one entry per path.
    pub entries: Vec<Entry>,
    /// The command's working directory: the caller's when the view shows it, else the
    /// workspace.
    pub cwd: PathBuf,
    /// Decoy files to place and watch, only inside the sandbox's private directories (never
    /// on the host).
    pub tripwires: Vec<PathBuf>,
}

/// The working directory inside for a caller in `wanted`: `wanted` when the view shows it
/// (read or write) and it is a directory, else the workspace.
fn place_cwd(entries: &[Entry], host: &dyn HostFs, wanted: &Path, workspace: &Path) -> PathBuf {
    let visible = matches!(seen_in(entries, wanted), Seen::Host(Access::Read | Access::Write));
    if visible && host.kind(wanted) == Some(Kind::Dir) { wanted.to_path_buf() } else { workspace.to_path_buf() }
}

impl FsView {
    /// The working directory inside for a command asked for from `wanted` (a warm session's
    /// later commands), placed as [`build`] placed the first: `wanted` when this view shows
    /// it and `host` says it is a directory, else `workspace`.
    pub fn cwd_for(&self, wanted: &Path, host: &dyn HostFs, workspace: &Path) -> PathBuf {
        place_cwd(&self.entries, host, wanted, workspace)
    }

    /// How the (normalised, absolute) `path` looks inside.
    pub fn seen(&self, path: &Path) -> Seen {
        seen_in(&self.entries, path)
    }

    /// Whether the host's `path` (canonical) is writable from inside the sandbox: the deepest
    /// entry covering it is writable host content. The audit log and the placeholder registry
    /// must never be.
    pub fn exposes_writable(&self, path: &Path) -> bool {
        self.seen(path) == Seen::Host(Access::Write)
    }
}

/// Default size of the private `${tmp}` when the policy sets no `[process] tmp_size`: 2 GiB.
pub const DEFAULT_TMP_SIZE: u64 = 2 << 30;
/// Size of the private home directory (when the policy grants none of it): 1 GiB.
pub const DEFAULT_HOME_SIZE: u64 = 1 << 30;
/// How many directory entries a glob in `deny`/`protect` may visit while it is expanded.
pub const GLOB_BUDGET: usize = 200_000;

/// Why a view cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ViewError {
    /// A grant names a path inside a hidden directory, which no backend can show there.
    #[error("{} is granted inside the denied directory {}; Palisade cannot show it there", path.display(), denied.display())]
    GrantInsideMask {
        /// The granted path.
        path: PathBuf,
        /// The denied directory around it.
        denied: PathBuf,
    },
    /// A `deny`/`protect` glob visits more than [`GLOB_BUDGET`] entries.
    #[error("the pattern `{pattern}` visits more than {GLOB_BUDGET} files while it is expanded; make it narrower")]
    GlobTooBroad {
        /// The pattern as written.
        pattern: String,
    },
    /// The request has no command.
    #[error("the command is empty")]
    NoCommand,
    /// This platform's backend cannot show `path` as the view asks (a Windows grant on a
    /// drive root, a path that is no Windows path).
    #[error("{}: {reason}", path.display())]
    Unrealisable {
        /// The path.
        path: PathBuf,
        /// Why, and what to do instead.
        reason: String,
    },
}

/// Builds the view for running `req` under `policy`, reading the host through `host`.
///
/// # Errors
/// [`ViewError`]: an empty command, a grant inside a denied directory, a glob too broad.
pub fn build(policy: &ResolvedPolicy, host: &dyn HostFs, req: &Request) -> Result<FsView, ViewError> {
    if req.argv.is_empty() && !req.session {
        return Err(ViewError::NoCommand);
    }
    let mut candidates: Vec<(PathBuf, Candidate)> = Vec::new();
    candidates.push((req.tmp.clone(), Candidate::Private(limit(policy, |l| &l.tmp_size, DEFAULT_TMP_SIZE))));
    if policy.decide_path(&policy.home).access == Access::None {
        candidates.push((policy.home.clone(), Candidate::Private(DEFAULT_HOME_SIZE)));
    }
    // Where globs are expanded: the granted trees, but not the private directories the
    // sandbox gets in place of the host's (`${tmp}`, a hidden home): nothing of the host's
    // there is shown (a grant inside one is a root of its own).
    let private: Vec<PathBuf> = candidates.iter().map(|(p, _)| p.clone()).collect();
    let grant_roots: Vec<(PathBuf, bool)> = policy
        .paths
        .iter()
        .filter(|r| matches!(r.kind, PathKind::Read | PathKind::Write))
        .map(|r| (r.pattern.base(), r.kind == PathKind::Write))
        .filter(|(base, _)| !private.iter().any(|p| same(p, base)))
        .collect();
    for r in &policy.paths {
        match (&r.pattern, r.kind) {
            (PathPattern::Exact(p, _), _) => candidates.push((p.clone(), Candidate::Rule)),
            (PathPattern::Glob(_), _) => {
                let records = req.copies.as_deref().map(|c| c.join("globs"));
                for p in expand_glob(&r.pattern, &grant_roots, host, records.as_deref())? {
                    candidates.push((p, Candidate::Rule));
                }
            }
        }
    }
    // Parents before children; at one path, the private directory wins (the policy's grant
    // of `${tmp}` means the private directory, never the host's).
    // Paths are normalised, so byte order and equality are enough (and much cheaper than
    // comparing component by component).
    candidates.sort_by_cached_key(|(p, c)| (depth(p), p.as_os_str().to_owned(), !c.is_private()));
    candidates.dedup_by(|(a, _), (b, _)| same(a, b));

    let mut entries = Vec::new();
    for (path, cand) in candidates {
        let inherited = seen_in(&entries, &path);
        if let Candidate::Private(size) = cand {
            // Private wherever nothing else is (a private directory inside another stays
            // that one), over host content too (`--allow-read /` still gets its own `/tmp`).
            if matches!(inherited, Seen::Root | Seen::Host(_)) {
                entries.push(Entry::Private { path, size });
            }
            continue;
        }
        let d = policy.decide_path(&path);
        // Host content appears only where a grant names this very path (or beneath host
        // content): a path whose access comes from a private directory's grant stays private.
        let granted_here = d.rule.is_some_and(|r| {
            matches!(r.kind, PathKind::Read | PathKind::Write)
                && matches!(&r.pattern, PathPattern::Exact(p, _) if same(p, &path))
        });
        if matches!(inherited, Seen::Root | Seen::Private) && !granted_here {
            continue;
        }
        if let (Some(r), Some(dir), true) = (d.rule, &req.copies, granted_here) {
            let lower = host.kind(&path) == Some(Kind::Dir);
            // Beneath host content, a missing directory has no place for a mount (Palisade
            // makes it before planning when it can: `copies::prepare_caches`).
            let placeable = lower || matches!(inherited, Seen::Root | Seen::Private);
            let layer = cache_layer(dir, &path);
            let (upper, work) = crate::copies::cache_dirs(&layer);
            // Another run holds the kept layer: this run's own (see `copies::prepare_caches`).
            let own = crate::copies::cache_run_upper(&layer);
            let upper = if host.kind(&own) == Some(Kind::Dir) { own } else { upper };
            // Only a layer that is ready (see `copies::prepare_caches`); otherwise the
            // directory stays read-only.
            let ready = host.kind(&upper) == Some(Kind::Dir) && (!lower || host.kind(&work) == Some(Kind::Dir));
            if r.cache && d.access == Access::Read && inherited != Seen::Masked && placeable && ready {
                entries.push(Entry::Cache { path, upper, work, lower });
                continue;
            }
        }
        let hints = Hints {
            // Only a copy that is ready (see `copies::prepare`); otherwise the file stays
            // only protected.
            own_copy: match (d.protected_by, &req.copies) {
                (Some(r), Some(dir)) if r.own_copy => {
                    Some(own_copy_path(dir, &path)).filter(|c| host.kind(c) == Some(Kind::File))
                }
                _ => None,
            },
            private_copy: d.protected_by.is_some_and(|r| r.private_copy),
            placeholder: d.protected_by.map_or(Placeholder::Absent, |r| r.placeholder),
        };
        plan_path(&path, d.access, hints, inherited, host, &mut entries)?;
    }
    // Links for grants written through a symlink (`/lib64`, a linked home directory).
    for r in &policy.paths {
        let Some(link) = r.via_link.as_ref().filter(|_| matches!(r.kind, PathKind::Read | PathKind::Write)) else {
            continue;
        };
        let target = r.pattern.base();
        if matches!(seen_in(&entries, link), Seen::Root | Seen::Private)
            && policy.decide_path(&target).access != Access::None
            && !entries.iter().any(|m| m.path() == link)
        {
            entries.push(Entry::Link { path: link.clone(), target });
        }
    }
    let cwd = place_cwd(&entries, host, &req.cwd, &policy.workspace);
    let tripwires = policy
        .tripwires
        .iter()
        .map(|t| t.value.clone())
        .filter(|t| seen_in(&entries, t) == Seen::Private && !entries.iter().any(|m| m.path() == t))
        .collect();
    Ok(FsView { entries, cwd, tripwires })
}

/// Where the layer of the cache `path` lives in `dir` (a workspace's directory of copies):
/// `caches/` and a name made as [`own_copy_path`] makes one.
pub fn cache_layer(dir: &Path, path: &Path) -> PathBuf {
    let name = own_copy_path(Path::new(""), path);
    dir.join("caches").join(name)
}

/// Where the kept copy of the protected file `path` lives in `dir` (a workspace's
/// directory of copies): a name made of a 64-bit FNV-1a hash of the path and its last
/// component (at most 100 bytes of it), so that two paths never share a copy.
pub fn own_copy_path(dir: &Path, path: &Path) -> PathBuf {
    let h = fnv1a(path.as_os_str().as_encoded_bytes());
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name: String = name.chars().take(100).collect();
    dir.join(format!("{h:016x}-{name}"))
}

/// The 64-bit FNV-1a hash of `bytes`: names for kept copies and their directories, and the
/// stamp of what a copy was seeded from (no adversary chooses what is hashed).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The ports the gateway listens on transparently for `policy` (each port an allow rule
/// names, 80 and 443 for rules that name none; sorted, at most `max`), and those of them
/// that are granted host loopback ports (`localhost:P`).
pub fn gateway_ports(policy: &ResolvedPolicy, max: usize) -> (Vec<u16>, Vec<u16>) {
    let mut ports: Vec<u16> =
        policy.net_allow.iter().flat_map(|r| r.pattern.port.map_or(vec![80, 443], |p| vec![p])).collect();
    ports.sort_unstable();
    ports.dedup();
    ports.truncate(max);
    let loopback = ports.iter().copied().filter(|p| policy.loopback_grant(*p).is_some()).collect();
    (ports, loopback)
}

#[cfg(test)]
mod tests;
