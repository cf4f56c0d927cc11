//! The policy crate's only contact with the operating system: finding and reading policy
//! files, reading the process environment and canonicalising paths. Everything else in the
//! crate is pure and works on what this module hands it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::builtin;
use crate::derive::Host;
use crate::error::{PolicyError, Site};
#[cfg(unix)]
use crate::hostfs::PlaceholderShape;
use crate::hostfs::{HostFs, Kind};
use crate::model::{LayerKind, PathKind};
use crate::parse::{LayerBuilder, parse_layer};
use crate::resolve::{ResolveOptions, ResolvedPolicy, resolve};
#[cfg(not(windows))]
use crate::vars::normalize_lexically;
use crate::vars::{PathResolver, Vars};

/// Canonicalises through the real file system. A path that does not exist yet keeps its
/// missing tail, appended to its canonical existing prefix; a dangling symlink is followed
/// to where it points, so a rule on the link covers what the link would create.
///
/// Resolution goes component by component (`lstat`, and `readlink` only for links) and
/// remembers every prefix it has resolved, so the hundred-odd rules of a policy, which share
/// most of their prefixes, cost a few dozen system calls rather than hundreds.
///
/// It is also the host as one run sees it ([`HostFs`]): every `lstat` is made once and
/// shared by resolution, derivation and planning (which ask about the same paths), so keep
/// one for the moment a run is prepared, and a fresh one for a later look.
///
/// Most names a run asks about do not exist (a protected `.vscode` in each work tree, the
/// home's rc files): a directory asked about [`LIST_AFTER`] times is listed once, and a
/// name its listing lacks is absent without an `lstat` of its own (measured: a third of
/// the `lstat`s of a start in a repository with submodules). A name the listing holds is
/// still `lstat`ed, so links, kinds and placeholders are judged as before.
#[derive(Debug, Default)]
pub struct FsResolver {
    cache: RefCell<HashMap<PathBuf, PathBuf>>,
    kinds: RefCell<HashMap<PathBuf, Option<Kind>>>,
    listings: RefCell<HashMap<PathBuf, Listing>>,
}

/// Lookups in one directory after which it is listed.
pub const LIST_AFTER: u8 = 4;
/// A directory with more entries than this is not kept as a listing (its names are
/// `lstat`ed one by one).
pub const LISTING_MAX: usize = 4096;

/// What [`FsResolver`] knows of a directory's names.
#[derive(Debug)]
enum Listing {
    /// Asked about this many times, not listed yet.
    Asked(u8),
    /// Its names, as `readdir` gave them.
    Names(std::collections::HashSet<OsString>),
    /// Not listable (unreadable, too large): every name is `lstat`ed.
    Unlisted,
}

/// How many symbolic links one resolution may follow (as the kernel's `MAXSYMLINKS`).
#[cfg(not(windows))]
const MAX_LINKS: usize = 40;

#[cfg(not(windows))]
impl PathResolver for FsResolver {
    fn resolve(&self, path: &Path) -> PathBuf {
        let mut links = 0;
        self.resolve_inner(&normalize_lexically(path), &mut links)
    }

    fn resolve_physically(&self, path: &Path) -> PathBuf {
        let mut links = 0;
        self.physical(path, &mut links)
    }
}

/// Windows: the longest existing prefix as Windows resolves it (`GetFinalPathNameByHandleW`,
/// through `std::fs::canonicalize`: junctions, symbolic links and 8.3 short names become the
/// long path they lead to), in the canonical spelling of [`crate::winpath`] (no `\\?\`),
/// the missing rest appended. Win32 resolves `..` lexically before the file system sees a
/// path, so the physical resolution is the same.
#[cfg(windows)]
impl PathResolver for FsResolver {
    fn resolve(&self, path: &Path) -> PathBuf {
        if let Some(hit) = self.cache.borrow().get(path) {
            return hit.clone();
        }
        let canon = |p: &Path| {
            crate::winpath::WinPath::parse(&p.to_string_lossy())
                .map(|w| PathBuf::from(w.to_string()))
                .unwrap_or_else(|_| p.to_path_buf())
        };
        let whole = canon(path);
        let mut existing = whole.as_path();
        let mut tail = Vec::new();
        let resolved = loop {
            if let Ok(real) = std::fs::canonicalize(existing) {
                let mut out = canon(&real);
                for name in tail.iter().rev() {
                    out.push(name);
                }
                break out;
            }
            match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    tail.push(name.to_os_string());
                    existing = parent;
                }
                _ => break whole.clone(),
            }
        };
        self.cache.borrow_mut().insert(path.to_path_buf(), resolved.clone());
        resolved
    }
}

#[cfg(not(windows))]
impl FsResolver {
    /// [`PathResolver::resolve_physically`]: component by component from `/`, each link
    /// followed where it stands (at most [`MAX_LINKS`] in all), `..` popping what is
    /// resolved so far. A missing tail is appended as it is.
    fn physical(&self, path: &Path, links: &mut usize) -> PathBuf {
        use std::path::Component;
        let mut cur = PathBuf::from("/");
        for c in path.components() {
            match c {
                Component::RootDir | Component::Prefix(_) => cur = PathBuf::from("/"),
                Component::CurDir => {}
                Component::ParentDir => {
                    cur.pop();
                }
                Component::Normal(name) => {
                    let joined = cur.join(name);
                    cur = match self.kind(&joined) {
                        Some(Kind::Symlink) if *links < MAX_LINKS => match std::fs::read_link(&joined) {
                            Ok(target) => {
                                *links += 1;
                                self.physical(&cur.join(target), links)
                            }
                            Err(_) => joined,
                        },
                        _ => joined,
                    };
                }
            }
        }
        cur
    }

    fn resolve_inner(&self, path: &Path, links: &mut usize) -> PathBuf {
        if let Some(hit) = self.cache.borrow().get(path) {
            return hit.clone();
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return path.to_path_buf();
        };
        let parent = self.resolve_inner(parent, links);
        let joined = parent.join(name);
        let resolved = match self.kind(&joined) {
            Some(Kind::Symlink) if *links < MAX_LINKS => match std::fs::read_link(&joined) {
                Ok(target) => {
                    *links += 1;
                    self.resolve_inner(&normalize_lexically(&parent.join(target)), links)
                }
                Err(_) => joined,
            },
            _ => joined,
        };
        self.cache.borrow_mut().insert(path.to_path_buf(), resolved.clone());
        resolved
    }
}

/// The host file system through `lstat`, `readdir` and `open` (regular files only).
///
/// Palisade's own placeholders (empty sockets of mode 000, which stand for a protected path
/// that does not exist while a sandbox runs; see `docs/linux.md`) are reported as absent, so
/// that a run planned while another is running sees the host as it really is.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

/// Whether `path`, whose `lstat` gave `m`, is one of Palisade's placeholders (see
/// [`crate::hostfs::placeholder_shape`]). A directory counts only when empty.
pub fn is_placeholder(path: &Path, m: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Some(name) = path.file_name() else { return false };
        match crate::hostfs::placeholder_shape(name, kind_of(m.file_type()), m.permissions().mode(), m.len()) {
            Some(PlaceholderShape::Empty) if m.is_dir() => {
                std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
            }
            Some(PlaceholderShape::Empty) => true,
            Some(shape) => RealFs.read(path, 256).as_deref() == shape.contents(),
            None => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, m);
        false
    }
}

fn kind_of(ft: std::fs::FileType) -> Kind {
    if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else {
        Kind::Other
    }
}

impl HostFs for RealFs {
    fn read_link(&self, path: &Path) -> Option<PathBuf> {
        std::fs::read_link(path).ok()
    }

    fn kind(&self, path: &Path) -> Option<Kind> {
        std::fs::symlink_metadata(path).ok().filter(|m| !is_placeholder(path, m)).map(|m| kind_of(m.file_type()))
    }

    fn list(&self, dir: &Path) -> Vec<(OsString, Kind)> {
        self.try_list(dir).unwrap_or_default()
    }

    fn try_kind(&self, path: &Path) -> Option<Option<Kind>> {
        match std::fs::symlink_metadata(path) {
            Ok(m) => Some((!is_placeholder(path, &m)).then(|| kind_of(m.file_type()))),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
                Some(None)
            }
            Err(_) => None,
        }
    }

    fn try_list(&self, dir: &Path) -> Option<Vec<(OsString, Kind)>> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            // Nothing there (or no directory): nothing to list, and nothing hidden.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
                return Some(Vec::new());
            }
            Err(_) => return None,
        };
        let mut failed = false;
        let entries = rd
            .filter_map(|e| {
                failed |= e.is_err();
                e.ok()
            })
            .filter_map(|e| {
                let kind = kind_of(e.file_type().ok()?);
                // Only special files can be placeholders: one more `lstat` for those alone.
                if kind == Kind::Other && e.metadata().is_ok_and(|m| is_placeholder(&e.path(), &m)) {
                    return None;
                }
                Some((e.file_name(), kind))
            })
            .collect();
        (!failed).then_some(entries)
    }

    fn kind_followed(&self, path: &Path) -> Option<Kind> {
        // A placeholder is absent here too (git's `access()` fails on one).
        std::fs::metadata(path).ok().filter(|m| !is_placeholder(path, m)).map(|m| kind_of(m.file_type()))
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> Option<Vec<u8>> {
        use std::io::{Read, Seek};
        let mut o = std::fs::OpenOptions::new();
        o.read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.custom_flags(libc::O_NONBLOCK);
        }
        let mut f = o.open(path).ok()?;
        if !f.metadata().ok()?.is_file() {
            return None;
        }
        f.seek(std::io::SeekFrom::Start(offset)).ok()?;
        let mut buf = Vec::new();
        f.take(len as u64).read_to_end(&mut buf).ok()?;
        Some(buf)
    }

    fn stamp(&self, path: &Path) -> Option<(u64, u64, i64, i64)> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            None
        }
    }

    fn changed(&self, path: &Path) -> Option<(i64, i64)> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            std::fs::symlink_metadata(path).ok().map(|m| (m.ctime(), m.ctime_nsec()))
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            None
        }
    }

    fn read(&self, path: &Path, limit: usize) -> Option<Vec<u8>> {
        use std::io::Read;
        let mut o = std::fs::OpenOptions::new();
        o.read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Links are followed, as git follows them; never a FIFO that would block: regular
            // files only (checked once open).
            o.custom_flags(libc::O_NONBLOCK);
        }
        let f = o.open(path).ok()?;
        let m = f.metadata().ok()?;
        if !m.is_file() {
            return None;
        }
        // Room for the whole file at once (one `read`, and one more that finds the end).
        let mut buf = Vec::with_capacity(usize::try_from(m.len()).unwrap_or(usize::MAX).min(limit).min(1 << 20));
        f.take(limit as u64).read_to_end(&mut buf).ok()?;
        Some(buf)
    }
}

impl FsResolver {
    /// Whether `dir`'s listing says `name` is not there (`false` when `dir` is not listed).
    fn listed_absent(&self, dir: &Path, name: &std::ffi::OsStr) -> bool {
        let mut listings = self.listings.borrow_mut();
        let entry = listings.entry(dir.to_path_buf()).or_insert(Listing::Asked(0));
        if let Listing::Asked(n) = entry {
            *n += 1;
            if *n >= LIST_AFTER {
                *entry = match std::fs::read_dir(dir) {
                    Ok(rd) => {
                        let mut names = std::collections::HashSet::new();
                        let mut complete = true;
                        for e in rd {
                            match e {
                                Ok(e) if names.len() < LISTING_MAX => {
                                    names.insert(e.file_name());
                                }
                                _ => {
                                    complete = false;
                                    break;
                                }
                            }
                        }
                        if complete { Listing::Names(names) } else { Listing::Unlisted }
                    }
                    Err(_) => Listing::Unlisted,
                };
            }
        }
        matches!(entry, Listing::Names(names) if !names.contains(name))
    }
}

impl HostFs for FsResolver {
    fn read_link(&self, path: &Path) -> Option<PathBuf> {
        RealFs.read_link(path)
    }

    fn kind(&self, path: &Path) -> Option<Kind> {
        if let Some(k) = self.kinds.borrow().get(path) {
            return *k;
        }
        let absent = match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => self.listed_absent(dir, name),
            _ => false,
        };
        let k = if absent { None } else { RealFs.kind(path) };
        self.kinds.borrow_mut().insert(path.to_path_buf(), k);
        k
    }

    fn list(&self, dir: &Path) -> Vec<(OsString, Kind)> {
        RealFs.list(dir)
    }

    fn read(&self, path: &Path, limit: usize) -> Option<Vec<u8>> {
        RealFs.read(path, limit)
    }

    fn kind_followed(&self, path: &Path) -> Option<Kind> {
        RealFs.kind_followed(path)
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> Option<Vec<u8>> {
        RealFs.read_at(path, offset, len)
    }

    fn changed(&self, path: &Path) -> Option<(i64, i64)> {
        RealFs.changed(path)
    }

    fn try_list(&self, dir: &Path) -> Option<Vec<(OsString, Kind)>> {
        RealFs.try_list(dir)
    }

    fn try_kind(&self, path: &Path) -> Option<Option<Kind>> {
        RealFs.try_kind(path)
    }

    fn stamp(&self, path: &Path) -> Option<(u64, u64, i64, i64)> {
        RealFs.stamp(path)
    }
}

/// What Palisade reads from the process environment, gathered once. A variable counts only
/// when it is set to an absolute path.
#[derive(Debug, Clone)]
pub struct Environment {
    /// The home directory: `$HOME`, else the user's home in `/etc/passwd`.
    pub home: PathBuf,
    /// The current directory: the default workspace, and the base of relative flag paths
    /// and `--policy` files.
    pub cwd: PathBuf,
    /// `$TMPDIR`, or `/tmp`.
    pub tmp: PathBuf,
    /// `$XDG_CONFIG_HOME`, or `~/.config`: home of `palisade/policy.toml` and
    /// `palisade/profiles/`.
    pub config_home: PathBuf,
    /// `$XDG_STATE_HOME`, or `~/.local/state`.
    pub state_home: PathBuf,
    /// `$XDG_CACHE_HOME`, or `~/.cache`.
    pub cache_home: PathBuf,
    /// git's system and global configuration files (`GIT_CONFIG_SYSTEM` or `/etc/gitconfig`;
    /// `GIT_CONFIG_GLOBAL`, or `$XDG_CONFIG_HOME/git/config` and `~/.gitconfig`).
    pub git_configs: Vec<PathBuf>,
    /// The absolute directories of `$PATH`, in order (where `filesystem.programs` are
    /// looked up, as your shell looks up a command).
    pub path: Vec<PathBuf>,
}

impl Environment {
    /// Reads `HOME` (the password database only when it is unset), `TMPDIR` and the XDG
    /// base directories.
    pub fn from_process() -> Result<Environment, PolicyError> {
        #[cfg(windows)]
        return Environment::from_windows_process();
        #[cfg(not(windows))]
        Environment::from_unix_process()
    }

    /// Windows: `%USERPROFILE%` is the home, `%TEMP%` the temporary directory,
    /// `%APPDATA%` the configuration, `%LOCALAPPDATA%` the state and
    /// `%LOCALAPPDATA%\cache` the cache; git's global configuration as git for Windows
    /// finds it.
    #[cfg(windows)]
    fn from_windows_process() -> Result<Environment, PolicyError> {
        let var = |k: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .and_then(|v| crate::winpath::WinPath::parse(&v).ok())
                .map(|w| PathBuf::from(w.to_string()))
        };
        let need = |k: &str| var(k).ok_or_else(|| PolicyError::Setup(format!("%{k}% is not set to an absolute path")));
        let home = need("USERPROFILE")?;
        let local = need("LOCALAPPDATA")?;
        let cwd = std::env::current_dir()
            .map_err(|e| PolicyError::Setup(format!("cannot read the current directory: {e}")))?;
        let cwd = crate::winpath::WinPath::parse(&cwd.to_string_lossy())
            .map(|w| PathBuf::from(w.to_string()))
            .map_err(|e| PolicyError::Setup(format!("the current directory: {e}")))?;
        let config_home = need("APPDATA")?;
        let mut git_configs = Vec::new();
        match var("GIT_CONFIG_GLOBAL") {
            Some(g) => git_configs.push(g),
            None => git_configs.extend([home.join(".config\\git\\config"), home.join(".gitconfig")]),
        }
        git_configs.extend(var("GIT_CONFIG_SYSTEM"));
        let path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).filter(|d| d.is_absolute()).collect())
            .unwrap_or_default();
        Ok(Environment {
            path,
            tmp: need("TEMP")?,
            git_configs,
            config_home,
            cache_home: local.join("cache"),
            state_home: local,
            home,
            cwd,
        })
    }

    #[cfg(not(windows))]
    fn from_unix_process() -> Result<Environment, PolicyError> {
        let var =
            |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from).filter(|p| p.is_absolute());
        let home = match var("HOME") {
            Some(h) => h,
            None => home_from_passwd().ok_or_else(|| {
                PolicyError::Setup(
                    "HOME is not set and your user has no home directory in /etc/passwd; set HOME".into(),
                )
            })?,
        };
        let cwd = std::env::current_dir()
            .map_err(|e| PolicyError::Setup(format!("cannot read the current directory: {e}")))?;
        let config_home = var("XDG_CONFIG_HOME").unwrap_or_else(|| home.join(".config"));
        let mut git_configs = vec![var("GIT_CONFIG_SYSTEM").unwrap_or_else(|| PathBuf::from("/etc/gitconfig"))];
        match var("GIT_CONFIG_GLOBAL") {
            Some(g) => git_configs.push(g),
            None => git_configs.extend([config_home.join("git/config"), home.join(".gitconfig")]),
        }
        let path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).filter(|d| d.is_absolute()).collect())
            .unwrap_or_default();
        Ok(Environment {
            path,
            tmp: var("TMPDIR").unwrap_or_else(|| PathBuf::from("/tmp")),
            git_configs,
            config_home,
            state_home: var("XDG_STATE_HOME").unwrap_or_else(|| home.join(".local/state")),
            cache_home: var("XDG_CACHE_HOME").unwrap_or_else(|| home.join(".cache")),
            home,
            cwd,
        })
    }

    /// The policy variables for `workspace`.
    pub fn vars(&self, workspace: &Path) -> Vars {
        Vars {
            home: self.home.clone(),
            workspace: workspace.to_path_buf(),
            tmp: self.tmp.clone(),
            config: self.config_home.clone(),
            state: self.state_home.clone(),
            cache: self.cache_home.clone(),
        }
    }

    /// Where user profiles live: `$XDG_CONFIG_HOME/palisade/profiles/`.
    pub fn profile_dir(&self) -> PathBuf {
        self.config_home.join("palisade/profiles")
    }

    /// The user policy file: `$XDG_CONFIG_HOME/palisade/policy.toml`.
    pub fn user_policy(&self) -> PathBuf {
        self.config_home.join("palisade/policy.toml")
    }
}

#[cfg(unix)]
fn home_from_passwd() -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is this process's effective uid.
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| PathBuf::from(f[5]))
    })
}

#[cfg(not(any(unix, windows)))]
fn home_from_passwd() -> Option<PathBuf> {
    None
}

/// Command-line policy flags, as typed. Relative paths are relative to the current directory.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--allow-read PATH`: paths made visible and read-only.
    pub allow_read: Vec<String>,
    /// `--allow-write PATH`: paths made writable.
    pub allow_write: Vec<String>,
    /// `--deny PATH`: paths hidden from the sandbox (globs allowed).
    pub deny: Vec<String>,
    /// `--protect PATH`: paths kept read-only (globs allowed).
    pub protect: Vec<String>,
    /// `--net MODE`: `none` or `allowlist`; `none` together with `--allow-net` is an error.
    pub net: Option<String>,
    /// `--allow-net HOST[:PORT]`: targets allowed; without `--net`, they turn the allowlist
    /// on.
    pub allow_net: Vec<String>,
    /// `--deny-net HOST[:PORT]`: targets refused whatever allows them.
    pub deny_net: Vec<String>,
    /// `NAME` passes a variable by name; `NAME=VALUE` sets it.
    pub env: Vec<String>,
    /// Resource limits (`--memory 4GiB`, `--pids 512`, ...), by their `[process]` key.
    pub limits: Vec<(&'static str, String)>,
    /// `--publish [HOST_PORT:]PORT`: ports of the sandbox's loopback reachable from the host's.
    pub publish: Vec<String>,
}

/// Which layers to load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The workspace; the current directory when `None`.
    pub workspace: Option<PathBuf>,
    /// `--profile NAME`: `$XDG_CONFIG_HOME/palisade/profiles/NAME.toml` if it exists, else
    /// the built-in profile of that name.
    pub profile: Option<String>,
    /// `--policy FILE`, in order.
    pub policy_files: Vec<PathBuf>,
    /// `--trust-project`: let the project file (`.palisade.toml`) widen access.
    pub trust_project: bool,
    /// The command-line policy flags: the top layer.
    pub flags: Flags,
}

/// Loads every layer and resolves them: built-in < user < profile < project < `--policy`
/// files < flags.
pub fn load(env: &Environment, opts: &LoadOptions) -> Result<ResolvedPolicy, PolicyError> {
    load_on(env, opts, &FsResolver::default())
}

/// [`load`], asking `host` about the file system; pass the same one to the planner.
pub fn load_on(env: &Environment, opts: &LoadOptions, host: &FsResolver) -> Result<ResolvedPolicy, PolicyError> {
    let resolver: &FsResolver = host;
    let workspace_arg = opts.workspace.clone().unwrap_or_else(|| env.cwd.clone());
    let workspace_abs = if workspace_arg.is_absolute() { workspace_arg } else { env.cwd.join(workspace_arg) };
    let workspace = std::fs::canonicalize(&workspace_abs)
        .map_err(|e| PolicyError::Setup(format!("workspace {}: {e}", workspace_abs.display())))?;
    // Windows: winpath's spelling (`C:\x`, not `\\?\C:\x`), as every policy path.
    #[cfg(windows)]
    let workspace = resolver.resolve(&workspace);
    if !workspace.is_dir() {
        return Err(PolicyError::Setup(format!("workspace {} is not a directory", workspace.display())));
    }
    // Policy paths are text; a path that is not UTF-8 could not be matched exactly.
    for (what, p) in [("workspace", &workspace), ("home directory", &env.home), ("temporary directory", &env.tmp)] {
        if p.to_str().is_none() {
            return Err(PolicyError::Setup(format!(
                "the {what} path {} is not valid UTF-8; Palisade needs UTF-8 paths (rename it or pick another)",
                p.display()
            )));
        }
    }
    let home = resolver.resolve(&env.home);
    let vars = env.vars(&workspace);

    let mut layers = vec![parse_layer(builtin::DEFAULT_POLICY, "<built-in>", LayerKind::Builtin, &vars, resolver)?];
    if let Some(text) = read_optional(&env.user_policy())? {
        let name = env.user_policy().display().to_string();
        layers.push(parse_layer(&text, &name, LayerKind::User, &vars, resolver)?);
    }
    if let Some(name) = &opts.profile {
        layers.push(load_profile(env, name, &vars, resolver)?);
    }
    let project = workspace.join(".palisade.toml");
    if let Some(text) = read_optional(&project)? {
        let name = project.display().to_string();
        layers.push(parse_layer(&text, &name, LayerKind::Project, &vars, resolver)?);
    }
    for file in &opts.policy_files {
        let path = if file.is_absolute() { file.clone() } else { env.cwd.join(file) };
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Read { path: path.clone(), source })?;
        layers.push(parse_layer(&text, &path.display().to_string(), LayerKind::PolicyFile, &vars, resolver)?);
    }
    layers.push(flags_layer(&opts.flags, &vars, resolver, &env.cwd)?);
    let mut policy = resolve(&workspace, &home, layers, ResolveOptions { trust_project: opts.trust_project })?;
    let private = [resolver.resolve(&env.tmp)];
    let host = Host { fs: resolver, resolver, private: &private, git_configs: &env.git_configs, path_var: &env.path };
    policy.derive(&host, opts.trust_project)?;
    Ok(policy)
}

/// Watches for git repositories made during a run under the policy's writable roots (their
/// configuration and hooks were then written inside the sandbox). Nothing can stop a
/// sandbox from making a repository; this says where one was made, and whether `git status`
/// in an older work tree descends into it, so that the caller can make it inert.
///
/// Cheap when nothing changed: what discovery looked at (directories listed or probed for
/// `.git`, indexes) is stamped with its change time, which no one can set; discovery runs
/// again only if a stamp differs, within [`crate::git::Bounds::AFTER_RUN`] (a sandbox may
/// make decoys to push one repository past the start's bounds). Stamp after the run's
/// placeholders are made and compare before they are removed (making them changes their
/// directories).
#[derive(Debug)]
pub struct RepoWatch {
    roots: Vec<PathBuf>,
    git_configs: Vec<PathBuf>,
    home: PathBuf,
    known: Vec<PathBuf>,
    watched: Vec<(PathBuf, Option<(i64, i64)>)>,
    since: (i64, i64),
}

/// What [`RepoWatch::new_repositories`] found.
#[derive(Debug, Default)]
pub struct NewRepositories {
    /// Repositories that were not there when the policy was derived.
    pub repositories: Vec<crate::git::Repository>,
    /// More repositories than [`crate::git::Bounds::AFTER_RUN`]: some were not examined.
    pub too_many: bool,
    /// Directories changed during the run that could not be listed after it: a repository
    /// made inside could not be looked for (a sandbox can `chmod 000` a directory).
    pub unlisted: Vec<PathBuf>,
    /// The search ran out of its budget ([`crate::git::Bounds::AFTER_RUN`]): a repository
    /// made past it was not looked for.
    pub incomplete: bool,
}

impl RepoWatch {
    /// `None` when the policy does not protect git (nothing was discovered). `resolver`: the
    /// one the policy was loaded with (its answers are the start's).
    pub fn new(policy: &ResolvedPolicy, env: &Environment, resolver: &FsResolver) -> Option<RepoWatch> {
        if !policy.protects_git() {
            return None;
        }
        let private = [resolver.resolve(&env.tmp)];
        let host =
            Host { fs: resolver, resolver, private: &private, git_configs: &env.git_configs, path_var: &env.path };
        Some(RepoWatch {
            roots: policy.writable_roots(&host),
            git_configs: env.git_configs.clone(),
            home: policy.home.clone(),
            known: policy.git_repositories.clone(),
            watched: policy.git_watched.iter().map(|(p, _)| (p.clone(), None)).collect(),
            since: (0, 0),
        })
    }

    /// Takes the stamps now.
    pub fn stamp(&mut self) {
        // File times come from a coarse clock (a tick behind the precise one): a margin
        // keeps a change made just after this from looking older than it.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(std::time::Duration::from_millis(50));
        self.since = (i64::try_from(now.as_secs()).unwrap_or(i64::MAX), i64::from(now.subsec_nanos()));
        for (p, s) in &mut self.watched {
            *s = RealFs.changed(p);
        }
    }

    /// When [`RepoWatch::stamp`] was called, as a change time (seconds and nanoseconds since
    /// the epoch), less a margin: a file whose change time is at or after it may have been
    /// written by the run.
    pub fn since(&self) -> (i64, i64) {
        self.since
    }

    /// The writable roots watched (canonical).
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The git directories known before the run.
    pub fn known(&self) -> &[PathBuf] {
        &self.known
    }

    /// The repositories that were not there when the policy was derived.
    pub fn new_repositories(&self) -> NewRepositories {
        if self.watched.iter().all(|(p, s)| RealFs.changed(p) == *s) {
            return NewRepositories::default();
        }
        let resolver = FsResolver::default();
        let found = crate::git::discover_within(
            &self.roots,
            &self.git_configs,
            &self.home,
            &resolver,
            &resolver,
            crate::git::Bounds::AFTER_RUN,
        );
        let since = self.since;
        NewRepositories {
            repositories: found.repositories.into_iter().filter(|r| !self.known.contains(&r.git_dir)).collect(),
            too_many: found.too_many,
            unlisted: found.unlisted.into_iter().filter(|d| RealFs.changed(d).is_none_or(|c| c >= since)).collect(),
            incomplete: found.incomplete,
        }
    }
}

/// Reads a file that may be absent. Any other failure (permissions, not UTF-8) is an error:
/// a policy file that exists but cannot be read must not be silently skipped.
///
/// A placeholder at the path or on the way to it (another sandbox on the same tree is
/// running) means the file does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, PolicyError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(_) if under_placeholder(path) => Ok(None),
        Err(source) => Err(PolicyError::Read { path: path.to_path_buf(), source }),
    }
}

/// Whether `path` or one of its ancestors is a placeholder.
fn under_placeholder(path: &Path) -> bool {
    path.ancestors().any(|a| std::fs::symlink_metadata(a).is_ok_and(|m| is_placeholder(a, &m)))
}

fn load_profile(
    env: &Environment,
    name: &str,
    vars: &Vars,
    resolver: &FsResolver,
) -> Result<crate::model::Layer, PolicyError> {
    let unknown = || PolicyError::UnknownProfile {
        name: name.to_owned(),
        known: builtin::PROFILES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        dir: env.profile_dir().display().to_string(),
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(unknown());
    }
    let kind = LayerKind::Profile(name.to_owned());
    let file = env.profile_dir().join(format!("{name}.toml"));
    if let Some(text) = read_optional(&file)? {
        return parse_layer(&text, &file.display().to_string(), kind, vars, resolver);
    }
    let text = builtin::profile(name).ok_or_else(unknown)?;
    parse_layer(text, &format!("<profile {name}>"), kind, vars, resolver)
}

/// Turns command-line flags into the top layer.
pub fn flags_layer(
    flags: &Flags,
    vars: &Vars,
    resolver: &dyn PathResolver,
    cwd: &Path,
) -> Result<crate::model::Layer, PolicyError> {
    let site = |key: &str| Site { source: "command line".into(), line: 0, column: 0, key: key.into() };
    let mut b = LayerBuilder::new(LayerKind::Flags, vars, resolver, cwd);
    for (kind, key, list) in [
        (PathKind::Read, "--allow-read", &flags.allow_read),
        (PathKind::Write, "--allow-write", &flags.allow_write),
        (PathKind::Deny, "--deny", &flags.deny),
        (PathKind::Protect, "--protect", &flags.protect),
    ] {
        for v in list {
            b.path_rule(kind, v, site(key))?;
        }
    }
    match (flags.net.as_deref(), flags.allow_net.is_empty()) {
        (Some("none"), false) => {
            return Err(PolicyError::invalid(
                site("--net"),
                "`--net none` contradicts `--allow-net`; drop one of them",
            ));
        }
        (Some(mode), _) => b.net_mode(mode, site("--net"))?,
        (None, false) => b.net_mode("allowlist", site("--allow-net"))?,
        (None, true) => {}
    }
    for v in &flags.allow_net {
        b.net_rule(true, v, site("--allow-net"))?;
    }
    for v in &flags.deny_net {
        b.net_rule(false, v, site("--deny-net"))?;
    }
    for v in &flags.env {
        match v.split_once('=') {
            Some((name, value)) => b.env_set(name, value, site("--env"))?,
            None => b.env_rule(false, v, site("--env"))?,
        }
    }
    for (key, text) in &flags.limits {
        b.limit_text(key, text, site(&format!("--{}", key.replace('_', "-"))))?;
    }
    for v in &flags.publish {
        b.publish(v, site("--publish"))?;
    }
    Ok(b.finish("command line"))
}

/// The current process environment, for [`crate::Rules::environment`].
pub fn process_env() -> Vec<(OsString, OsString)> {
    std::env::vars_os().collect()
}

#[cfg(all(test, windows))]
mod windows_tests {
    use std::path::PathBuf;

    use super::FsResolver;
    use crate::vars::PathResolver;

    #[test]
    fn windows_paths_resolve_to_one_spelling_with_the_missing_rest_appended() {
        let dir = std::env::temp_dir().join(format!("palisade-resolve-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("Sub")).unwrap();
        let r = FsResolver::default();
        let base = r.resolve(&dir);
        assert!(!base.to_string_lossy().starts_with(r"\\?\"), "{}", base.display());
        let asked = PathBuf::from(format!(r"{}\.\SUB\..\Sub\missing\x.txt", dir.display()));
        assert_eq!(r.resolve(&asked), base.join(r"Sub\missing\x.txt"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
