//! The files through which git on the host would run code that a sandbox wrote, found the way
//! git finds them (gitrepository-layout(5), git-worktree(1), gitsubmodules(7)).
//!
//! For every writable root: the repository it lies in (its `.git` directory, `.git` file or
//! `.git` link, or a git directory it lies inside), repositories nested below it (a bounded
//! scan, and every gitlink in an index, which `git status` descends into), and for each git
//! directory found, its common directory (`commondir`), linked worktrees (`worktrees/*`) and
//! submodules' git directories (`modules/**`). For each of those: the configuration files
//! (`config`, `config.worktree`, and every file they include), `hooks/` (and the directory
//! `core.hooksPath` names), `info/`, the `commondir` and `gitdir` pointers and the `.git`
//! files of work trees. Objects, refs, the index and logs are not listed: they stay
//! writable, so commits, branches and fetches work inside.
//!
//! A writable directory that is no repository gets `.git` and `HEAD` listed too (they do not
//! exist, so they become uncreatable): a repository made inside would have a configuration
//! written by the sandbox, and git run there on the host would obey it.
//!
//! Pure: the host is read through [`HostFs`] and paths are canonicalised through
//! [`PathResolver`]. The caller keeps the controls that lie where the sandbox could write.

pub mod config;
pub mod index;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::hostfs::{HostFs, Kind};
use crate::vars::{PathResolver, normalize_lexically};

/// One path git on the host reads to decide what to run, and why it matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub path: PathBuf,
    /// What it is, for `policy explain`: "configuration of the repository /w/p/.git".
    pub what: String,
    /// Whether a symbolic link at `path` should be followed and its target protected too
    /// (`false` for a `.git` link: its target is the git directory, most of which stays
    /// writable, and whose own controls are listed separately).
    pub follow: bool,
    /// A configuration file git itself rewrites during ordinary work (`config`,
    /// `config.worktree`): inside, a private copy (see [`crate::model::PathRule`]).
    pub private_copy: bool,
}

/// How deep below a writable root that is no work tree the scan for repositories goes
/// (`root/org/repo/.git` is depth 2), and below a work tree (untracked checkouts beside the
/// code; tracked ones are gitlinks and are found in the index at any depth).
pub const SCAN_DEPTH: usize = 2;
pub const SCAN_DEPTH_IN_WORK_TREE: usize = 1;
/// At most this many directories are listed per root while scanning.
pub const SCAN_BUDGET: usize = 256;
/// Git's own limit on nested includes.
const MAX_INCLUDE_DEPTH: usize = 10;
/// Files larger than this are not read (an index of about 400,000 entries).
const MAX_INDEX: usize = 64 << 20;
const MAX_SMALL: usize = 64 << 10;

/// Finds the git controls for `roots` (writable directories, canonical). `globals` are the
/// user's and the system's git configuration files (their includes and `core.hooksPath` can
/// name files under a root); `home` expands `~` in configuration paths.
pub fn discover(
    roots: &[PathBuf],
    globals: &[PathBuf],
    home: &Path,
    fs: &dyn HostFs,
    resolver: &dyn PathResolver,
) -> Vec<Control> {
    let mut d = Discovery { fs, resolver, home, out: Vec::new(), seen: HashSet::new(), queue: Vec::new() };
    for g in globals {
        d.config_file(g, None, 0, "your git configuration");
    }
    for root in roots {
        d.root(root);
    }
    while let Some((gitdir, worktree)) = d.queue.pop() {
        d.git_dir(&gitdir, worktree.as_deref());
    }
    let mut seen = HashSet::new();
    d.out.retain(|c| seen.insert(c.path.clone()));
    d.out
}

struct Discovery<'a> {
    fs: &'a dyn HostFs,
    resolver: &'a dyn PathResolver,
    home: &'a Path,
    out: Vec<Control>,
    /// Git directories already queued (canonical).
    seen: HashSet<PathBuf>,
    /// Git directories to examine, with their work tree when known.
    queue: Vec<(PathBuf, Option<PathBuf>)>,
}

impl Discovery<'_> {
    fn push(&mut self, path: PathBuf, what: String) {
        self.out.push(Control { path, what, follow: true, private_copy: false });
    }

    /// A configuration file of a repository, which git rewrites in place.
    fn push_config(&mut self, path: PathBuf, what: String) {
        self.out.push(Control { path, what, follow: true, private_copy: true });
    }

    fn canonical(&self, p: &Path) -> PathBuf {
        self.resolver.resolve(&normalize_lexically(p))
    }

    fn enqueue(&mut self, gitdir: PathBuf, worktree: Option<PathBuf>) {
        let gitdir = self.canonical(&gitdir);
        if self.seen.insert(gitdir.clone()) {
            self.queue.push((gitdir, worktree));
        }
    }

    fn root(&mut self, root: &Path) {
        // The repository the root lies in, found upwards as git does.
        let mut in_gitdir = false;
        let mut in_work_tree = false;
        for a in root.ancestors() {
            if self.fs.kind(&a.join(".git")).is_some() {
                self.dot_git(a);
                in_work_tree = true;
                break;
            }
            if self.is_git_dir(a) {
                let worktree = (a.file_name() == Some(OsStr::new(".git"))).then(|| a.parent().map(Path::to_path_buf));
                self.enqueue(a.to_path_buf(), worktree.flatten());
                in_gitdir = true;
                break;
            }
        }
        if in_gitdir {
            return;
        }
        if self.fs.kind(&root.join(".git")).is_none() {
            self.push(
                root.join(".git"),
                format!(
                    "{} is not the top of a repository: a .git made inside the sandbox would have a configuration and hooks written there, which git on the host would run (create repositories outside the sandbox)",
                    root.display()
                ),
            );
        }
        if self.fs.kind(&root.join("HEAD")).is_none() {
            self.push(
                root.join("HEAD"),
                format!(
                    "with HEAD, objects/ and refs/ made inside the sandbox, git on the host would take {} for a bare repository and run its config",
                    root.display()
                ),
            );
        }
        let depth = if in_work_tree { SCAN_DEPTH_IN_WORK_TREE } else { SCAN_DEPTH };
        let mut budget = SCAN_BUDGET;
        self.scan(root, depth, &mut budget);
    }

    /// Repositories in the directories below `dir`, `depth` levels down.
    fn scan(&mut self, dir: &Path, depth: usize, budget: &mut usize) {
        if depth == 0 || *budget == 0 {
            return;
        }
        *budget -= 1;
        for (name, kind) in self.fs.list(dir) {
            if kind != Kind::Dir || name == ".git" {
                continue;
            }
            let sub = dir.join(&name);
            if self.fs.kind(&sub.join(".git")).is_some() {
                self.dot_git(&sub);
            } else if name.to_string_lossy().ends_with(".git") && self.is_git_dir(&sub) {
                self.enqueue(sub, None);
            } else {
                self.scan(&sub, depth - 1, budget);
            }
        }
    }

    /// `worktree/.git`, which exists: a directory, a `gitdir:` file or a link.
    fn dot_git(&mut self, worktree: &Path) {
        let dot = worktree.join(".git");
        match self.fs.kind(&dot) {
            Some(Kind::Dir) => self.enqueue(dot, Some(worktree.to_path_buf())),
            Some(Kind::File) => {
                self.push(
                    dot.clone(),
                    format!(".git file of the work tree {} (says where its git directory is)", worktree.display()),
                );
                if let Some(target) = self.gitfile(&dot) {
                    self.enqueue(target, Some(worktree.to_path_buf()));
                }
            }
            Some(Kind::Symlink) => {
                self.out.push(Control {
                    path: dot.clone(),
                    what: format!(
                        ".git link of the work tree {} (says where its git directory is)",
                        worktree.display()
                    ),
                    follow: false,
                    private_copy: false,
                });
                self.enqueue(dot, Some(worktree.to_path_buf()));
            }
            _ => {}
        }
    }

    /// The target of a `gitdir: PATH` file (relative to the file's directory).
    fn gitfile(&self, file: &Path) -> Option<PathBuf> {
        let data = self.fs.read(file, MAX_SMALL)?;
        let rest = data.strip_prefix(b"gitdir: ")?;
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r').unwrap_or(rest.len());
        let target = bytes_path(&rest[..end]);
        Some(self.canonical(&file.parent()?.join(target)))
    }

    /// git's `is_git_directory`: `HEAD`, and `objects/` and `refs/` in the common directory.
    fn is_git_dir(&self, p: &Path) -> bool {
        if !matches!(self.fs.kind(&p.join("HEAD")), Some(Kind::File | Kind::Symlink)) {
            return false;
        }
        let common = self.common_dir(p).unwrap_or_else(|| p.to_path_buf());
        self.fs.kind(&common.join("objects")) == Some(Kind::Dir)
            && self.fs.kind(&common.join("refs")) == Some(Kind::Dir)
    }

    /// What `gitdir/commondir` points to, if it exists.
    fn common_dir(&self, gitdir: &Path) -> Option<PathBuf> {
        let data = self.fs.read(&gitdir.join("commondir"), MAX_SMALL)?;
        let end = data.iter().position(|&b| b == b'\n' || b == b'\r').unwrap_or(data.len());
        let p = bytes_path(&data[..end]);
        Some(self.canonical(&gitdir.join(p)))
    }

    fn git_dir(&mut self, g: &Path, worktree: Option<&Path>) {
        if !self.is_git_dir(g) {
            // Named by a `.git` entry, but no repository (yet): kept exactly as it is (made
            // uncreatable if missing), or the sandbox could complete it, with a
            // configuration of its own, into one that git on the host then uses.
            self.push(
                g.to_path_buf(),
                format!(
                    "{} is named as a git directory but is not a valid one; it must not become one inside the sandbox",
                    g.display()
                ),
            );
            return;
        }
        let shown = g.display().to_string();
        self.push(
            g.join("commondir"),
            format!("commondir of the repository {shown} (says where its configuration and hooks are)"),
        );
        let common = self.common_dir(g).unwrap_or_else(|| g.to_path_buf());
        if common != g {
            if self.fs.kind(&g.join("gitdir")).is_some() {
                self.push(g.join("gitdir"), format!("gitdir pointer of the linked worktree {shown}"));
            }
            self.enqueue(common.clone(), None);
        }
        let c = common.display().to_string();
        self.push(common.join("hooks"), format!("hooks of the repository {c}"));
        self.push(common.join("info"), format!("info of the repository {c} (exclude, attributes)"));
        self.push_config(common.join("config"), format!("configuration of the repository {c}"));
        let mut facts = Facts::default();
        self.config_file(&common.join("config"), Some((worktree, &mut facts)), 0, &format!("the repository {c}"));
        // Read only with `extensions.worktreeConfig`, which the read-only configuration
        // cannot turn on inside, but which `git sparse-checkout` turns on later, outside.
        let wt_config = g.join("config.worktree");
        self.push_config(wt_config.clone(), format!("per-worktree configuration of {shown}"));
        self.config_file(&wt_config, Some((worktree, &mut facts)), 0, &format!("the worktree {shown}"));
        // The work tree: known from how the git directory was found, or `core.worktree`.
        let worktree = worktree.map(Path::to_path_buf).or(facts.worktree.clone());
        if common == g {
            for (name, kind) in self.fs.list(&g.join("worktrees")) {
                if kind != Kind::Dir {
                    continue;
                }
                let w = g.join("worktrees").join(&name);
                // `gitdir` holds the path of that work tree's `.git` file.
                let wt = self.fs.read(&w.join("gitdir"), MAX_SMALL).and_then(|data| {
                    let end = data.iter().position(|&b| b == b'\n' || b == b'\r').unwrap_or(data.len());
                    let dot = self.canonical(&w.join(bytes_path(&data[..end])));
                    if self.fs.kind(&dot) == Some(Kind::File) {
                        self.push(dot.clone(), format!(".git file of the linked worktree of {shown}"));
                    }
                    dot.parent().map(Path::to_path_buf)
                });
                self.enqueue(w, wt);
            }
            self.modules(&g.join("modules"), 0);
        }
        if let Some(wt) = worktree {
            self.gitlinks(g, &wt, facts.hash_len());
        }
    }

    /// Submodules' git directories under `modules/` (names may contain `/`).
    fn modules(&mut self, dir: &Path, depth: usize) {
        if depth > 8 {
            return;
        }
        for (name, kind) in self.fs.list(dir) {
            if kind != Kind::Dir {
                continue;
            }
            let m = dir.join(&name);
            if self.is_git_dir(&m) {
                self.enqueue(m, None);
            } else {
                self.modules(&m, depth + 1);
            }
        }
    }

    /// Every populated gitlink in the index of `g` (work tree `wt`) is a repository that
    /// `git status` there descends into.
    fn gitlinks(&mut self, g: &Path, wt: &Path, hash_len: usize) {
        let Some(data) = self.fs.read(&g.join("index"), MAX_INDEX) else { return };
        let Ok(mut links) = index::gitlinks(&data, hash_len) else { return };
        if let Some(shared) = links.shared_index.take() {
            if let Some(more) = self
                .fs
                .read(&g.join(format!("sharedindex.{shared}")), MAX_INDEX)
                .and_then(|d| index::gitlinks(&d, hash_len).ok())
            {
                links.paths.extend(more.paths);
            }
        }
        for p in links.paths {
            let sub = normalize_lexically(&wt.join(bytes_path(&p)));
            if sub.starts_with(wt) && self.fs.kind(&sub.join(".git")).is_some() {
                self.dot_git(&sub);
            }
        }
    }

    /// Reads one configuration file for what it makes git read or run. `repo` is the work
    /// tree and the facts to fill in when the file is a repository's own.
    fn config_file(&mut self, file: &Path, mut repo: Option<(Option<&Path>, &mut Facts)>, depth: usize, whose: &str) {
        if depth > MAX_INCLUDE_DEPTH {
            return;
        }
        let Some(data) = self.fs.read(file, MAX_SMALL * 16) else { return };
        let (entries, _) = config::parse(&data);
        let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        for e in entries {
            let Some(value) = e.value.as_deref() else { continue };
            let text = &bytes_path(value);
            if e.is("include", "path") || e.is("includeif", "path") {
                let Some(target) = self.config_path(text, &dir) else { continue };
                self.push(target.clone(), format!("configuration included by {} ({whose})", file.display()));
                let mut facts = Facts::default();
                let nested = repo.as_ref().map(|(w, _)| (*w, &mut facts));
                self.config_file(&target, nested, depth + 1, whose);
                if let Some((_, f)) = repo.as_mut() {
                    f.merge(facts);
                }
            } else if e.is("core", "hookspath") {
                // Relative: from where hooks run, the top of the work tree.
                let base = repo.as_ref().and_then(|(w, _)| *w).map(Path::to_path_buf);
                let target = if text.is_relative() && !text.starts_with("~") {
                    base.map(|b| self.canonical(&b.join(text)))
                } else {
                    self.config_path(text, &dir)
                };
                if let Some(t) = target {
                    self.push(t, format!("hooks directory set by core.hooksPath in {} ({whose})", file.display()));
                }
            } else if let Some((_, f)) = repo.as_mut() {
                if e.is("extensions", "objectformat") {
                    f.sha256 = value.eq_ignore_ascii_case(b"sha256");
                } else if e.is("core", "worktree") {
                    f.worktree = Some(self.canonical(&dir.join(text)));
                }
            }
        }
    }

    /// A path written in a configuration file: `~/` is the home, relative is relative to
    /// the file's directory. `%(prefix)/` (git's install prefix) is not ours to resolve.
    fn config_path(&self, text: &Path, dir: &Path) -> Option<PathBuf> {
        let shown = text.to_string_lossy();
        if shown.starts_with("%(prefix)") || shown.is_empty() {
            return None;
        }
        let p = if let Ok(rest) = text.strip_prefix("~") {
            self.home.join(rest)
        } else if shown.starts_with('~') {
            return None;
        } else {
            dir.join(text)
        };
        Some(self.canonical(&p))
    }
}

/// What a repository's configuration says about its layout.
#[derive(Debug, Default)]
struct Facts {
    sha256: bool,
    worktree: Option<PathBuf>,
}

impl Facts {
    fn merge(&mut self, o: Facts) {
        self.sha256 |= o.sha256;
        if o.worktree.is_some() {
            self.worktree = o.worktree;
        }
    }

    fn hash_len(&self) -> usize {
        if self.sha256 { 32 } else { 20 }
    }
}

/// A path stored as bytes by git: any bytes on Unix; UTF-8 (lossily) elsewhere, where git
/// itself writes UTF-8.
fn bytes_path(b: &[u8]) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(OsStr::from_bytes(b))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(b).into_owned())
    }
}
