//! Files in a workspace that share their inode with files outside it (hard links), for
//! `palisade check`.
//!
//! uv (on Linux) and pnpm link most of what they install from a shared cache into the project
//! by hard link: measured here, 92 to 99.8% of the files of a `.venv` or `node_modules`. A
//! write inside the sandbox to such a file, through the workspace's name for it, changes the
//! cache and every project that uses it. Mounts and Landlock decide by path, and the path is
//! the workspace's: nothing in the kernel tells these files apart from the project's own, and
//! finding them means `lstat`ing every file (3.5 to 5 µs each: 10 to 100 ms for a project),
//! which is too slow for every run. `palisade check` does it once and says what to change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// At most this many entries are examined (about a second).
pub const BUDGET: usize = 250_000;

/// What the scan found.
#[derive(Debug, Default)]
pub struct Report {
    /// Files with a link outside the tree, by top-level directory of the tree (`.venv`,
    /// `node_modules`, ...), with one example each.
    pub by_top: Vec<(String, usize, PathBuf)>,
    pub files: usize,
    /// The scan stopped at [`BUDGET`] entries.
    pub truncated: bool,
}

/// Scans `root` for regular files whose link count is higher than the links found inside
/// `root` (a file hard-linked twice inside the tree, as `cargo` does in `target/`, is not
/// reported).
#[cfg(unix)]
pub fn scan(root: &Path) -> Report {
    use std::os::unix::fs::MetadataExt;
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
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let Ok(m) = e.metadata() else { continue };
                if m.nlink() > 1 {
                    let entry = seen.entry((m.dev(), m.ino())).or_insert((m.nlink(), 0, e.path()));
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
    report
}

#[cfg(not(unix))]
pub fn scan(_: &Path) -> Report {
    Report::default()
}

/// What to change, for the tools that make such links.
pub const ADVICE: &str = "a write inside the sandbox changes these files wherever they are linked (a package cache and every project using it); \
     make the tool copy for projects you run agents in: uv `UV_LINK_MODE=copy` (or `link-mode = \"copy\"`), \
     pnpm `package-import-method=copy` (pnpm-workspace.yaml or `pnpm config set`), then reinstall";
