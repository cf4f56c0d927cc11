//! The file tools' access: every path opened beneath the host grant that holds it, no link
//! followed, and decided by the policy.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use palisade_policy::{Access, PathKind, ResolvedPolicy};

/// Largest file read or written, in bytes (4 MiB).
pub const MAX_FILE: u64 = 4 << 20;
/// Most entries `search_files` looks at.
pub const MAX_VISITED: usize = 20_000;
/// Most matches `search_files` returns.
pub const MAX_MATCHES: usize = 500;

/// Why a file tool refused or failed, in words for the MCP client (the path and the rule).
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The host side of the file tools: the policy, the workspace (relative paths are resolved
/// against it), and the host directories never served (the sandbox's private `${tmp}`, whose
/// grant means a private directory inside, never the host's).
#[derive(Debug)]
pub struct Files {
    /// The resolved policy.
    pub policy: ResolvedPolicy,
    /// Grants not served (canonical): the sandbox's private `${tmp}` (a grant inside it, such
    /// as a workspace under `/tmp`, is served).
    pub private: Vec<PathBuf>,
}

/// The lexically normalised absolute form of `path` (relative to `base`); `..` never climbs
/// above `/`.
pub fn normalise(base: &Path, path: &str) -> PathBuf {
    let joined = if Path::new(path).is_absolute() { PathBuf::from(path) } else { base.join(path) };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

impl Files {
    /// The decision for `path` and the access it gives, refusing what the sandbox could not
    /// see or not write.
    fn decide(&self, path: &Path, want: Access) -> Result<String, Refused> {
        let d = self.policy.decide_path(path);
        let why = d.rule.map_or_else(
            || "no rule grants it".to_owned(),
            |r| format!("{} {:?} [{}]", r.kind.key(), r.origin.text, r.origin),
        );
        let why = match d.protected_by {
            Some(p) => format!("{why}, capped read-only by protect {:?} [{}]", p.origin.text, p.origin),
            None => why,
        };
        if d.access < want {
            let what = if d.access == Access::None { "invisible" } else { "read-only" };
            return Err(Refused(format!("{}: {what} under the policy ({why})", path.display())));
        }
        Ok(why)
    }

    /// The host grant (a `read` or `write` rule's directory) that holds `path`: the deepest.
    fn root_of(&self, path: &Path) -> Result<PathBuf, Refused> {
        self.policy
            .paths
            .iter()
            .filter(|r| matches!(r.kind, PathKind::Read | PathKind::Write))
            .map(|r| r.pattern.base())
            .filter(|b| path.starts_with(b) && !self.private.iter().any(|p| b == p))
            .max_by_key(|b| b.components().count())
            .ok_or_else(|| Refused(format!("{}: outside every host directory the policy grants", path.display())))
    }

    /// Never served from the host, whatever a grant says: the host's `/proc`, `/dev` and
    /// `/sys` (the sandbox has its own), and the sandbox's private directories unless a
    /// deeper grant holds the path (a workspace under `/tmp`).
    fn served(&self, path: &Path, root: &Path) -> Result<(), Refused> {
        for sys in ["/proc", "/dev", "/sys"] {
            if path.starts_with(sys) {
                return Err(Refused(format!(
                    "{}: the host's {sys} is never served (the sandbox has its own)",
                    path.display()
                )));
            }
        }
        if let Some(p) = self.private.iter().find(|p| path.starts_with(p) && p.starts_with(root) && *p != root) {
            return Err(Refused(format!(
                "{}: inside the sandbox {} is a private directory, not the host's",
                path.display(),
                p.display()
            )));
        }
        Ok(())
    }

    /// Opens `path` with `O_PATH`, after the policy's grant and the never-served places are
    /// checked: from `/`, no symbolic link followed anywhere (policy paths are canonical, so
    /// a link on the way was put there since) and no `..`.
    #[cfg(target_os = "linux")]
    fn open_path(&self, path: &Path, extra: i32) -> Result<std::os::fd::OwnedFd, Refused> {
        let root = self.root_of(path)?;
        self.served(path, &root)?;
        let slash = palisade_linux::ffi::open_dir(Path::new("/")).map_err(|e| Refused(format!("/: {e}")))?;
        let rel = path.strip_prefix("/").unwrap_or(path);
        palisade_linux::ffi::open_beneath(std::os::fd::AsRawFd::as_raw_fd(&slash), rel, libc::O_PATH | extra, 0)
            .map_err(|e| {
                let hint = match e.raw_os_error() {
                    Some(libc::ELOOP) => " (a symbolic link on the way: links are not followed)",
                    Some(libc::EXDEV) => " (it leads out of its grant)",
                    _ => "",
                };
                Refused(format!("{}: {e}{hint}", path.display()))
            })
    }

    /// Opens `path` for `flags` (read, or write with truncation): a regular file only, seen
    /// with `O_PATH` first so that opening a device or a FIFO has no side effect; a missing
    /// file is made (`O_CREAT | O_EXCL`) in its directory, opened the same way.
    #[cfg(target_os = "linux")]
    fn open(&self, path: &Path, flags: i32, mode: u32) -> Result<std::fs::File, Refused> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let fail = |e: std::io::Error| Refused(format!("{}: {e}", path.display()));
        // The descriptor's own file, through /proc (the path is not walked again).
        let via = |fd: &std::os::fd::OwnedFd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let write = flags & libc::O_WRONLY != 0;
        match self.open_path(path, 0) {
            Ok(fd) => {
                if !std::fs::metadata(via(&fd)).map_err(fail)?.is_file() {
                    return Err(Refused(format!("{}: not a regular file", path.display())));
                }
                let mut o = std::fs::OpenOptions::new();
                if write {
                    o.write(true).truncate(true);
                } else {
                    o.read(true);
                }
                o.custom_flags(libc::O_NOCTTY).open(via(&fd)).map_err(fail)
            }
            Err(_) if write => {
                let (parent, name) = match (path.parent(), path.file_name()) {
                    (Some(p), Some(n)) => (p, n),
                    _ => return Err(Refused(format!("{}: no file name", path.display()))),
                };
                let dir = self.open_path(parent, libc::O_DIRECTORY)?;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
                    .open(via(&dir).join(name))
                    .map_err(fail)
            }
            Err(e) => Err(e),
        }
    }

    /// A directory, opened for listing.
    #[cfg(target_os = "linux")]
    fn open_dir(&self, path: &Path) -> Result<std::os::fd::OwnedFd, Refused> {
        self.open_path(path, libc::O_DIRECTORY)
    }

    #[cfg(not(target_os = "linux"))]
    fn open(&self, path: &Path, _flags: i32, _mode: u32) -> Result<std::fs::File, Refused> {
        let root = self.root_of(path)?;
        self.served(path, &root)?;
        Err(Refused(format!("{}: the file tools are not built for this platform yet", path.display())))
    }

    #[cfg(not(target_os = "linux"))]
    fn open_dir(&self, path: &Path) -> Result<std::fs::File, Refused> {
        self.open(path, 0, 0)
    }

    /// A file the host's git would obey if written here: anything in a `.git` directory or
    /// file, or in a directory that is a git directory (`HEAD`, `objects/` and `refs/`): a
    /// repository made after the policy was read has no protection of its own yet.
    fn git_control(&self, path: &Path, root: &Path) -> Option<PathBuf> {
        if path.components().any(|c| c.as_os_str() == ".git") {
            return Some(path.to_path_buf());
        }
        path.ancestors()
            .skip(1)
            .take_while(|a| a.starts_with(root))
            .find(|a| a.join("HEAD").is_file() && a.join("objects").is_dir() && a.join("refs").is_dir())
            .map(Path::to_path_buf)
    }

    /// Refuses a write the host's git would obey.
    fn not_git(&self, path: &Path) -> Result<(), Refused> {
        let root = self.root_of(path)?;
        match self.git_control(path, &root) {
            Some(g) => Err(Refused(format!(
                "{}: inside the git directory {}: what git on the host runs is never written by a tool",
                path.display(),
                g.display()
            ))),
            None => Ok(()),
        }
    }

    /// `read_file`: the file's text (UTF-8, lossy), at most [`MAX_FILE`] bytes.
    ///
    /// # Errors
    /// A [`Refused`] naming the path and the rule, or the system's error.
    pub fn read(&self, path: &Path) -> Result<(String, String), Refused> {
        let why = self.decide(path, Access::Read)?;
        let mut f = self.file(path, read_flags(), 0)?;
        let mut data = Vec::new();
        (&mut f).take(MAX_FILE + 1).read_to_end(&mut data).map_err(|e| Refused(format!("{}: {e}", path.display())))?;
        if data.len() as u64 > MAX_FILE {
            return Err(Refused(format!("{}: larger than {MAX_FILE} bytes", path.display())));
        }
        Ok((String::from_utf8_lossy(&data).into_owned(), why))
    }

    /// `write_file`: makes or replaces the file with `text`.
    ///
    /// # Errors
    /// A [`Refused`] naming the path and the rule, or the system's error.
    pub fn write(&self, path: &Path, text: &str) -> Result<String, Refused> {
        let why = self.decide(path, Access::Write)?;
        self.not_git(path)?;
        if text.len() as u64 > MAX_FILE {
            return Err(Refused(format!("{}: more than {MAX_FILE} bytes", path.display())));
        }
        let mut f = self.file(path, write_flags(), 0o644)?;
        f.write_all(text.as_bytes()).map_err(|e| Refused(format!("{}: {e}", path.display())))?;
        Ok(why)
    }

    /// `edit_file`: replaces the one occurrence of `old` with `new`.
    ///
    /// # Errors
    /// A [`Refused`] when `old` occurs zero or several times, or as for [`Files::write`].
    pub fn edit(&self, path: &Path, old: &str, new: &str) -> Result<String, Refused> {
        self.decide(path, Access::Write)?;
        self.not_git(path)?;
        let (text, _) = self.read(path)?;
        let n = if old.is_empty() { 0 } else { text.matches(old).count() };
        if n != 1 {
            return Err(Refused(format!(
                "{}: the text to replace occurs {n} times; it must occur exactly once",
                path.display()
            )));
        }
        self.write(path, &text.replacen(old, new, 1))
    }

    /// `list_directory`: the visible entries, `NAME/` for directories, sorted.
    ///
    /// # Errors
    /// A [`Refused`] naming the path and the rule, or the system's error.
    pub fn list(&self, path: &Path) -> Result<(Vec<String>, String), Refused> {
        let why = self.decide(path, Access::Read)?;
        let mut out = Vec::new();
        for (name, dir) in self.entries(path)? {
            if self.policy.decide_path(&path.join(&name)).access != Access::None {
                out.push(if dir { format!("{name}/") } else { name });
            }
        }
        out.sort();
        Ok((out, why))
    }

    /// `search_files`: paths beneath `path` whose name contains `pattern` (visible ones only;
    /// at most [`MAX_MATCHES`], looking at [`MAX_VISITED`] entries).
    ///
    /// # Errors
    /// A [`Refused`] naming the path and the rule, or the system's error.
    pub fn search(&self, path: &Path, pattern: &str) -> Result<(Vec<String>, String), Refused> {
        let why = self.decide(path, Access::Read)?;
        let (mut found, mut visited, mut stack) = (Vec::new(), 0usize, vec![path.to_path_buf()]);
        while let Some(dir) = stack.pop() {
            let Ok(entries) = self.entries(&dir) else { continue };
            for (name, is_dir) in entries {
                visited += 1;
                let p = dir.join(&name);
                if visited > MAX_VISITED || found.len() >= MAX_MATCHES {
                    found.push(format!("(stopped after {visited} entries)"));
                    return Ok((found, why));
                }
                if self.policy.decide_path(&p).access == Access::None {
                    continue;
                }
                if name.contains(pattern) {
                    found.push(p.display().to_string());
                }
                if is_dir {
                    stack.push(p);
                }
            }
        }
        found.sort();
        Ok((found, why))
    }

    /// The entries of a directory opened beneath its grant: name and whether it is a
    /// directory (links are neither followed nor listed as directories).
    fn entries(&self, dir: &Path) -> Result<Vec<(String, bool)>, Refused> {
        let fd = self.open_dir(dir)?;
        // The descriptor's own directory, read through /proc (the path is not walked again).
        let at = fd_path(&fd);
        let rd = std::fs::read_dir(&at).map_err(|e| Refused(format!("{}: {e}", dir.display())))?;
        Ok(rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_owned();
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                Some((name, is_dir))
            })
            .collect())
    }

    /// Opens a regular file beneath its grant.
    fn file(&self, path: &Path, flags: i32, mode: u32) -> Result<std::fs::File, Refused> {
        self.open(path, flags, mode)
    }
}

#[cfg(target_os = "linux")]
fn fd_path(fd: &std::os::fd::OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd)))
}

#[cfg(not(target_os = "linux"))]
fn fd_path(_: &std::fs::File) -> PathBuf {
    PathBuf::new()
}

#[cfg(target_os = "linux")]
fn read_flags() -> i32 {
    libc::O_RDONLY | libc::O_NOCTTY
}

#[cfg(target_os = "linux")]
fn write_flags() -> i32 {
    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOCTTY
}

#[cfg(not(target_os = "linux"))]
fn read_flags() -> i32 {
    0
}

#[cfg(not(target_os = "linux"))]
fn write_flags() -> i32 {
    0
}
