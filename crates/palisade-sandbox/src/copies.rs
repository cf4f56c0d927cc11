//! The kept copies of `filesystem.own_copy` files (an agent's own configuration): the host's
//! file stays as it is; the sandbox reads and writes a copy of its own, which Palisade keeps
//! for the workspace across runs under `$XDG_STATE_HOME/palisade/copies/WORKSPACE-KEY/`. A
//! copy is seeded from the host's file, and seeded again whenever the host's file changes
//! (the user's own edits win over the sandbox's); nothing is ever written back.

use std::io::Read;
use std::path::{Path, PathBuf};

use palisade_policy::ResolvedPolicy;
use palisade_policy::load::Environment;

use crate::report::Say;
use crate::view::{fnv1a, own_copy_path};

/// The largest file kept as a copy, in bytes (1 MiB); a larger one is only protected.
pub const MAX: u64 = 1 << 20;

/// This workspace's directory of kept copies (the state directory canonical: the Linux
/// backend opens the copy without following any link).
pub fn dir(env: &Environment, policy: &ResolvedPolicy) -> PathBuf {
    let state = palisade_policy::PathResolver::resolve(&palisade_policy::load::FsResolver::default(), &env.state_home);
    state.join("palisade/copies").join(key(&policy.workspace))
}

/// A name for a workspace: the last component and a 64-bit FNV-1a hash of the whole path.
fn key(ws: &Path) -> String {
    let name: String =
        ws.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().chars().take(60).collect();
    format!("{name}-{:016x}", fnv1a(ws.as_os_str().as_encoded_bytes()))
}

/// Makes `dir` and its missing parents, mode 0700 (state directories, the copies' home).
pub(crate) fn make_private_dirs(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Removes a kept copy and its stamp: one that cannot be seeded now is never shown.
fn forget(copy: &Path) {
    let _ = std::fs::remove_file(copy);
    let _ = std::fs::remove_file(copy.with_extension("palisade-seed"));
}

/// What a missing file is made with on the host, so that a copy can stand at its place: `{}`
/// for JSON (an empty file is no JSON: Gemini CLI refused to start on one), else nothing.
fn seed(path: &Path) -> &'static str {
    if path.extension().is_some_and(|e| e == "json") { "{}\n" } else { "" }
}

/// Reads a regular file of at most [`MAX`] bytes without following a link (in the degraded
/// mode a sandbox could have put a link there, to have a secret copied where it can read).
fn read_file(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut o, libc::O_NOFOLLOW);
    let f = o.open(path)?;
    let m = f.metadata()?;
    if !m.is_file() || m.len() > MAX {
        return Ok(None);
    }
    let mut data = Vec::new();
    f.take(MAX + 1).read_to_end(&mut data)?;
    Ok(Some(data))
}

/// A symbolic link on the way to `lexical` (the path as the policy wrote it) that lies where
/// the sandbox may write: one a sandbox could have put there in an earlier run, to have
/// Palisade make or copy something elsewhere. A link the sandbox cannot write (a home
/// directory reached through `/home -> /var/home`) is trusted.
pub(crate) fn untrusted_link(policy: &ResolvedPolicy, lexical: &Path) -> Option<PathBuf> {
    let mut ancestors: Vec<&Path> = lexical.ancestors().collect();
    ancestors.reverse();
    ancestors
        .into_iter()
        .find(|a| {
            std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink())
                && a.parent().is_some_and(|p| policy.decide_path(p).access == palisade_policy::Access::Write)
        })
        .map(Path::to_path_buf)
}

/// Whether Palisade may make `path` (written `lexical` in the policy) on the host: not when
/// [`untrusted_link`] finds a link on the way, which is said, with the rule's `origin`.
pub(crate) fn may_make(
    policy: &ResolvedPolicy,
    lexical: &Path,
    path: &Path,
    origin: &dyn std::fmt::Display,
    say: Say,
) -> bool {
    let Some(link) = untrusted_link(policy, lexical) else { return true };
    say.warning(&format!(
        "{} ({origin}) is not made: {} on the way is a symbolic link the sandbox could have made",
        path.display(),
        link.display()
    ));
    false
}

/// Writes `data` to `path` (mode 0600), replacing it.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("palisade-tmp");
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    std::io::Write::write_all(&mut o.open(&tmp)?, data)?;
    std::fs::rename(&tmp, path)
}

/// Makes every `own_copy` file ready before planning: a missing host file is made with its
/// seed (when its directory exists), and the copy is seeded from the host's file when it is
/// missing or the host's file changed since. Returns whether a file was made (the planner
/// must then ask the host afresh). Problems are said, never fatal: the file then
/// stays only protected.
pub(crate) fn prepare(policy: &ResolvedPolicy, dir: &Path, say: Say) -> bool {
    let mut made = false;
    for r in policy.paths.iter().filter(|r| r.own_copy) {
        let path = r.pattern.base();
        let copy = own_copy_path(dir, &path);
        let stamp = copy.with_extension("palisade-seed");
        let problem = |what: &str, e: &dyn std::fmt::Display| {
            say.warning(&format!("{} ({}): {what}: {e}; the sandbox gets no copy of its own", path.display(), r.origin))
        };
        if let Some(link) = untrusted_link(policy, r.via_link.as_deref().unwrap_or(&path)) {
            problem(
                "not copied",
                &format!("{} on the way is a symbolic link the sandbox could have made", link.display()),
            );
            // An older copy is not shown either.
            forget(&copy);
            made = true;
            continue;
        }
        // Only where the sandbox may write the file's directory (a denial above wins).
        let writable = |p: &Path| policy.decide_path(p).access == palisade_policy::Access::Write;
        if !path.parent().is_some_and(writable) {
            continue;
        }
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !path.parent().is_some_and(Path::is_dir) {
                    continue;
                }
                let mut o = std::fs::OpenOptions::new();
                o.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
                match o.open(&path).and_then(|mut f| std::io::Write::write_all(&mut f, seed(&path).as_bytes())) {
                    Ok(()) => made = true,
                    Err(e) => {
                        problem("cannot make it", &e);
                        continue;
                    }
                }
            }
            Err(e) => {
                problem("cannot look at it", &e);
                continue;
            }
        }
        let host = match read_file(&path) {
            Ok(Some(d)) => d,
            Ok(None) => {
                forget(&copy);
                problem("not copied", &format!("not a regular file of at most {} bytes", MAX));
                made = true;
                continue;
            }
            Err(e) => {
                forget(&copy);
                problem("cannot read it (a link is not followed)", &e);
                made = true;
                continue;
            }
        };
        let now = format!("{:016x}\n", fnv1a(&host));
        let seeded = std::fs::read_to_string(&stamp).ok();
        if copy.is_file() && seeded.as_deref() == Some(now.as_str()) {
            continue;
        }
        let done = make_private_dirs(dir)
            .and_then(|()| write_private(&copy, &host))
            .and_then(|()| write_private(&stamp, now.as_bytes()));
        // The planner asks the host afresh after any change here.
        made |= done.is_ok();
        match done {
            Ok(()) if seeded.is_some() => say.warning(&format!(
                "{} changed on the host since the sandbox's copy was made: the copy starts again from it",
                path.display()
            )),
            Ok(()) => {}
            Err(e) => problem("cannot keep a copy of it", &e),
        }
    }
    made
}

/// The directories of a cache's layer (`layer`, from [`crate::view::cache_layer`]): `upper`,
/// what the sandbox wrote, kept across runs; and this run's work directory `work-PID`, PID
/// being the supervisor's (an overlay needs one of its own per mount, on the same file
/// system as `upper`), left after the run for the next run to take over
/// (`prune_work_dirs`).
pub fn cache_dirs(layer: &Path) -> (PathBuf, PathBuf) {
    (layer.join("upper"), layer.join(format!("work-{}", std::process::id())))
}

/// This run's own upper directory for a cache whose kept layer another run of the workspace
/// holds (`upper-PID`): what this run writes there ends with it (two overlays may not share
/// an upper directory: overlayfs(5), "undefined behavior").
pub fn cache_run_upper(layer: &Path) -> PathBuf {
    layer.join(format!("upper-{}", std::process::id()))
}

/// The kept layers this run holds (an exclusive `flock` on each layer's `lock` file, released
/// by `release_caches` or when the process ends).
static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());

/// How long a run waits for another run's hold on a kept layer (one just ending, whose
/// sandbox is still being torn down) before taking a layer of its own.
const LAYER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes the layer's lock: exclusive for an overlay (its upper directory may not be shared),
/// shared for a layer shown alone (a plain directory, which runs may share, but which no
/// overlay may then use as its upper directory). Waits until `until` (the run's
/// [`LAYER_WAIT`]); `false` when another run still holds it.
fn hold_layer(layer: &Path, exclusive: bool, until: std::time::Instant) -> std::io::Result<bool> {
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(layer.join("lock"))?;
    loop {
        let r = if exclusive { f.try_lock() } else { f.try_lock_shared() };
        match r {
            Ok(()) => {
                HELD.lock().unwrap_or_else(|e| e.into_inner()).push(f);
                return Ok(true);
            }
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Makes every cache ready before planning: its layer's directories, and the host's
/// directory when it is missing but its parent is host content the sandbox sees (a mount
/// needs a place; `~/.cargo/git` before the first git dependency). An ended run's work
/// directory is taken over, the others of ended runs removed. Returns whether a host directory was made (the planner must
/// then ask the host afresh). Problems are said, never fatal: the cache then stays
/// read-only (or absent).
pub(crate) fn prepare_caches(policy: &ResolvedPolicy, dir: &Path, tmp: &Path, say: Say) -> bool {
    let mut made = false;
    // One wait for the whole run, however many caches another run holds.
    let until = std::time::Instant::now() + LAYER_WAIT;
    for r in policy.paths.iter().filter(|r| r.cache) {
        let path = r.pattern.base();
        if policy.decide_path(&path).rule.is_none_or(|d| !d.cache) {
            continue;
        }
        // Host content: granted by a rule other than the private `${tmp}`'s (the home
        // directory in a temporary directory is private too).
        let host_content = |p: &Path| {
            let d = policy.decide_path(p);
            d.access != palisade_policy::Access::None && d.rule.is_some_and(|r| r.pattern.base() != tmp)
        };
        let parent_seen = path.parent().is_some_and(|p| p.is_dir() && host_content(p));
        if parent_seen && std::fs::symlink_metadata(&path).is_err() {
            if !may_make(policy, &path, &path, &r.origin, say) {
                continue;
            }
            match std::fs::create_dir(&path) {
                Ok(()) => made = true,
                Err(e) => say.warning(&format!("cannot make {} ({}): {e}", path.display(), r.origin)),
            }
        }
        let layer = crate::view::cache_layer(dir, &path);
        let (upper, work) = cache_dirs(&layer);
        // A work directory only for an overlay, over a host directory: an ended run's, when
        // there is one (the kernel empties it at mount), else a new one.
        let overlay = path.is_dir();
        if overlay {
            prune_work_dirs(&layer, &work);
        }
        let dirs = make_private_dirs(&upper).and_then(|()| if overlay { make_private_dirs(&work) } else { Ok(()) });
        if let Err(e) = dirs {
            say.warning(&format!("{} ({}): cannot make its layer: {e}; it stays read-only", path.display(), r.origin));
            continue;
        }
        // One run at a time over a kept layer shown as an overlay (its upper directory may
        // not be shared, nor written directly by another run while it is mounted); runs
        // showing a layer alone share it. A run that cannot have the layer gets one of its
        // own for the run.
        match hold_layer(&layer, overlay, until) {
            Ok(true) => {}
            Ok(false) => match make_private_dirs(&cache_run_upper(&layer)) {
                Ok(()) => say.warning(&format!(
                    "another run of this workspace is using {} ({}): this run starts from the host's files without this workspace's kept changes, and what it writes there ends with it",
                    path.display(),
                    r.origin
                )),
                Err(e) => say.warning(&format!("{} ({}): cannot make its layer: {e}", path.display(), r.origin)),
            },
            Err(e) => say.warning(&format!("{} ({}): cannot lock its layer: {e}", path.display(), r.origin)),
        }
    }
    made
}

/// After a run: removes its own upper directories (`upper-PID`, what a run that could not
/// have the kept layer wrote). Its work directories stay for the next run to take over
/// (`prune_work_dirs`): making and removing them cost 0.6 ms a run.
pub(crate) fn release_caches(view: &crate::view::FsView) {
    for e in &view.entries {
        if let crate::view::Entry::Cache { upper, .. } = e
            && upper.file_name().is_some_and(|n| n.to_string_lossy().starts_with("upper-"))
        {
            remove_tree(upper);
        }
    }
    HELD.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// In `layer`, for this run's work directory `ours`: renames an ended run's `work-PID` to it
/// (overlayfs clears a work directory's contents itself when it mounts,
/// `ovl_workdir_create` in fs/overlayfs/super.c) and removes the other `work-PID` and
/// `upper-PID` directories whose run is over. A run is over when its supervisor is gone
/// (its sandbox, and with it the overlay, died with it: `PR_SET_PDEATHSIG`).
fn prune_work_dirs(layer: &Path, ours: &Path) {
    let mut taken = ours.exists();
    for e in std::fs::read_dir(layer).into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        let (work, pid) = match (n.strip_prefix("work-"), n.strip_prefix("upper-")) {
            (Some(p), _) => (true, p),
            (None, Some(p)) => (false, p),
            _ => continue,
        };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid == std::process::id() || alive(pid) {
            continue;
        }
        // Another run may take the same one at the same time: one rename wins.
        if work && !taken && std::fs::rename(e.path(), ours).is_ok() {
            taken = true;
            continue;
        }
        remove_tree(&e.path());
    }
}

#[cfg(unix)]
fn alive(pid: u32) -> bool {
    std::path::Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(not(unix))]
fn alive(_: u32) -> bool {
    true
}

/// Removes a tree of Palisade's own, making each directory searchable first (an overlay's
/// scratch directory is mode 000).
fn remove_tree(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            match std::fs::symlink_metadata(&d) {
                Ok(m) if m.is_dir() => {
                    let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
                    stack.extend(std::fs::read_dir(&d).into_iter().flatten().flatten().map(|e| e.path()));
                }
                _ => {}
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
