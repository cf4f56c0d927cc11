//! Read-only questions about the host file system, asked through a trait so that everything
//! that depends on what exists (the derived protections, the Linux plan) stays pure and is
//! tested with a fake file system. The real implementation is [`crate::load::RealFs`].

use std::ffi::OsString;
use std::path::Path;

use serde::Serialize;

/// What a path is on the host (from `lstat`, never following a final symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link, not followed.
    Symlink,
    /// A device, socket or FIFO.
    Other,
}

/// Read-only questions about the host file system. Paths are absolute.
pub trait HostFs {
    /// `lstat(path)`: what is there, or `None` when nothing is (or it cannot be seen).
    fn kind(&self, path: &Path) -> Option<Kind>;
    /// The entries of a directory (names and kinds, from `readdir`); empty when unreadable.
    fn list(&self, dir: &Path) -> Vec<(OsString, Kind)>;
    /// [`HostFs::list`], but `None` when the directory exists and cannot be listed (its
    /// mode, an I/O error): for a search that must not take an unreadable directory for an
    /// empty one (a sandbox can `chmod 000` a directory of its workspace so that the next
    /// run's search skips it, then restore it).
    fn try_list(&self, dir: &Path) -> Option<Vec<(OsString, Kind)>> {
        Some(self.list(dir))
    }
    /// [`HostFs::kind`], but `None` when it cannot be told (a parent that cannot be
    /// searched, an I/O error) rather than absent: `Some(None)` is absent.
    fn try_kind(&self, path: &Path) -> Option<Option<Kind>> {
        Some(self.kind(path))
    }
    /// The first `limit` bytes of a regular file (links followed, as git follows them);
    /// `None` when it is not a regular file or cannot be read.
    fn read(&self, path: &Path, limit: usize) -> Option<Vec<u8>>;
    /// `readlink(path)`: where the symbolic link `path` leads, as written in it; `None` when
    /// it is no link (or this host cannot tell).
    fn read_link(&self, _path: &Path) -> Option<std::path::PathBuf> {
        None
    }
    /// `stat(path)`: what is there when a final symbolic link is followed.
    fn kind_followed(&self, path: &Path) -> Option<Kind> {
        self.kind(path)
    }
    /// Up to `len` bytes of a regular file from `offset` (fewer at its end); `None` when it
    /// is not a regular file or cannot be read.
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> Option<Vec<u8>> {
        let data = self.read(path, offset as usize + len)?;
        Some(data.get(offset as usize..).unwrap_or_default().to_vec())
    }
    /// When `path`'s inode last changed (`st_ctime`, seconds and nanoseconds; not following a
    /// final link; unlike the modification time, no one can set it), `None` when it does not
    /// exist or this host cannot tell.
    fn changed(&self, _path: &Path) -> Option<(i64, i64)> {
        None
    }
    /// `path`'s device and inode numbers and change time (seconds, nanoseconds), not
    /// following a final link: what tells that a directory is still the one listed before,
    /// unchanged (a rename, a mount over it or any name added or removed in it changes one
    /// of them). `None` when it does not exist or this host cannot tell.
    fn stamp(&self, _path: &Path) -> Option<(u64, u64, i64, i64)> {
        None
    }
}

/// The contents and mode of a `commondir` placeholder: a git directory that is its own
/// common directory, which is what git assumes when the file is absent. (Git tests whether
/// `commondir` exists before reading it, so a placeholder that cannot be read would stop it.)
pub const COMMONDIR_PLACEHOLDER: &[u8] = b".\n";
/// The contents of an empty-configuration placeholder: a comment, which git reads as no
/// configuration at all, and which no one else's file holds.
pub const EMPTY_CONFIG_PLACEHOLDER: &[u8] =
    b"# Palisade holds this name while a sandbox runs, and removes this file when it ends.\n";
/// The mode of both file placeholders.
pub const FILE_PLACEHOLDER_MODE: u32 = 0o444;

/// Whether a path whose name is `name` and whose `lstat` gave `file_type`, permission bits
/// `perm` and `size` may be one of Palisade's placeholders, before its contents are checked.
pub fn placeholder_shape(name: &std::ffi::OsStr, file_type: Kind, perm: u32, size: u64) -> Option<PlaceholderShape> {
    let perm = perm & 0o7777;
    match file_type {
        Kind::Other | Kind::Dir if perm == 0 => Some(PlaceholderShape::Empty),
        Kind::File
            if perm == FILE_PLACEHOLDER_MODE && name == "commondir" && size == COMMONDIR_PLACEHOLDER.len() as u64 =>
        {
            Some(PlaceholderShape::Commondir)
        }
        Kind::File if perm == FILE_PLACEHOLDER_MODE && size == EMPTY_CONFIG_PLACEHOLDER.len() as u64 => {
            Some(PlaceholderShape::EmptyConfig)
        }
        _ => None,
    }
}

/// The kinds of placeholder on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceholderShape {
    /// An empty socket (or empty directory) of mode 000.
    Empty,
    /// A `commondir` file, mode 444, holding [`COMMONDIR_PLACEHOLDER`].
    Commondir,
    /// A file of mode 444 holding [`EMPTY_CONFIG_PLACEHOLDER`].
    EmptyConfig,
}

impl PlaceholderShape {
    /// The contents a file of this shape must have to be a placeholder (none for the others).
    pub fn contents(self) -> Option<&'static [u8]> {
        match self {
            PlaceholderShape::Empty => None,
            PlaceholderShape::Commondir => Some(COMMONDIR_PLACEHOLDER),
            PlaceholderShape::EmptyConfig => Some(EMPTY_CONFIG_PLACEHOLDER),
        }
    }
}

/// An in-memory host for tests (of this crate and of the backends' planners): paths with a
/// kind and, for files, contents. Adding a path adds its missing ancestors as directories.
#[derive(Debug, Clone, Default)]
pub struct MemFs {
    entries: std::collections::BTreeMap<std::path::PathBuf, (Kind, Vec<u8>)>,
}

impl MemFs {
    /// An empty file system: nothing exists, not even `/`.
    pub fn new() -> MemFs {
        MemFs::default()
    }

    /// Adds `path` as `kind` (and its ancestors as directories).
    pub fn with(mut self, path: &str, kind: Kind) -> MemFs {
        self.add(path, kind, Vec::new());
        self
    }

    /// Adds a file with contents.
    pub fn file(mut self, path: &str, contents: &str) -> MemFs {
        self.add(path, Kind::File, contents.as_bytes().to_vec());
        self
    }

    /// Adds the minimal layout of a git directory at `gitdir`: `HEAD`, `objects/`,
    /// `refs/`, `hooks/`, `info/` and an empty `config`.
    pub fn git_dir(self, gitdir: &str) -> MemFs {
        self.file(&format!("{gitdir}/HEAD"), "ref: refs/heads/main\n")
            .with(&format!("{gitdir}/objects"), Kind::Dir)
            .with(&format!("{gitdir}/refs"), Kind::Dir)
            .with(&format!("{gitdir}/hooks"), Kind::Dir)
            .with(&format!("{gitdir}/info"), Kind::Dir)
            .file(&format!("{gitdir}/config"), "[core]\n\tbare = false\n")
    }

    fn add(&mut self, path: &str, kind: Kind, contents: Vec<u8>) {
        let p = std::path::PathBuf::from(path);
        for a in p.ancestors().skip(1) {
            self.entries.entry(a.to_path_buf()).or_insert((Kind::Dir, Vec::new()));
        }
        self.entries.insert(p, (kind, contents));
    }
}

impl HostFs for MemFs {
    fn kind(&self, path: &Path) -> Option<Kind> {
        self.entries.get(path).map(|(k, _)| *k)
    }

    fn list(&self, dir: &Path) -> Vec<(OsString, Kind)> {
        self.entries
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .filter_map(|(p, (k, _))| Some((p.file_name()?.to_os_string(), *k)))
            .collect()
    }

    fn read(&self, path: &Path, limit: usize) -> Option<Vec<u8>> {
        match self.entries.get(path) {
            Some((Kind::File, data)) => Some(data[..data.len().min(limit)].to_vec()),
            _ => None,
        }
    }
}
