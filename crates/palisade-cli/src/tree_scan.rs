//! One walk of a workspace for `palisade check`: files that share their inode with files
//! outside it (hard links), and git repositories deeper than `run` looks for them.
//!
//! Hard links: uv (on Linux) and pnpm link most of what they install from a shared cache into
//! the project by hard link: measured here, 92 to 99.8% of the files of a `.venv` or
//! `node_modules`. A write inside the sandbox to such a file, through the workspace's name
//! for it, changes the cache and every project that uses it. Mounts and Landlock decide by
//! path, and the path is the workspace's: nothing in the kernel tells these files apart from
//! the project's own, and finding them means `lstat`ing every file (3.5 to 5 µs each: 10 to
//! 100 ms for a project), which is too slow for every run.
//!
//! Repositories: `run` finds the nested repositories of a work tree one directory down, and
//! submodules at any depth (from the index); an untracked checkout deeper down
//! (`third_party/lib/.git`) would cost a walk of the tree at every start (28 ms measured with
//! a 1,500-package `node_modules` at two levels), so its hooks and configuration stay writable
//! inside. The walk here lists every `.git`, and every directory git would take for a bare
//! repository (`HEAD`, `objects/`, `refs/`), and names those `run` does not protect.

// Linux's and Windows' `check` report it; the other platforms have no backend yet.
#![cfg_attr(not(any(target_os = "linux", windows)), allow(dead_code))]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// At most this many entries are examined (about a second).
pub const BUDGET: usize = 250_000;

/// What the walk found.
#[derive(Debug, Default)]
pub struct Report {
    /// Files with a link outside the tree, by top-level directory of the tree (`.venv`,
    /// `node_modules`, ...), with one example each.
    pub by_top: Vec<(String, usize, PathBuf)>,
    pub files: usize,
    /// Every `.git` (directory, file or link) below the root, the root's own excepted.
    pub dot_gits: Vec<PathBuf>,
    /// Directories outside every `.git` that git would take for a bare repository (a `HEAD`
    /// file beside `objects/` and `refs/`), the root excepted.
    pub bare_dirs: Vec<PathBuf>,
    /// The walk stopped at [`BUDGET`] entries.
    pub truncated: bool,
}

/// Walks `root` (not following links) for regular files whose link count is higher than the
/// links found inside `root` (a file hard-linked twice inside the tree, as `cargo` does in
/// `target/`, is not reported), and for `.git` entries. Unreadable directories are skipped.
/// On Windows a file's identity is its volume and file index, as `GetFileInformationByHandle`
/// gives them (a DACL belongs to the file, so the workspace's grant reaches its other names).
pub fn scan(root: &Path) -> Report {
    let mut seen: HashMap<(u64, u64), (u64, u64, PathBuf)> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut budget = BUDGET;
    let mut report = Report::default();
    'walk: while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            if budget == 0 {
                report.truncated = true;
                break 'walk;
            }
            budget -= 1;
            let Ok(ft) = e.file_type() else { continue };
            if e.file_name() == ".git" && dir != root {
                report.dot_gits.push(e.path());
            }
            if e.file_name() == "HEAD"
                && !ft.is_dir()
                && dir != root
                && !dir.components().any(|c| c.as_os_str() == ".git")
                && dir.join("objects").is_dir()
                && dir.join("refs").is_dir()
            {
                report.bare_dirs.push(dir.clone());
            }
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let Some((id, links)) = identity(&e) else { continue };
                if links > 1 {
                    let entry = seen.entry(id).or_insert((links, 0, e.path()));
                    entry.1 += 1;
                }
            }
        }
    }
    let mut tops: HashMap<String, (usize, PathBuf)> = HashMap::new();
    for (nlink, inside, path) in seen.into_values() {
        if inside >= nlink {
            continue;
        }
        report.files += 1;
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let top = rel.components().next().map_or_else(String::new, |c| c.as_os_str().to_string_lossy().into_owned());
        let t = tops.entry(top).or_insert((0, path.clone()));
        t.0 += 1;
    }
    report.by_top = tops.into_iter().map(|(k, (n, p))| (k, n, p)).collect();
    report.by_top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    report.dot_gits.sort();
    report.bare_dirs.sort();
    report
}

/// The file's identity (device and inode) and its number of links.
#[cfg(unix)]
fn identity(e: &std::fs::DirEntry) -> Option<((u64, u64), u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = e.metadata().ok()?;
    Some(((m.dev(), m.ino()), m.nlink()))
}

/// The file's identity (volume serial and file index) and its number of links.
#[cfg(windows)]
fn identity(e: &std::fs::DirEntry) -> Option<((u64, u64), u64)> {
    let id = palisade_windows::file_identity(&e.path()).ok()?;
    Some(((u64::from(id.volume), id.index), u64::from(id.links)))
}

/// No portable way to count a file's links: none are reported.
#[cfg(not(any(unix, windows)))]
fn identity(_: &std::fs::DirEntry) -> Option<((u64, u64), u64)> {
    None
}

/// The work trees among `dot_gits`, and the directories among `bare_dirs`, whose git
/// directory is not one of `protected` (canonical git directories, as the policy lists
/// them): a `.git` directory is its own git directory; a `.git` file or link names one (a
/// relative `gitdir:` is relative to the file's directory, as git reads it); a bare
/// directory is its own. A `.git` that names nothing git would use is left out: git on the
/// host ignores it too.
pub fn unprotected_repositories(dot_gits: &[PathBuf], bare_dirs: &[PathBuf], protected: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        bare_dirs.iter().filter(|d| d.canonicalize().is_ok_and(|c| !protected.contains(&c))).cloned().collect();
    for dot in dot_gits {
        let Some(work_tree) = dot.parent() else { continue };
        let git_dir = match std::fs::symlink_metadata(dot) {
            Ok(m) if m.is_file() => {
                let text = std::fs::read(dot).unwrap_or_default();
                let Some(target) = text.strip_prefix(b"gitdir:") else { continue };
                let target = String::from_utf8_lossy(target).trim().to_owned();
                work_tree.join(target)
            }
            Ok(_) => dot.clone(),
            Err(_) => continue,
        };
        let Ok(git_dir) = git_dir.canonicalize() else { continue };
        if !git_dir.is_dir() || protected.contains(&git_dir) {
            continue;
        }
        out.push(work_tree.to_path_buf());
    }
    out
}

/// What to change, for the tools that make such links.
pub const ADVICE: &str = "a write inside the sandbox changes these files wherever they are linked (a package cache and every project using it); \
     make the tool copy for projects you run agents in: uv `UV_LINK_MODE=copy` (or `link-mode = \"copy\"`), \
     pnpm `package-import-method=copy` (pnpm-workspace.yaml or `pnpm config set`), then reinstall";

/// For `.git`: git links the objects of a clone of a local path to the original's.
pub const GIT_ADVICE: &str = "under .git/: a clone of a local path shares its objects with the repository it was cloned from by hard link, so a write there changes both; clone with `git clone --no-hardlinks`, or run `git repack -a -d` in the clone";

/// For repositories `run` does not find.
pub const REPOSITORY_ADVICE: &str = "inside the sandbox their hooks and configuration are writable, and git on the host runs them in those directories; \
     move them up to the top of the workspace, make them submodules, or protect each one's .git (`--protect DIR/.git`, or `protect` in your policy)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_matched_by_their_git_directory() {
        let t = std::env::temp_dir().join(format!("palisade-tree-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        for d in ["a/.git", "b/deep/.git", "m/modules/c", "c", "x/y/objects", "x/y/refs"] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        std::fs::write(t.join("x/y/HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(t.join("c/.git"), "gitdir: ../m/modules/c\n").unwrap();
        std::fs::create_dir_all(t.join("d")).unwrap();
        std::fs::write(t.join("d/.git"), "not a gitfile\n").unwrap();
        let r = scan(&t);
        assert_eq!(r.dot_gits.len(), 4, "{:?}", r.dot_gits);
        let t = t.canonicalize().unwrap();
        let protected = [t.join("a/.git"), t.join("m/modules/c")];
        let dots: Vec<_> = r.dot_gits.iter().map(|p| p.canonicalize().unwrap_or(p.clone())).collect();
        assert_eq!(r.bare_dirs.len(), 1, "{:?}", r.bare_dirs);
        assert_eq!(unprotected_repositories(&dots, &r.bare_dirs, &protected), [t.join("x/y"), t.join("b/deep")]);
        std::fs::remove_dir_all(&t).unwrap();
    }
}
