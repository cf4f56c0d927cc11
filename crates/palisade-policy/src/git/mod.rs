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
use crate::model::Placeholder;
use crate::vars::{PathResolver, normalize_lexically};

/// One path git on the host reads to decide what to run, and why it matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// The path, absolute: `/w/p/.git/config`, `/w/p/.git/hooks`, `/w/p/.git` (a file).
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
    /// What stands in for it on the host while it does not exist.
    pub placeholder: Placeholder,
}

/// How deep below a writable root that is no work tree the scan for repositories goes
/// (`root/org/repo/.git` is depth 2), and below a work tree (untracked checkouts beside the
/// code; tracked ones are gitlinks and are found in the index at any depth).
pub const SCAN_DEPTH: usize = 2;
/// How deep below a work tree the scan for untracked repositories goes (see
/// [`SCAN_DEPTH`]).
pub const SCAN_DEPTH_IN_WORK_TREE: usize = 1;
/// At most this many directories are listed per root while scanning (past it, a note says
/// so).
pub const SCAN_BUDGET: usize = 1024;
/// At most this many repositories are protected: each costs mounts at every start, and a
/// sandbox can plant thousands of gitlinks. Past it, deriving the policy fails (naming the
/// cause) rather than starting slowly or leaving some repositories out.
pub const MAX_REPOSITORIES: usize = 512;
/// Git's own limit on nested includes.
const MAX_INCLUDE_DEPTH: usize = 10;
/// How much of an index is read at first (its entries usually end well before); more is read
/// only when they go on.
const INDEX_FIRST_READ: usize = 4 << 20;
const MAX_SMALL: usize = 64 << 10;

/// What discovery found: the controls, every repository (git directory) examined, and what
/// it looked at to find repositories (directories listed or probed for `.git`, indexes
/// read): if none of those changed, a later discovery would find the same repositories.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// The paths to protect, each listed once.
    pub controls: Vec<Control>,
    /// Every valid git directory examined, with its work tree when known.
    pub repositories: Vec<Repository>,
    /// The directories listed or probed for `.git`, and the indexes read; sorted, without
    /// duplicates ([`crate::load::RepoWatch`] stamps them).
    pub watched: Vec<PathBuf>,
    /// What could not be examined, in words (for a warning at every run).
    pub notes: Vec<String>,
    /// More repositories than the bounds allow were found (the rest were not examined).
    pub too_many: bool,
    /// Directories the search could not list (kept read-only as a whole before a run; after
    /// one, a repository made inside could not be looked for).
    pub unlisted: Vec<PathBuf>,
    /// The search ran out of its budget of directories under some root.
    pub incomplete: bool,
}

/// A git directory, and the work tree whose index records it as a gitlink, if any (git
/// status there descends into it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// The git directory, canonical as git finds it (links followed where they stand).
    pub git_dir: PathBuf,
    /// The work tree whose index records this repository as a gitlink, if any.
    pub gitlink_of: Option<PathBuf>,
    /// Its common directory, when its `commondir` names another (a linked worktree): where
    /// its configuration and hooks are.
    pub common: Option<PathBuf>,
    /// Its work tree, when known.
    pub work_tree: Option<PathBuf>,
}

/// How far one discovery goes.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Repositories examined at most (past it, [`Found::too_many`]).
    pub repositories: usize,
    /// Directories listed at most per root while scanning.
    pub scan_budget: usize,
}

impl Bounds {
    /// Before a run: every repository found costs mounts at every start.
    pub const START: Bounds = Bounds { repositories: MAX_REPOSITORIES, scan_budget: SCAN_BUDGET };
    /// After a run, looking for what the sandbox made: no mounts to pay for, and a sandbox
    /// may make many decoys to hide one repository past the start's bounds.
    pub const AFTER_RUN: Bounds = Bounds { repositories: 32 * MAX_REPOSITORIES, scan_budget: 16 * SCAN_BUDGET };
}

/// Finds the git controls for `roots` (writable directories, canonical). `globals` are the
/// user's and the system's git configuration files (their includes and `core.hooksPath` can
/// name files under a root); `home` expands `~` in configuration paths. Within
/// [`Bounds::START`].
pub fn discover(
    roots: &[PathBuf],
    globals: &[PathBuf],
    home: &Path,
    fs: &dyn HostFs,
    resolver: &dyn PathResolver,
) -> Found {
    discover_within(roots, globals, home, fs, resolver, Bounds::START)
}

/// [`discover`] within other bounds.
pub fn discover_within(
    roots: &[PathBuf],
    globals: &[PathBuf],
    home: &Path,
    fs: &dyn HostFs,
    resolver: &dyn PathResolver,
    bounds: Bounds,
) -> Found {
    let mut d = Discovery {
        bounds,
        fs,
        resolver,
        home,
        out: Vec::new(),
        seen: HashSet::new(),
        queue: Vec::new(),
        repositories: Vec::new(),
        gitlink_of: None,
        watched: Vec::new(),
        roots,
        common: Default::default(),
        notes: Vec::new(),
        too_many: false,
        relative_globals: Vec::new(),
        work_trees: Vec::new(),
        unlisted: Vec::new(),
        roots_index: 0,
        stopped: Vec::new(),
    };
    for g in globals {
        d.config_file(g, None, 0, "your git configuration");
    }
    for (i, root) in roots.iter().enumerate() {
        d.roots_index = i;
        d.root(root);
    }
    while let Some((gitdir, worktree)) = d.queue.pop() {
        d.git_dir(&gitdir, worktree.as_deref());
    }
    let mut seen = HashSet::new();
    d.out.retain(|c| seen.insert(c.path.clone()));
    // A missing file that git reads as configuration is held by a file git reads as empty
    // configuration, unless it lies in a work tree (outside any git directory), where
    // `git add -A` would stage it.
    let git_dirs: Vec<&Path> =
        d.repositories.iter().flat_map(|r| [Some(r.git_dir.as_path()), r.common.as_deref()]).flatten().collect();
    for c in &mut d.out {
        let in_git_dir = git_dirs.iter().any(|g| c.path.starts_with(g));
        if c.placeholder == Placeholder::EmptyConfig
            && !in_git_dir
            && d.work_trees.iter().any(|w| c.path.starts_with(w))
        {
            c.placeholder = Placeholder::Absent;
        }
    }
    d.watched.sort();
    d.watched.dedup();
    Found {
        controls: d.out,
        repositories: d.repositories,
        watched: d.watched,
        notes: d.notes,
        too_many: d.too_many,
        unlisted: d.unlisted,
        incomplete: !d.stopped.is_empty(),
    }
}

struct Discovery<'a> {
    bounds: Bounds,
    fs: &'a dyn HostFs,
    resolver: &'a dyn PathResolver,
    home: &'a Path,
    out: Vec<Control>,
    /// Git directories already queued (canonical).
    seen: HashSet<PathBuf>,
    /// Git directories to examine, with their work tree when known.
    queue: Vec<(PathBuf, Option<PathBuf>)>,
    /// Valid git directories examined.
    repositories: Vec<Repository>,
    /// While reading an index's gitlinks: whose index it is.
    gitlink_of: Option<PathBuf>,
    /// What was looked at to find repositories.
    watched: Vec<PathBuf>,
    /// The writable roots.
    roots: &'a [PathBuf],
    /// `commondir` of each git directory asked about (it is asked several times).
    common: std::cell::RefCell<std::collections::HashMap<PathBuf, Option<PathBuf>>>,
    notes: Vec<String>,
    too_many: bool,
    /// Relative paths from the user's or the system's configuration that git takes relative
    /// to each work tree (`core.hooksPath`, scripts of filters and drivers).
    relative_globals: Vec<(PathBuf, String)>,
    /// Work trees of the repositories found.
    work_trees: Vec<PathBuf>,
    /// Directories that could not be listed.
    unlisted: Vec<PathBuf>,
    /// Which root is being searched, and the roots whose search ran out of budget.
    roots_index: usize,
    stopped: Vec<usize>,
}

impl Discovery<'_> {
    /// `list(dir)`, remembering that `dir` was looked at.
    fn list(&mut self, dir: &Path) -> Vec<(std::ffi::OsString, Kind)> {
        self.watched.push(dir.to_path_buf());
        self.fs.list(dir)
    }

    /// Whether `dir/.git` exists, remembering that `dir` was looked at (a `.git` made there
    /// later changes `dir`'s modification time).
    fn has_dot_git(&mut self, dir: &Path) -> bool {
        self.watched.push(dir.to_path_buf());
        self.fs.kind(&dir.join(".git")).is_some()
    }

    /// A directory that cannot be listed or searched could hold a repository whose
    /// configuration and hooks the sandbox could then change unseen (it may have made the
    /// directory unreadable in an earlier run, to restore it in this one): kept read-only as
    /// a whole, and named ([`Found::unlisted`]).
    fn unsearchable(&mut self, dir: &Path) {
        self.unlisted.push(dir.to_path_buf());
        self.push(
            dir.to_path_buf(),
            format!(
                "{} cannot be listed or searched, so a repository inside it could not be looked for: it stays read-only",
                dir.display()
            ),
        );
    }

    fn push(&mut self, path: PathBuf, what: String) {
        self.out.push(Control { path, what, follow: true, private_copy: false, placeholder: Placeholder::Absent });
    }

    /// A configuration file of a repository, which git rewrites in place, and reads when it
    /// exists (so a missing one is held by a file git reads as empty configuration).
    fn push_config(&mut self, path: PathBuf, what: String) {
        self.out.push(Control { path, what, follow: true, private_copy: true, placeholder: Placeholder::EmptyConfig });
    }

    /// `p` as git (through the kernel) finds it: links followed where they stand.
    fn canonical(&self, p: &Path) -> PathBuf {
        self.resolver.resolve_physically(p)
    }

    fn enqueue(&mut self, gitdir: PathBuf, worktree: Option<PathBuf>) {
        let gitdir = self.canonical(&gitdir);
        if self.seen.len() >= self.bounds.repositories && !self.seen.contains(&gitdir) {
            self.too_many = true;
            return;
        }
        if self.seen.insert(gitdir.clone()) {
            self.repositories.push(Repository {
                git_dir: gitdir.clone(),
                gitlink_of: self.gitlink_of.clone(),
                common: None,
                work_tree: worktree.clone(),
            });
            self.queue.push((gitdir, worktree));
        } else if let (Some(of), Some(r)) =
            (&self.gitlink_of, self.repositories.iter_mut().find(|r| r.git_dir == gitdir))
        {
            r.gitlink_of.get_or_insert_with(|| of.clone());
        }
    }

    fn root(&mut self, root: &Path) {
        // The repository the root lies in, found upwards as git does.
        let mut in_gitdir = false;
        let mut in_work_tree = false;
        for a in root.ancestors() {
            if self.has_dot_git(a) {
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
        self.bare_guard(root);
        let depth = if in_work_tree { SCAN_DEPTH_IN_WORK_TREE } else { SCAN_DEPTH };
        let mut budget = self.bounds.scan_budget;
        self.scan(root, depth, &mut budget);
    }

    /// Keeps `root` from becoming a bare repository. git takes a directory for one (when its
    /// `.git` is missing or not a valid git directory, which the sandbox can bring about by
    /// moving `.git/objects` away) if its `HEAD` is a valid reference and `objects/` and
    /// `refs/` exist there, or in the directory its `commondir` names (`is_git_directory`
    /// in git's setup.c). `commondir` is always held, and the first of `refs`, `objects`
    /// and `HEAD` that does not exist: `HEAD` stays free while it can (a `HEAD` file in a
    /// work tree makes every `git diff HEAD` ambiguous), and one made in an earlier run
    /// changes nothing. Where all three exist, `HEAD` is kept as it is, and so are what a
    /// bare repository there would run: `config` and `hooks`.
    fn bare_guard(&mut self, root: &Path) {
        let why = format!(
            "with HEAD, objects/ and refs/ (or a commondir naming them) made inside the sandbox, git on the host would take {} for a bare repository and run its config",
            root.display()
        );
        self.push(root.join("commondir"), why.clone());
        match ["refs", "objects", "HEAD"].into_iter().find(|n| self.fs.kind(&root.join(n)).is_none()) {
            Some(missing) => self.push(root.join(missing), why),
            None => {
                for name in ["HEAD", "config", "hooks"] {
                    self.push(root.join(name), why.clone());
                }
            }
        }
    }

    /// Repositories in the directories below `dir`, `depth` levels down.
    fn scan(&mut self, dir: &Path, depth: usize, budget: &mut usize) {
        if depth == 0 {
            return;
        }
        if *budget == 0 {
            // Said once per root (a sandbox can make thousands of directories to push a
            // repository past the budget, and a line for each would bury the one that
            // matters): the first directory left out, and that the search is incomplete.
            if !self.stopped.contains(&self.roots_index) {
                self.stopped.push(self.roots_index);
                self.notes.push(format!(
                    "the search for git repositories stopped after {} directories, first before {}: a repository below the directories not searched is not protected (a directory with more than {} subdirectories at the top of a writable directory does this; made by a sandbox, it may hide one on purpose)",
                    self.bounds.scan_budget,
                    dir.display(),
                    self.bounds.scan_budget
                ));
            }
            return;
        }
        *budget -= 1;
        self.watched.push(dir.to_path_buf());
        let Some(listing) = self.fs.try_list(dir) else {
            self.unsearchable(dir);
            return;
        };
        for (name, kind) in listing {
            if kind != Kind::Dir || name == ".git" {
                continue;
            }
            let sub = dir.join(&name);
            // A directory that can be listed but not searched (mode 600) hides its `.git`
            // from `lstat` just as well.
            self.watched.push(sub.clone());
            let Some(dot_git) = self.fs.try_kind(&sub.join(".git")) else {
                self.unsearchable(&sub);
                continue;
            };
            if dot_git.is_some() {
                self.dot_git(&sub);
            } else if self.fs.kind(&sub.join("HEAD")).is_some() && self.is_git_dir(&sub) {
                // A bare repository (or one made to look like it): git run inside it reads
                // its configuration.
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
                    placeholder: Placeholder::Absent,
                });
                self.enqueue(dot, Some(worktree.to_path_buf()));
            }
            _ => {}
        }
    }

    /// The target of a `gitdir: PATH` file (relative to the file's directory).
    fn gitfile(&self, file: &Path) -> Option<PathBuf> {
        let data = self.fs.read(file, MAX_SMALL)?;
        let rest = path_text(&data).strip_prefix(b"gitdir: ")?;
        if rest.is_empty() {
            return None;
        }
        Some(self.canonical(&file.parent()?.join(bytes_path(rest))))
    }

    /// git's `is_git_directory`, leaning towards yes: a `HEAD` that is not a directory, and
    /// `objects` and `refs` in the common directory that git's `access()` would find, links
    /// followed (git does not care what they are: a link to a directory elsewhere will do).
    fn is_git_dir(&self, p: &Path) -> bool {
        if matches!(self.fs.kind(&p.join("HEAD")), None | Some(Kind::Dir)) {
            return false;
        }
        let common = self.common_dir(p).unwrap_or_else(|| p.to_path_buf());
        self.fs.kind_followed(&common.join("objects")).is_some()
            && self.fs.kind_followed(&common.join("refs")).is_some()
    }

    /// What `gitdir/commondir` points to, if it exists.
    fn common_dir(&self, gitdir: &Path) -> Option<PathBuf> {
        if let Some(c) = self.common.borrow().get(gitdir) {
            return c.clone();
        }
        let c = self
            .fs
            .read(&gitdir.join("commondir"), MAX_SMALL)
            .map(|data| self.canonical(&gitdir.join(bytes_path(path_text(&data)))));
        self.common.borrow_mut().insert(gitdir.to_path_buf(), c.clone());
        c
    }

    fn git_dir(&mut self, g: &Path, worktree: Option<&Path>) {
        if let Some(w) = worktree {
            self.work_trees.push(w.to_path_buf());
        }
        if !self.is_git_dir(g) {
            self.repositories.retain(|r| r.git_dir != g);
            // What its configuration names is protected all the same: the repository may
            // be made whole again, on the host or in a later run.
            let mut facts = Facts::default();
            let whose = format!("the git directory {}", g.display());
            self.config_file(&g.join("config"), Some((worktree, &mut facts)), 0, &whose);
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
        self.out.push(Control {
            path: g.join("commondir"),
            what: format!("commondir of the repository {shown} (says where its configuration and hooks are)"),
            follow: true,
            private_copy: false,
            placeholder: Placeholder::SameDir,
        });
        let common = self.common_dir(g).unwrap_or_else(|| g.to_path_buf());
        if common != g {
            if let Some(r) = self.repositories.iter_mut().find(|r| r.git_dir == g) {
                r.common = Some(common.clone());
            }
            if self.fs.kind(&g.join("gitdir")).is_some() {
                self.push(g.join("gitdir"), format!("gitdir pointer of the linked worktree {shown}"));
            }
            self.enqueue(common.clone(), None);
        }
        let c = common.display().to_string();
        self.push(common.join("hooks"), format!("hooks of the repository {c}"));
        self.hook_links(&common.join("hooks"), &c);
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
        if let Some(wt) = &worktree {
            self.work_trees.push(wt.clone());
            if let Some(r) = self.repositories.iter_mut().find(|r| r.git_dir == g) {
                r.work_tree.get_or_insert_with(|| wt.clone());
            }
            // Paths of the user's or the system's configuration that git takes relative to
            // this work tree.
            for (rel, what) in self.relative_globals.clone() {
                self.push(
                    self.canonical(&wt.join(&rel)),
                    format!("{what} (relative to the work tree {})", wt.display()),
                );
            }
        }
        if common == g {
            for (name, kind) in self.list(&g.join("worktrees")) {
                if kind != Kind::Dir {
                    continue;
                }
                let w = g.join("worktrees").join(&name);
                // `gitdir` holds the path of that work tree's `.git` file.
                let dot = self
                    .fs
                    .read(&w.join("gitdir"), MAX_SMALL)
                    .map(|data| self.canonical(&w.join(bytes_path(path_text(&data)))));
                let wt = dot.as_ref().and_then(|d| d.parent()).map(Path::to_path_buf);
                if wt.as_ref().is_some_and(|wt| self.roots.iter().any(|r| wt.starts_with(r) || r.starts_with(wt))) {
                    // Worked on inside: its pointers are protected, the rest stays writable.
                    if let Some(dot) = dot.filter(|d| self.fs.kind(d) == Some(Kind::File)) {
                        self.push(dot, format!(".git file of the linked worktree of {shown}"));
                    }
                    self.enqueue(w, wt);
                } else {
                    // Not worked on inside: nothing in it needs writing there (one mount
                    // instead of one per pointer).
                    self.push(
                        w.clone(),
                        format!(
                            "private directory of a linked worktree of {shown} whose work tree is not writable inside"
                        ),
                    );
                }
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
        for (name, kind) in self.list(dir) {
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
    /// `git status` there descends into. The entries are read whatever the index's size,
    /// and the extensions are walked by their headers (only `link`, a split index's, is
    /// read), so no extension can hide an entry.
    fn gitlinks(&mut self, g: &Path, wt: &Path, hash_len: usize) {
        let index = g.join("index");
        self.watched.push(index.clone());
        let mut paths = match self.index_gitlinks(&index, hash_len) {
            Ok(Some((links, shared))) => {
                let mut p = links;
                if let Some(shared) = shared {
                    let s = g.join(format!("sharedindex.{shared}"));
                    match self.index_gitlinks(&s, hash_len) {
                        Ok(Some((more, _))) => p.extend(more),
                        Ok(None) => {}
                        Err(e) => self.notes.push(format!(
                            "cannot read {}: {e}: repositories it records are not protected",
                            s.display()
                        )),
                    }
                }
                p
            }
            Ok(None) => return,
            Err(e) => {
                self.notes.push(format!(
                    "cannot read the index {}: {e}: repositories it records as gitlinks are not protected",
                    index.display()
                ));
                return;
            }
        };
        paths.sort();
        paths.dedup();
        self.gitlink_of = Some(wt.to_path_buf());
        for p in paths {
            let sub = normalize_lexically(&wt.join(bytes_path(&p)));
            if sub.starts_with(wt) && self.has_dot_git(&sub) {
                self.dot_git(&sub);
            }
        }
        self.gitlink_of = None;
    }

    /// The gitlinks of the index file `path` and the shared index it names; `Ok(None)` when
    /// there is no index.
    #[allow(clippy::type_complexity)]
    fn index_gitlinks(
        &self,
        path: &Path,
        hash_len: usize,
    ) -> Result<Option<(Vec<Vec<u8>>, Option<String>)>, index::IndexError> {
        let Some(first) = self.fs.read(path, INDEX_FIRST_READ) else { return Ok(None) };
        // The whole file when it is shorter than the first read (most indexes): then the
        // extensions are walked in memory, else read where they are.
        let whole = first.len() < INDEX_FIRST_READ;
        let e = match index::entries(&first, hash_len) {
            Err(index::IndexError::Truncated) if !whole => {
                let all = self.fs.read(path, usize::MAX).unwrap_or_default();
                index::entries(&all, hash_len)
                    .map_err(|e| if e == index::IndexError::Truncated { index::IndexError::Malformed } else { e })?
            }
            Err(index::IndexError::Truncated) => return Err(index::IndexError::Malformed),
            other => other?,
        };
        let read_at = |at: u64, len: usize| -> Option<Vec<u8>> {
            if whole {
                let start = usize::try_from(at).ok()?.min(first.len());
                Some(first[start..start.saturating_add(len).min(first.len())].to_vec())
            } else {
                self.fs.read_at(path, at, len)
            }
        };
        let mut shared = None;
        let mut at = e.end as u64;
        for _ in 0..256 {
            let Some(head) = read_at(at, 8).filter(|h| h.len() == 8) else { break };
            let size = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as u64;
            if &head[..4] == b"link" {
                let body = read_at(at + 8, hash_len).unwrap_or_default();
                shared = index::shared_index(&head[..4], &body, hash_len);
            }
            at += 8 + size;
        }
        Ok(Some((e.gitlinks, shared)))
    }

    /// Hooks that are links: what they lead to is run as well (a hook linked to a script in
    /// the work tree would otherwise stay writable).
    fn hook_links(&mut self, dir: &Path, whose: &str) {
        for (name, kind) in self.fs.list(dir) {
            if kind == Kind::Symlink {
                self.push(
                    dir.join(&name),
                    format!("hook {} of the repository {whose}, a link", name.to_string_lossy()),
                );
            }
        }
    }

    /// Reads one configuration file for what it makes git read or run. `repo` is the work
    /// tree and the facts to fill in when the file is a repository's own (`None` for the
    /// user's and the system's configuration).
    fn config_file(&mut self, file: &Path, mut repo: Option<(Option<&Path>, &mut Facts)>, depth: usize, whose: &str) {
        if depth > MAX_INCLUDE_DEPTH {
            return;
        }
        let Some(data) = self.fs.read(file, MAX_SMALL * 16) else { return };
        let (entries, _) = config::parse(&data);
        // Relative includes are relative to the file's directory as git named it (links
        // not resolved), as git does.
        let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        let work_tree = repo.as_ref().and_then(|(w, _)| *w).map(Path::to_path_buf);
        for e in entries {
            let Some(value) = e.value.as_deref() else { continue };
            let text = &bytes_path(value);
            if e.is("include", "path") || e.is("includeif", "path") {
                let Some(target) = self.config_path(text, &dir) else { continue };
                self.out.push(Control {
                    path: target.clone(),
                    what: format!("configuration included by {} ({whose})", file.display()),
                    follow: true,
                    private_copy: false,
                    placeholder: Placeholder::EmptyConfig,
                });
                let mut facts = Facts::default();
                let nested = repo.as_ref().map(|(w, _)| (*w, &mut facts));
                self.config_file(&target, nested, depth + 1, whose);
                if let Some((_, f)) = repo.as_mut() {
                    f.merge(facts);
                }
            } else if e.is("core", "hookspath") {
                let what = format!("hooks directory set by core.hooksPath in {} ({whose})", file.display());
                // Relative: from where hooks run, the top of the work tree (for the user's
                // configuration, of every work tree).
                let target = if text.is_relative() && !text.to_string_lossy().starts_with('~') {
                    match (&work_tree, repo.is_some()) {
                        (Some(b), _) => Some(self.canonical(&b.join(text))),
                        (None, false) => {
                            self.relative_globals.push((text.clone(), what.clone()));
                            None
                        }
                        (None, true) => None,
                    }
                } else {
                    self.config_path(text, &dir).map(|p| self.canonical(&p))
                };
                if let Some(t) = target {
                    // husky's hooks directory `.husky/_` runs the scripts beside it.
                    if t.file_name() == Some(OsStr::new("_"))
                        && let Some(parent) = t.parent()
                    {
                        self.push(
                            parent.to_path_buf(),
                            format!("scripts that the hooks in {} run ({what})", t.display()),
                        );
                    }
                    self.hook_links(&t, &what);
                    self.push(t, what);
                }
            } else if let Some(cmd) = command_path(&e, value) {
                // A program named by a path, which git runs: a script in the work tree
                // (`filter.x.clean = ./tools/clean.sh`) would otherwise stay writable.
                let what = format!("program run by {}.{} in {} ({whose})", e.section, e.key, file.display());
                if cmd.is_absolute() || cmd.starts_with("~") {
                    if let Some(p) = self.config_path(&cmd, &dir) {
                        self.push(p, what);
                    }
                } else {
                    match (&work_tree, repo.is_some()) {
                        (Some(b), _) => self.push(self.canonical(&b.join(&cmd)), what),
                        (None, false) => self.relative_globals.push((cmd, what)),
                        (None, true) => {}
                    }
                }
            }
            if let Some((_, f)) = repo.as_mut() {
                if e.is("extensions", "objectformat") {
                    f.sha256 = value.eq_ignore_ascii_case(b"sha256");
                } else if e.is("core", "worktree") {
                    f.worktree = Some(self.canonical(&dir.join(text)));
                }
            }
        }
    }

    /// A path written in a configuration file, normalised but with links left in (the way
    /// git names it): `~/` is the home, `~user/` that user's (from the password database),
    /// relative is relative to the file's directory. `%(prefix)/` (git's install prefix) is
    /// not ours to resolve.
    fn config_path(&self, text: &Path, dir: &Path) -> Option<PathBuf> {
        let shown = text.to_string_lossy();
        if shown.starts_with("%(prefix)") || shown.is_empty() {
            return None;
        }
        let p = if let Ok(rest) = text.strip_prefix("~") {
            self.home.join(rest)
        } else if let Some(user) = shown.strip_prefix('~') {
            let (name, rest) = user.split_once('/').unwrap_or((user, ""));
            self.user_home(name)?.join(rest)
        } else {
            dir.join(text)
        };
        Some(normalize_lexically(&p))
    }

    /// A user's home directory, from `/etc/passwd`.
    fn user_home(&self, name: &str) -> Option<PathBuf> {
        let data = self.fs.read(Path::new("/etc/passwd"), 4 << 20)?;
        String::from_utf8_lossy(&data).lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 6 && f[0] == name).then(|| PathBuf::from(f[5]))
        })
    }
}

/// For a key whose value git runs as a command: the program, when it is named by a path
/// (contains a `/`). Aliases and credential helpers run as shell commands after a `!`.
fn command_path(e: &config::Entry, value: &[u8]) -> Option<PathBuf> {
    let runs = matches!(
        (e.section.as_str(), e.key.as_str()),
        ("filter", "clean" | "smudge" | "process")
            | ("diff", "command" | "textconv" | "external")
            | ("merge", "driver")
            | ("core", "fsmonitor" | "pager" | "editor" | "sshcommand" | "askpass")
            | ("credential", "helper")
            | ("gpg", "program")
            | ("sequence", "editor")
            | ("pager", _)
            | ("alias", _)
            | ("uploadpack", "packobjectshook")
    );
    if !runs {
        return None;
    }
    let text = String::from_utf8_lossy(value);
    let text = text.trim_start().trim_start_matches('!').trim_start();
    let first = text.split_whitespace().next()?.trim_matches(['"', '\'']);
    first.contains('/').then(|| PathBuf::from(first))
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
/// The path in a file git reads as one path (a `.git` file, `commondir`, a worktree's
/// `gitdir`): git drops the line ends at its end, then uses it as a C string, up to the
/// first NUL (setup.c: `read_gitfile_gently`, `get_common_dir_noenv`). A newline inside
/// the path is part of it.
fn path_text(data: &[u8]) -> &[u8] {
    let mut end = data.len();
    while end > 0 && matches!(data[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    let data = &data[..end];
    &data[..data.iter().position(|&b| b == 0).unwrap_or(data.len())]
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostfs::MemFs;
    use crate::vars::Lexical;

    fn found(fs: &MemFs, roots: &[&str]) -> Vec<String> {
        let roots: Vec<PathBuf> = roots.iter().map(PathBuf::from).collect();
        let mut v: Vec<String> = discover(&roots, &[], Path::new("/home/u"), fs, &Lexical)
            .controls
            .into_iter()
            .map(|c| c.path.display().to_string())
            .collect();
        v.sort();
        v
    }

    fn has(v: &[String], want: &[&str]) {
        for w in want {
            assert!(v.iter().any(|p| p == w), "{w} missing from {v:#?}");
        }
    }

    fn lacks(v: &[String], unwanted: &[&str]) {
        for w in unwanted {
            assert!(!v.iter().any(|p| p == w), "{w} should not be listed: {v:#?}");
        }
    }

    /// A directory the search cannot list (a sandbox made it unreadable in an earlier run,
    /// to restore it in this one) stays read-only as a whole, and the rest is searched.
    #[test]
    fn a_directory_that_cannot_be_listed_stays_read_only() {
        struct Unlistable(MemFs);
        impl HostFs for Unlistable {
            fn kind(&self, p: &Path) -> Option<Kind> {
                self.0.kind(p)
            }
            fn list(&self, d: &Path) -> Vec<(std::ffi::OsString, Kind)> {
                self.try_list(d).unwrap_or_default()
            }
            fn try_list(&self, d: &Path) -> Option<Vec<(std::ffi::OsString, Kind)>> {
                (d != Path::new("/w/p/a")).then(|| self.0.list(d))
            }
            fn try_kind(&self, p: &Path) -> Option<Option<Kind>> {
                // /w/p/c can be listed, not searched (mode 600).
                (!p.starts_with("/w/p/c/")).then(|| self.0.kind(p))
            }
            fn read(&self, p: &Path, limit: usize) -> Option<Vec<u8>> {
                self.0.read(p, limit)
            }
        }
        let fs =
            Unlistable(MemFs::new().git_dir("/w/p/a/inner/.git").git_dir("/w/p/b/other/.git").git_dir("/w/p/c/.git"));
        let roots = [PathBuf::from("/w/p")];
        let f = discover(&roots, &[], Path::new("/home/u"), &fs, &Lexical);
        let v: Vec<String> = f.controls.iter().map(|c| c.path.display().to_string()).collect();
        has(&v, &["/w/p/a", "/w/p/b/other/.git/hooks", "/w/p/c"]);
        lacks(&v, &["/w/p/a/inner/.git/hooks"]);
        let mut unlisted = f.unlisted.clone();
        unlisted.sort();
        assert_eq!(unlisted, [PathBuf::from("/w/p/a"), "/w/p/c".into()]);
    }

    #[test]
    fn a_repository_at_the_root() {
        let fs = MemFs::new().git_dir("/w/p/.git").file("/w/p/src/a.rs", "");
        let v = found(&fs, &["/w/p"]);
        has(
            &v,
            &[
                "/w/p/.git/commondir",
                "/w/p/.git/config",
                "/w/p/.git/config.worktree",
                "/w/p/.git/hooks",
                "/w/p/.git/info",
                // The root could still be made a bare repository (with .git/objects moved
                // away): commondir and refs are held there, and HEAD left free for
                // `git diff HEAD`.
                "/w/p/commondir",
                "/w/p/refs",
            ],
        );
        lacks(
            &v,
            &["/w/p/.git", "/w/p/.git/objects", "/w/p/.git/refs", "/w/p/.git/index", "/w/p/.git/HEAD", "/w/p/HEAD"],
        );
        // A root with its own refs/ gets objects held instead; with objects/ too, HEAD; with
        // HEAD as well, what a bare repository there would run.
        let refs = MemFs::new().git_dir("/w/p/.git").with("/w/p/refs", Kind::Dir);
        let v = found(&refs, &["/w/p"]);
        has(&v, &["/w/p/commondir", "/w/p/objects"]);
        lacks(&v, &["/w/p/refs", "/w/p/HEAD"]);
        let objects = refs.with("/w/p/objects", Kind::Dir);
        has(&found(&objects, &["/w/p"]), &["/w/p/commondir", "/w/p/HEAD"]);
        let v = found(&objects.file("/w/p/HEAD", "ref: refs/heads/main\n"), &["/w/p"]);
        has(&v, &["/w/p/commondir", "/w/p/HEAD", "/w/p/config", "/w/p/hooks"]);
        let configs: Vec<_> = discover(&[PathBuf::from("/w/p")], &[], Path::new("/h"), &fs, &Lexical)
            .controls
            .into_iter()
            .filter(|c| c.private_copy)
            .map(|c| c.path)
            .collect();
        assert_eq!(configs, [PathBuf::from("/w/p/.git/config"), "/w/p/.git/config.worktree".into()]);
        // Inside the git directory, a missing configuration is held by a file git reads as
        // empty (git on the host reads it during a run); in the work tree it would be staged.
        let found = discover(&[PathBuf::from("/w/p")], &[], Path::new("/h"), &fs, &Lexical);
        let kind = |p: &str| found.controls.iter().find(|c| c.path == Path::new(p)).map(|c| c.placeholder);
        assert_eq!(kind("/w/p/.git/config.worktree"), Some(Placeholder::EmptyConfig));
    }

    #[test]
    fn a_directory_that_is_no_repository_cannot_become_one() {
        let v = found(&MemFs::new().file("/w/p/a", ""), &["/w/p"]);
        assert_eq!(v, ["/w/p/.git", "/w/p/commondir", "/w/p/refs"]);
        // A `.git` directory git would not take for a repository is kept as it is.
        let fs = MemFs::new().with("/w/p/.git/hooks", Kind::Dir).file("/w/p/.git/config", "");
        has(&found(&fs, &["/w/p"]), &["/w/p/.git"]);
        // So is the missing target of a `.git` file.
        let fs = MemFs::new().file("/w/p/.git", "gitdir: ../elsewhere\n").with("/w/elsewhere-not", Kind::Dir);
        has(&found(&fs, &["/w/p"]), &["/w/p/.git", "/w/elsewhere"]);
    }

    #[test]
    fn a_linked_worktree_and_its_main_repository() {
        let fs = MemFs::new()
            .git_dir("/m/.git")
            .file("/m/.git/worktrees/w/HEAD", "ref: refs/heads/w\n")
            .file("/m/.git/worktrees/w/commondir", "../..\n")
            .file("/m/.git/worktrees/w/gitdir", "/w/.git\n")
            .file("/w/.git", "gitdir: /m/.git/worktrees/w\n");
        let v = found(&fs, &["/w"]);
        has(
            &v,
            &[
                "/w/.git",
                "/m/.git/worktrees/w/commondir",
                "/m/.git/worktrees/w/gitdir",
                "/m/.git/worktrees/w/config.worktree",
                "/m/.git/config",
                "/m/.git/hooks",
                "/m/.git/info",
                "/m/.git/commondir",
            ],
        );
        lacks(&v, &["/m/.git/objects", "/m/.git/worktrees", "/m/.git/worktrees/w/HEAD", "/w/.git/config"]);
        // Granting the main repository's .git alone: a worktree not worked on inside is kept
        // whole (one mount), and its .git file, not writable inside, needs nothing.
        let v = found(&fs, &["/m/.git"]);
        has(&v, &["/m/.git/config", "/m/.git/worktrees/w"]);
        lacks(&v, &["/m/.git/worktrees/w/commondir", "/w/.git"]);
    }

    #[test]
    fn an_existing_commondir_leads_to_the_configuration_git_really_reads() {
        let fs = MemFs::new()
            .git_dir("/w/p/.g2")
            .file("/w/p/.git/HEAD", "ref: refs/heads/main\n")
            .file("/w/p/.git/commondir", "../.g2\n");
        has(&found(&fs, &["/w/p"]), &["/w/p/.git/commondir", "/w/p/.g2/config", "/w/p/.g2/hooks"]);
    }

    #[test]
    fn submodules_git_directories_nested_names_included() {
        let fs = MemFs::new()
            .git_dir("/w/p/.git")
            .git_dir("/w/p/.git/modules/libs/a")
            .git_dir("/w/p/.git/modules/libs/a/modules/b");
        has(
            &found(&fs, &["/w/p"]),
            &[
                "/w/p/.git/modules/libs/a/config",
                "/w/p/.git/modules/libs/a/hooks",
                "/w/p/.git/modules/libs/a/commondir",
                "/w/p/.git/modules/libs/a/modules/b/config",
            ],
        );
    }

    #[test]
    fn nested_checkouts_are_found_to_a_bounded_depth() {
        let fs = MemFs::new()
            .git_dir("/w/ws/repo1/.git")
            .git_dir("/w/ws/org/repo2/.git")
            .git_dir("/w/ws/a/b/c/.git")
            .git_dir("/w/ws/backup.git");
        let v = found(&fs, &["/w/ws"]);
        has(
            &v,
            &[
                "/w/ws/repo1/.git/config",
                "/w/ws/org/repo2/.git/hooks",
                "/w/ws/backup.git/config",
                "/w/ws/.git",
                "/w/ws/commondir",
                "/w/ws/refs",
            ],
        );
        lacks(&v, &["/w/ws/a/b/c/.git/config"]);
        // Inside a work tree, one level (deeper ones that git visits are gitlinks in the index).
        let fs = MemFs::new().git_dir("/w/p/.git").git_dir("/w/p/vendored/.git").git_dir("/w/p/a/b/.git");
        let v = found(&fs, &["/w/p"]);
        has(&v, &["/w/p/vendored/.git/config"]);
        lacks(&v, &["/w/p/a/b/.git/config"]);
    }

    #[test]
    fn includes_and_hooks_path_name_more_files() {
        let fs = MemFs::new()
            .git_dir("/w/p/.git")
            .file(
                "/w/p/.git/config",
                "[include]\n\tpath = ../shared.gitconfig\n[includeIf \"gitdir:/w/\"]\n\tpath = ~/more.inc\n[core]\n\thooksPath = .husky/_\n",
            )
            .file("/w/p/shared.gitconfig", "[include]\n\tpath = nested.inc\n");
        has(&found(&fs, &["/w/p"]), &["/w/p/shared.gitconfig", "/w/p/nested.inc", "/home/u/more.inc", "/w/p/.husky/_"]);
        // The user's own configuration can name files under a root too.
        let fs = MemFs::new().git_dir("/w/p/.git").file("/home/u/.gitconfig", "[core]\n\thooksPath = /w/p/hooks\n");
        let v: Vec<_> = discover(
            &[PathBuf::from("/w/p")],
            &[PathBuf::from("/home/u/.gitconfig")],
            Path::new("/home/u"),
            &fs,
            &Lexical,
        )
        .controls
        .into_iter()
        .map(|c| c.path)
        .collect();
        assert!(v.contains(&PathBuf::from("/w/p/hooks")), "{v:?}");
    }

    #[test]
    fn too_many_repositories_stop_discovery_and_say_so() {
        let mut fs = MemFs::new();
        for i in 0..(MAX_REPOSITORIES + 5) {
            fs = fs.git_dir(&format!("/w/ws/r{i}/.git"));
        }
        let f = discover(&[PathBuf::from("/w/ws")], &[], Path::new("/h"), &fs, &Lexical);
        assert!(f.too_many);
        assert!(f.repositories.len() <= MAX_REPOSITORIES);
    }

    #[test]
    fn an_exhausted_scan_says_what_it_did_not_see() {
        let mut fs = MemFs::new();
        for i in 0..(SCAN_BUDGET + 10) {
            fs = fs.with(&format!("/w/ws/d{i:05}/x/y"), Kind::Dir);
        }
        let f = discover(&[PathBuf::from("/w/ws")], &[], Path::new("/h"), &fs, &Lexical);
        // Said once, not once per directory left out (which would bury it), and the result
        // says the search is incomplete (what the run after the sandbox warns about).
        assert_eq!(f.notes.iter().filter(|n| n.contains("stopped after")).count(), 1, "{:?}", f.notes);
        assert!(f.incomplete);
    }

    #[test]
    fn a_bare_repository_below_a_root_is_found_whatever_its_name() {
        let fs = MemFs::new().git_dir("/w/ws/src");
        has(&found(&fs, &["/w/ws"]), &["/w/ws/src/config", "/w/ws/src/hooks"]);
    }

    #[test]
    fn a_root_inside_a_git_directory() {
        let fs = MemFs::new().git_dir("/m/.git");
        has(&found(&fs, &["/m/.git"]), &["/m/.git/config", "/m/.git/hooks"]);
        let v = found(&fs, &["/m/.git/objects"]);
        has(&v, &["/m/.git/config"]);
        lacks(&v, &["/m/.git/objects/.git", "/m/.git/objects/HEAD"]);
    }

    #[test]
    fn a_dot_git_link_is_pinned_not_followed_and_its_target_examined() {
        let fs = MemFs::new().git_dir("/store/p.git").with("/w/p/.git", Kind::Symlink);
        struct Link;
        impl PathResolver for Link {
            fn resolve(&self, p: &Path) -> PathBuf {
                match p.strip_prefix("/w/p/.git") {
                    Ok(rest) => Path::new("/store/p.git").join(rest),
                    Err(_) => p.to_path_buf(),
                }
            }
        }
        let c = discover(&[PathBuf::from("/w/p")], &[], Path::new("/h"), &fs, &Link).controls;
        let link = c.iter().find(|c| c.path == Path::new("/w/p/.git")).expect("the link is listed");
        assert!(!link.follow);
        assert!(c.iter().any(|c| c.path == Path::new("/store/p.git/config")));
    }
}
