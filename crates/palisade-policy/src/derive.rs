//! The policy instantiated on this host: the rules that depend on what exists.
//!
//! After the layers are merged ([`crate::resolve()`]), two kinds of entry are turned into
//! ordinary path rules, each keeping the origin that asked for it so that `policy explain`
//! names it:
//!
//! - `${writable}/REL` entries of `deny` and `protect`, once under every writable root;
//! - with `filesystem.protect_git`, a `protect` rule for every file through which git on the
//!   host would run code that the sandbox wrote ([`crate::git`]), where the sandbox could
//!   otherwise write it.
//!
//! Pure: the host is read through [`HostFs`] and [`PathResolver`].

use std::path::{Path, PathBuf};

use crate::decide::Access;
use crate::error::PolicyError;
use crate::hostfs::{HostFs, Kind};
use crate::model::{LayerKind, Origin, PathKind, PathRule, Placeholder};
use crate::pathrule::PathPattern;
use crate::resolve::ResolvedPolicy;
use crate::vars::PathResolver;

/// What derivation may ask about the host.
#[derive(Clone, Copy)]
pub struct Host<'a> {
    /// What exists on the host: `lstat`, directory listings and file contents.
    pub fs: &'a dyn HostFs,
    /// Canonicalises paths as the policy's rules were canonicalised (links followed).
    pub resolver: &'a dyn PathResolver,
    /// Writable roots that are the sandbox's own private directories (`${tmp}`): nothing of
    /// the host is there, so nothing there needs protecting. (A root granted inside one, a
    /// workspace under `/tmp`, is the host's.)
    pub private: &'a [PathBuf],
    /// The user's and the system's git configuration files (`~/.gitconfig`, ...).
    pub git_configs: &'a [PathBuf],
    /// The directories of the user's `PATH`, in order (where `filesystem.programs` are
    /// looked up).
    pub path_var: &'a [PathBuf],
}

impl std::fmt::Debug for Host<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("private", &self.private).field("git_configs", &self.git_configs).finish()
    }
}

impl ResolvedPolicy {
    /// The writable roots: host directories that a `write` rule grants and that stay
    /// writable (not denied or protected by a rule of equal or greater depth), outside the
    /// private directories; sorted, without duplicates.
    pub fn writable_roots(&self, host: &Host<'_>) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = self
            .paths
            .iter()
            .filter(|r| r.kind == PathKind::Write)
            .map(|r| r.pattern.base())
            .filter(|b| !host.private.contains(b))
            .filter(|b| self.decide_path(b).access == Access::Write && host.fs.kind(b) == Some(Kind::Dir))
            .collect();
        roots.sort();
        roots.dedup();
        roots
    }

    /// Adds the rules that depend on this host (see the module documentation), then checks
    /// again that the project layer narrows: a grant that the layers below allowed may
    /// reach into what a derived rule protects (`write = [".git/hooks/pre-commit"]` is more
    /// specific than the derived protection of `.git/hooks`), and is refused like any other
    /// widening unless `trust_project`.
    pub fn derive(&mut self, host: &Host<'_>, trust_project: bool) -> Result<(), PolicyError> {
        self.check_caches(host);
        self.add_programs(host);
        self.add_derived(host)?;
        if trust_project {
            return Ok(());
        }
        let project_grant =
            |r: &PathRule| r.origin.layer == LayerKind::Project && matches!(r.kind, PathKind::Read | PathKind::Write);
        for r in self.paths.iter().filter(|r| project_grant(r)) {
            let path = r.pattern.base();
            let wanted = if r.kind == PathKind::Write { Access::Write } else { Access::Read };
            let below = self.decide_path_among(&path, |o| !project_grant(o));
            if wanted > below.access {
                let by = below
                    .protected_by
                    .or(below.rule)
                    .map_or(String::new(), |b| format!(" ({:?}, {})", b.origin.text, b.origin));
                return Err(PolicyError::Widening {
                    site: r.origin.site.clone(),
                    why: format!(
                        "it grants {} on {}, which the other layers make {}{by}",
                        r.kind.key(),
                        path.display(),
                        below.access
                    ),
                });
            }
        }
        Ok(())
    }

    /// `filesystem.programs`: a read rule for each directory of each program's install
    /// location that no rule decides yet (a denied or protected path stays so); a note for a
    /// program not on `PATH`.
    fn add_programs(&mut self, host: &Host<'_>) {
        let mut added: Vec<PathRule> = Vec::new();
        for p in self.programs.clone() {
            let Some(found) = crate::programs::find(&p.value, host.path_var, &self.home, host.fs, host.resolver) else {
                self.notes.push(format!(
                    "`{}` ({}) is not on your PATH, so its install location is not made readable: install it, or show where it is with --allow-read DIR",
                    p.value, p.origin
                ));
                continue;
            };
            // Anything the sandbox could have written (a link or a script in the workspace's
            // `.venv/bin` or `node_modules/.bin` on PATH) decides nothing.
            if let Some(f) =
                found.consulted.iter().find(|f| f.ancestors().skip(1).any(|d| self.sandbox_writes(d, host)))
            {
                self.notes.push(format!(
                    "`{}` ({}) was found at {}, which relies on {}, where the sandbox can write: its install location is not made readable",
                    p.value,
                    p.origin,
                    found.command.display(),
                    f.display()
                ));
                continue;
            }
            for (dir, why) in found.dirs {
                // Decided already (the private `${tmp}`'s own grant decides nothing of the host).
                let decided = self.decide_path(&dir).rule.is_some_and(|r| !host.private.contains(&r.pattern.base()));
                if decided || added.iter().any(|r| r.pattern.base() == dir) {
                    continue;
                }
                let origin = Origin { layer: p.origin.layer.clone(), site: p.origin.site.clone(), text: why };
                added.push(rule(PathKind::Read, dir, origin));
            }
        }
        self.rules.paths.extend(added);
    }

    /// Whether the sandbox may write `dir` on the host (the private `${tmp}`'s own grant is
    /// not the host's).
    fn sandbox_writes(&self, dir: &Path, host: &Host<'_>) -> bool {
        let d = self.decide_path(dir);
        d.access == Access::Write && d.rule.is_some_and(|r| !host.private.contains(&r.pattern.base()))
    }

    /// `filesystem.cache` entries that cannot be trusted are dropped, with a note: one
    /// written through a symbolic link (a sandbox given `~/.cache`, or any directory, in one
    /// run could turn `~/.cache/pip` into a link to `..` or `~/Documents`, and every later
    /// run would show that as the cache; a link the user made looks the same, so a cache is
    /// used only at its own path: name the target instead), except a link to the home
    /// directory or above it (`/home` → `/var/home`); and one that is the home directory or
    /// holds it.
    fn check_caches(&mut self, host: &Host<'_>) {
        let mut dropped = Vec::new();
        for (i, r) in self.paths.iter().enumerate().filter(|(_, r)| r.cache) {
            let canonical = r.pattern.base();
            let lexical = r.via_link.clone().unwrap_or_else(|| canonical.clone());
            // Any link on the way, except one that leads to the home directory or above it.
            let planted = lexical
                .ancestors()
                .find(|a| host.fs.kind(a) == Some(Kind::Symlink) && !self.home.starts_with(host.resolver.resolve(a)));
            let why = if let Some(link) = planted {
                format!(
                    "{} on the way is a symbolic link (a sandbox could have made it); a cache is used only at its own path: name {} instead if that is what you meant",
                    link.display(),
                    canonical.display()
                )
            } else if self.home.starts_with(&canonical) {
                format!("it leads to {}, which holds the home directory", canonical.display())
            } else {
                continue;
            };
            dropped.push((i, format!("the cache {} ({}) is not used: {why}", lexical.display(), r.origin)));
        }
        for (i, note) in dropped.into_iter().rev() {
            self.rules.paths.remove(i);
            self.notes.push(note);
        }
    }

    fn add_derived(&mut self, host: &Host<'_>) -> Result<(), PolicyError> {
        let roots = self.writable_roots(host);
        let mut added = Vec::new();
        for rr in &self.per_root {
            for root in &roots {
                let path = root.join(&rr.rel);
                for target in with_target(&path, host.resolver, true) {
                    added.push(rule(rr.kind, target, rr.origin.clone()));
                }
            }
        }
        self.rules.paths.extend(added);
        let Some(setting) = self.protect_git.clone().filter(|s| s.value) else { return Ok(()) };
        let found = crate::git::discover(&roots, host.git_configs, &self.home, host.fs, host.resolver);
        if found.too_many {
            return Err(PolicyError::Setup(format!(
                "more than {} git repositories lie under the writable directories ({}); each is protected with mounts at every start, so Palisade stops here: grant a narrower directory, or check for repositories a run planted (gitlinks in an index)",
                crate::git::MAX_REPOSITORIES,
                roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        self.notes.extend(found.notes);
        // The same names in the work trees of repositories below the roots (submodules,
        // nested checkouts, gitlinks), where they exist: a placeholder for each missing one
        // in every nested work tree would cost too much at every start.
        let mut nested = Vec::new();
        for wt in found.repositories.iter().filter_map(|r| r.work_tree.as_ref()) {
            if roots.contains(wt) || !roots.iter().any(|r| wt.starts_with(r)) {
                continue;
            }
            for rr in &self.per_root {
                let p = wt.join(&rr.rel);
                if host.fs.kind(&p).is_some() {
                    for target in with_target(&p, host.resolver, true) {
                        nested.push(rule(rr.kind, target, rr.origin.clone()));
                    }
                }
            }
        }
        self.rules.paths.extend(nested);
        // A root inside a work tree whose git directory the sandbox cannot see (or only
        // read): git inside will not find it (or cannot commit), which is better said now
        // than discovered. The private temporary directory is not the host's.
        for r in &found.repositories {
            let (Some(wt), shown) = (&r.work_tree, r.common.as_ref().unwrap_or(&r.git_dir)) else { continue };
            if !roots.iter().any(|root| root.starts_with(wt)) {
                continue;
            }
            // Granted by the private temporary directory's own rule: the host's is not there.
            let d = self.decide_path(&r.git_dir);
            let private = d.rule.is_some_and(|rule| host.private.contains(&rule.pattern.base()));
            let access = if private { Access::None } else { d.access };
            if access == Access::None {
                self.notes.push(format!(
                    "git inside the sandbox will not find the repository of {}: its git directory {} is not visible there; pass --allow-write {} to work with it (its configuration and hooks stay protected), or --allow-read to look only",
                    wt.display(),
                    r.git_dir.display(),
                    shown.display()
                ));
            } else if access == Access::Read {
                self.notes.push(format!(
                    "git inside the sandbox can read the repository of {} but not commit: its git directory {} is read-only there; pass --allow-write {} to commit (its configuration and hooks stay protected)",
                    wt.display(),
                    r.git_dir.display(),
                    shown.display()
                ));
            }
        }
        self.git_repositories = found.repositories.into_iter().map(|r| r.git_dir).collect();
        self.git_watched = found.watched.into_iter().map(|p| (p, None)).collect();
        let mut added = Vec::new();
        for c in found.controls {
            for target in with_target(&c.path, host.resolver, c.follow) {
                if self.decide_path(&target).access != Access::Write
                    || added.iter().any(|r: &PathRule| r.pattern.base() == target)
                {
                    continue;
                }
                let origin = Origin {
                    layer: setting.origin.layer.clone(),
                    site: setting.origin.site.clone(),
                    text: c.what.clone(),
                };
                let mut r = rule(PathKind::Protect, target, origin);
                r.private_copy = c.private_copy;
                r.placeholder = c.placeholder;
                added.push(r);
            }
        }
        self.rules.paths.extend(added);
        Ok(())
    }
}

/// `path`, and where it leads when it is (or goes through) a symbolic link: a rule on a link
/// covers the link and its target, as for rules written in a file.
fn with_target(path: &Path, resolver: &dyn PathResolver, follow: bool) -> Vec<PathBuf> {
    let mut v = vec![path.to_path_buf()];
    if follow {
        let canonical = resolver.resolve(path);
        if canonical != path {
            v.insert(0, canonical);
        }
    }
    v
}

/// An exact rule (never a glob, whatever characters the name holds).
fn rule(kind: PathKind, path: PathBuf, origin: Origin) -> PathRule {
    let depth = path.components().count();
    PathRule {
        kind,
        pattern: PathPattern::Exact(path, depth),
        via_link: None,
        private_copy: false,
        placeholder: Placeholder::Absent,
        state: false,
        own_copy: false,
        cache: false,
        origin,
    }
}
