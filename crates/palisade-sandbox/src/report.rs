//! What the session says and records around a run: warnings, the `session_start` record,
//! the degraded mode's notice, and the git repositories a run made.

use std::sync::{Arc, Mutex};

use palisade_monitor::live::LiveOutput;
use palisade_monitor::{Event, Sink};
use palisade_policy::ResolvedPolicy;
use palisade_policy::load::RepoWatch;

use crate::backend::{Backend, Enforcement};
use crate::quarantine::Suspect;
use crate::run::RunSpec;

/// Where Palisade's own messages go: stderr, as text or (`--json`) as JSON lines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Say {
    pub(crate) json: bool,
}

impl Say {
    pub(crate) fn warning(self, text: &str) {
        if self.json {
            eprintln!("{}", serde_json::json!({ "level": "warning", "reason": text }));
        } else {
            eprintln!("palisade: warning: {text}");
        }
    }
}

/// The `session_start` record.
pub(crate) fn session_start(spec: &RunSpec, policy: &ResolvedPolicy, e: &Enforcement) -> Event {
    Event::SessionStart {
        argv: spec.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
        workspace: policy.workspace.to_string_lossy().into_owned(),
        mode: e.mode.clone(),
        landlock_abi: e.landlock_abi,
        network: policy.mode().to_string(),
        layers: policy.layers.iter().map(|(k, s)| format!("{k} ({s})")).collect(),
        missing: e.missing.clone(),
        limits: e.limits.clone(),
        denials: e.denials.clone(),
        session: spec.session_name(),
    }
}

/// A hint, not a protection: in an empty workspace that is no repository, a command that
/// mentions git is most likely `git init` or `git clone URL .`, which fail inside (the
/// workspace's `.git` is protected) with git's own words ("not an empty directory").
pub(crate) fn empty_workspace_hint(policy: &ResolvedPolicy, command: &[std::ffi::OsString]) -> Option<String> {
    let mentions_git = command.iter().any(|a| a.to_string_lossy().contains("git"));
    let empty = std::fs::read_dir(&policy.workspace).is_ok_and(|mut d| d.next().is_none());
    (mentions_git && empty && policy.protects_git() && policy.git_repositories.is_empty()).then(|| {
        format!(
            "the workspace {} is empty and no git repository, and cannot become one inside the sandbox (`git init` or `git clone URL .` there fail: a configuration and hooks written inside would run on the host); run that outside first, or clone into a subdirectory (its configuration and hooks are moved aside when the run ends)",
            policy.workspace.display()
        )
    })
}

/// Rules whose events this run cannot produce: said at every run, so nobody believes a rule
/// protects them when it cannot fire. `denials` is `recorded`, or why the platform's
/// denials cannot be read here.
pub(crate) fn unevaluated_rules(policy: &ResolvedPolicy, denials: &str, say: Say) {
    use palisade_policy::monitor::{Condition, Counter};
    for r in &policy.monitor_rules {
        let why = match &r.when {
            Condition::Rate { counter: Counter::DeniedFiles, .. } if denials != "recorded" => {
                format!("file denials come from the kernel's audit log, which cannot be read here: {denials}")
            }
            _ => continue,
        };
        if say.json {
            let v = serde_json::json!({ "level": "warning", "rule": r.when.to_string(), "at": r.origin.site.to_string(), "reason": why });
            eprintln!("{v}");
        } else {
            eprintln!("palisade: warning: rule `{}` ({}) cannot fire: {why}", r.when, r.origin.site);
        }
    }
}

/// Where `name` (no slash) is on the host along `path` (a `PATH` value): every executable
/// regular file, in `PATH` order, with where it leads (links resolved).
pub(crate) fn on_host_path(name: &str, path: &str) -> Vec<(std::path::PathBuf, std::path::PathBuf)> {
    if name.is_empty() || name.contains(std::path::is_separator) {
        return Vec::new();
    }
    std::env::split_paths(path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| executable(&m)))
        .map(|p| {
            let real = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            (p, real)
        })
        .collect()
}

/// A regular file someone may execute (on Unix, an `x` bit).
fn executable(m: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        m.is_file() && m.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        m.is_file()
    }
}

/// Whether the sandbox sees the host's `p` (and where it leads).
fn shown(view: &crate::view::FsView, (p, real): &(std::path::PathBuf, std::path::PathBuf)) -> bool {
    let host = |x: &std::path::Path| matches!(view.seen(x), crate::view::Seen::Host(_));
    host(p) && host(real)
}

/// The grant that shows `p` and where it leads: the directory holding both when it is deep
/// enough to be the tool's own (`~/.npm-global` for `bin/agent -> ../lib/...`), else each
/// directory on its own (never a home directory or `/` as a whole).
fn grant_for(p: &std::path::Path, real: &std::path::Path) -> String {
    let a = p.parent().unwrap_or(p);
    let b = real.parent().unwrap_or(real);
    if a == b {
        return format!("--allow-read {}", a.display());
    }
    let common = a.ancestors().find(|x| b.starts_with(x)).unwrap_or(std::path::Path::new("/"));
    if common.components().count() >= 4 {
        format!("--allow-read {}", common.display())
    } else {
        format!("--allow-read {} --allow-read {}", a.display(), b.display())
    }
}

/// The hint for a command the sandbox did not find although the host has it: where, and the
/// grant that shows it.
pub(crate) fn not_found_hint(name: &str, path: &str, view: &crate::view::FsView) -> Option<String> {
    let (p, real) = on_host_path(name, path).into_iter().find(|c| !shown(view, c))?;
    Some(format!(
        "{name} is on the host at {}{}, which the sandbox cannot see: grant it with {} (or in your policy)",
        p.display(),
        if real != p { format!(" (-> {})", real.display()) } else { String::new() },
        grant_for(&p, &real)
    ))
}

/// A warning when the command the host's `PATH` finds first is hidden from the sandbox, so
/// that another file of the same name, later on `PATH`, would run instead.
pub(crate) fn shadowed(name: &str, path: &str, view: &crate::view::FsView) -> Option<String> {
    let found = on_host_path(name, path);
    let first = found.first()?;
    if shown(view, first) {
        return None;
    }
    let runs = found.iter().find(|c| shown(view, c))?;
    Some(format!(
        "`{name}` runs {} inside the sandbox, not {} (first on PATH on the host, which the sandbox cannot see: {} shows it)",
        runs.0.display(),
        first.0.display(),
        grant_for(&first.0, &first.1)
    ))
}

/// What was refused during the run, in one line after it, with where the records are.
pub(crate) fn refused(summary: &str, audit: &std::path::Path, say: Say) {
    if say.json {
        let v = serde_json::json!({ "level": "info", "refused": summary, "audit": audit.display().to_string() });
        eprintln!("{v}");
    } else {
        eprintln!(
            "palisade: refused during the run: {summary}; each is in the audit log {} (`palisade audit show`; --quiet hides this line)",
            audit.display()
        );
    }
}

/// The degraded mode is never silent: it says why, what still holds and what does not.
pub(crate) fn degraded(why: &str, e: &Enforcement, say: Say) {
    if say.json {
        let v = serde_json::json!({ "level": "warning", "mode": e.mode, "reason": why, "landlock_abi": e.landlock_abi, "missing": e.missing });
        eprintln!("{v}");
        return;
    }
    eprintln!("palisade: warning: DEGRADED MODE (--allow-degraded): {why}");
    eprintln!(
        "palisade: enforced: Landlock ABI {} over the policy's grants, TCP refused, seccomp, no capabilities, no_new_privs",
        e.landlock_abi
    );
    for m in &e.missing {
        eprintln!("palisade: NOT enforced: {m}");
    }
}

/// Once the sandbox exists: stamps what git discovery looked at, and starts the live
/// outputs' writer threads.
pub(crate) fn starter(
    live: &[(&'static str, Arc<LiveOutput>)],
    repos: &Arc<Mutex<Option<RepoWatch>>>,
) -> Box<dyn FnOnce() + Send> {
    let outs: Vec<_> = live.iter().map(|(_, o)| o.clone()).collect();
    let repos = repos.clone();
    Box::new(move || {
        if let Some(w) = repos.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            w.stamp();
        }
        for o in outs {
            if let Err(e) = o.start() {
                eprintln!("palisade: cannot start a live output: {e}");
            }
        }
    })
}

/// Repositories made during the run: nothing can stop a sandbox from making one (their
/// configuration and hooks were written inside), so what git would run from them is moved
/// aside ([`Backend::move_aside`]) and the user is told where, and whether an older work
/// tree's `git status` descends into it. Runs when the sandbox has ended, before the backend
/// undoes what it made on the host.
pub(crate) fn new_repositories<B: Backend>(
    watch: &Arc<Mutex<Option<RepoWatch>>>,
    sink: Arc<dyn Sink>,
    say: Say,
) -> Box<dyn FnOnce() + Send> {
    let watch = watch.clone();
    Box::new(move || {
        let Some(w) = watch.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let found = w.new_repositories();
        // What could not be checked: said, and recorded as the repositories limit.
        let unchecked = |detail: String| {
            say.warning(&detail);
            sink.record(&Event::Limit { limit: "repositories".into(), detail });
        };
        if found.too_many {
            unchecked(format!(
                "more git repositories than Palisade examines ({}) lie under the writable directories after the run: not all were checked for what the sandbox wrote; look for .git directories and HEAD files made during the run before you run git there",
                palisade_policy::git::Bounds::AFTER_RUN.repositories
            ));
        }
        if found.incomplete {
            unchecked(format!(
                "the search for git repositories after the run stopped after {} directories under a writable directory: a repository the sandbox made past them was not checked; look for .git directories and HEAD files made during the run before you run git there",
                palisade_policy::git::Bounds::AFTER_RUN.scan_budget
            ));
        }
        for d in &found.unlisted {
            unchecked(format!(
                "{} was made unreadable during the run, so it could not be checked for git repositories the sandbox made there: before you run git inside it, look for .git directories and HEAD files",
                d.display()
            ));
        }
        for r in found.repositories {
            let path = r.git_dir.display().to_string();
            let gitlink_of = r.gitlink_of.as_ref().map(|p| p.display().to_string());
            // The writable root it lies under (the innermost), and, for a worktree added to
            // a repository that was there before, that repository's common directory.
            let root = w.roots().iter().filter(|root| r.git_dir.starts_with(root)).max_by_key(|p| p.as_os_str().len());
            let keep = r.common.as_deref().filter(|c| w.known().iter().any(|k| k == c));
            let moved = match root {
                Some(root) => B::move_aside(
                    Suspect {
                        root,
                        git_dir: &r.git_dir,
                        work_tree: r.work_tree.as_deref(),
                        gitlink: r.gitlink_of.is_some(),
                        keep_commondir_of: keep,
                    },
                    w.since(),
                ),
                None => Ok(Vec::new()),
            };
            let of = gitlink_of.as_deref().map_or(String::new(), |o| format!(" (git status in {o} descends into it)"));
            let quarantined: Vec<String> = match &moved {
                Ok(m) => m.iter().map(|m| format!("{} -> {}", m.from.display(), m.to.display())).collect(),
                Err(_) => Vec::new(),
            };
            match &moved {
                Ok(m) if m.is_empty() => {}
                Ok(m) => say.warning(&format!(
                    "the git repository {path} was made or changed inside the sandbox{of}; what git would run from it was moved aside, so that git on the host obeys none of it: {}. Read them, and move them back to use them",
                    m.iter()
                        .map(|m| format!(
                            "{} -> {}",
                            m.from.display(),
                            m.to.file_name().unwrap_or_default().to_string_lossy()
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Err(e) => say.warning(&format!(
                    "the git repository {path} was made inside the sandbox{of}, and what git would run from it could not be moved aside ({e}): read its config and hooks before you run git there"
                )),
            }
            sink.record(&Event::NewRepository { path, gitlink_of, quarantined });
        }
    })
}
