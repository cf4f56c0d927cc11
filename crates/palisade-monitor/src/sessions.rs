//! The directory of session logs: each run writes `session-SECONDS-PID.jsonl` there (the
//! start time in seconds since the epoch, and the supervisor's pid). Listing the logs,
//! finding a workspace's latest, and removing old ones (`[monitor] retention` and `keep`)
//! read only the names, and the first record of the logs shown.

use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Event;

/// Session logs older than this are removed after a run unless `[monitor] retention` says
/// otherwise: 30 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);
/// At most this many session logs stay unless `[monitor] keep` says otherwise.
pub const DEFAULT_KEEP: u64 = 1_000;

/// One session log found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFile {
    /// Its path.
    pub path: PathBuf,
    /// When the run started, in seconds since the epoch (from the name).
    pub started: u64,
    /// The supervisor's pid (from the name).
    pub pid: u32,
}

/// The name of the log of a run started at `secs` by process `pid`.
pub fn file_name(secs: u64, pid: u32) -> String {
    format!("session-{secs}-{pid}.jsonl")
}

/// Parses a session log's name; `None` for any other file.
fn parse(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix("session-")?.strip_suffix(".jsonl")?;
    let (secs, pid) = rest.split_once('-')?;
    Some((secs.parse().ok()?, pid.parse().ok()?))
}

/// The session logs in `dir`, newest first (by start time, then pid). A missing directory
/// has none.
///
/// # Errors
/// When `dir` exists but cannot be read.
pub fn list(dir: &Path) -> io::Result<Vec<SessionFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found: Vec<SessionFile> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let (started, pid) = parse(e.file_name().to_str()?)?;
            Some(SessionFile { path: e.path(), started, pid })
        })
        .collect();
    found.sort_by(|a, b| b.started.cmp(&a.started).then(b.pid.cmp(&a.pid)));
    Ok(found)
}

/// The first record of a log, when it is a `session_start` (the command, the workspace).
pub fn start_of(path: &Path) -> Option<Event> {
    let file = std::fs::File::open(path).ok()?;
    let mut line = String::new();
    io::BufReader::new(io::Read::take(file, 1 << 20)).read_line(&mut line).ok()?;
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    let e: Event = serde_json::from_value(v.get("event")?.clone()).ok()?;
    matches!(e, Event::SessionStart { .. }).then_some(e)
}

/// The newest log of a run whose workspace was `workspace`.
pub fn latest_for(dir: &Path, workspace: &Path) -> io::Result<Option<SessionFile>> {
    let want = workspace.to_string_lossy();
    Ok(list(dir)?
        .into_iter()
        .find(|f| matches!(start_of(&f.path), Some(Event::SessionStart { workspace, .. }) if *workspace == *want)))
}

/// Whether the run that writes a log may still be running: its supervisor's pid is alive
/// (Linux: `/proc/PID` exists; a reused pid only keeps a log longer). Elsewhere, `false`.
fn running(pid: u32) -> bool {
    cfg!(target_os = "linux") && Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the logs that started more than `retention` before `now` (seconds since the
/// epoch) and those beyond the `keep` newest, never `current` and never the log of a run
/// that may still be running. Returns how many were removed; a log that cannot be removed
/// is left (and not counted).
///
/// # Errors
/// When `dir` cannot be read.
pub fn prune(dir: &Path, retention: Duration, keep: u64, now: u64, current: &Path) -> io::Result<usize> {
    let cutoff = now.saturating_sub(retention.as_secs());
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let current = canonical(current);
    let mut removed = 0;
    for (i, f) in list(&canonical(dir))?.into_iter().enumerate() {
        let old = retention != Duration::MAX && f.started < cutoff;
        if (old || i as u64 >= keep) && f.path != current && !running(f.pid) && std::fs::remove_file(&f.path).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// How often [`prune_if_due`] lists the directory: a directory at `keep` (1,000 logs) costs
/// 0.7 ms to list, once per run otherwise.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// [`prune`], at most once per `every`: the directory's `.pruned` stamp records the last
/// time (its modification time), so between two prunes the logs of the runs in between
/// (at most those of one interval) stay beyond `keep`. `Ok(None)` when not due. `now` is
/// seconds since the epoch.
///
/// # Errors
/// When `dir` cannot be read.
pub fn prune_if_due(
    dir: &Path,
    retention: Duration,
    keep: u64,
    now: u64,
    current: &Path,
    every: Duration,
) -> io::Result<Option<usize>> {
    let stamp = dir.join(".pruned");
    let last = std::fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    if last.is_some_and(|l| l <= now && now - l < every.as_secs()) {
        return Ok(None);
    }
    let removed = prune(dir, retention, keep, now, current)?;
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&stamp)?;
    f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(now))?;
    Ok(Some(removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_runs_at_most_once_per_interval() {
        let dir = std::env::temp_dir().join(format!("palisade-sessions-due-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let now = 2_000_000_000;
        let dead = 4_194_305;
        let log = |secs, pid| {
            let p = dir.join(file_name(secs, pid));
            std::fs::write(&p, "").unwrap();
            p
        };
        let current = log(now, dead);
        log(now - 40 * 86_400, dead + 1);
        let first = prune_if_due(&dir, DEFAULT_RETENTION, 1000, now, &current, PRUNE_EVERY).unwrap();
        log(now - 41 * 86_400, dead + 2);
        let soon = prune_if_due(&dir, DEFAULT_RETENTION, 1000, now + 59, &current, PRUNE_EVERY).unwrap();
        let left_between = list(&dir).unwrap().len();
        let later = prune_if_due(&dir, DEFAULT_RETENTION, 1000, now + 60, &current, PRUNE_EVERY).unwrap();
        let left = list(&dir).unwrap().len();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!((first, soon, later), (Some(1), None, Some(1)));
        assert_eq!((left_between, left), (2, 1));
    }

    #[test]
    fn logs_beyond_the_retention_or_the_count_are_removed_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("palisade-sessions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let now = 2_000_000_000;
        // Pids above the kernel's limit (2^22): never a running process.
        let dead = 4_194_305;
        for (secs, pid) in [
            (now - 40 * 86_400, dead),
            (now - 100, dead + 1),
            (now - 50, dead + 2),
            (now - 10, dead + 3),
            (now, dead + 4),
        ] {
            std::fs::write(dir.join(file_name(secs, pid)), "").unwrap();
        }
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        std::fs::write(dir.join("session-x-1.jsonl"), "not ours").unwrap();
        let current = dir.join(file_name(now, dead + 4));
        // 30 days: the 40-day-old one goes; keep 3: the two oldest of the rest go too.
        let removed = prune(&dir, DEFAULT_RETENTION, 3, now, &current).unwrap();
        let left: Vec<u32> = list(&dir).unwrap().iter().map(|f| f.pid).collect();
        let others = dir.join("notes.txt").exists() && dir.join("session-x-1.jsonl").exists();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(removed, 2);
        assert_eq!(left, [dead + 4, dead + 3, dead + 2]);
        assert!(others, "files that are no session log stay");
    }

    #[test]
    fn the_log_of_a_run_still_running_is_never_removed() {
        let dir = std::env::temp_dir().join(format!("palisade-sessions-live-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // This test's own pid stands for a run still going: beyond `keep`, and old.
        let live = dir.join(file_name(1, std::process::id()));
        std::fs::write(&live, "").unwrap();
        std::fs::write(dir.join(file_name(2_000_000_000, 4_194_305)), "").unwrap();
        let removed = prune(&dir, DEFAULT_RETENTION, 1, 2_000_000_000, Path::new("/nonexistent")).unwrap();
        let kept = live.exists();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(removed, 0);
        assert!(kept || !cfg!(target_os = "linux"));
    }

    #[test]
    fn names_parse_and_a_missing_directory_has_no_logs() {
        assert_eq!(parse("session-1796000000-42.jsonl"), Some((1_796_000_000, 42)));
        assert_eq!(parse("session-1-2.json"), None);
        assert!(list(Path::new("/nonexistent/palisade")).unwrap().is_empty());
    }
}
