//! The plan for `--allow-degraded` (no namespaces): Landlock over the policy's grants, which
//! protections that mode cannot give, and the devices it needs.

use super::*;

/// Device files a degraded sandbox may use (never `/dev` as a whole: without a mount
/// namespace it holds the host's disks).
const DEGRADED_DEVICES: &[&str] =
    &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/pts"];

/// Builds the degraded plan: Landlock grants for every granted path that exists (the view's
/// only entries, host content at its own place), TCP refused, and the list of what is lost
/// without namespaces.
pub(super) fn build(policy: &ResolvedPolicy, host: &dyn HostView, req: Request) -> Result<Plan, PlanError> {
    if req.argv.is_empty() {
        return Err(PlanError::NoCommand);
    }
    // (A warm session has no command: it is refused here, as it needs init's namespaces.)
    // The host's own /proc: readable, never writable. Without a mount namespace there is
    // no read-only /proc/sys (see `sys::mounts::proc_limits`), and as root a /proc/sys
    // file is writable whatever the capabilities.
    let mut lp = LandlockPlan {
        read: vec!["/proc".into()],
        devices: DEGRADED_DEVICES.iter().map(PathBuf::from).filter(|p| host.kind(p).is_some()).collect(),
        deny_tcp: true,
        ..LandlockPlan::default()
    };
    let mut grants: Vec<(PathBuf, Access)> = Vec::new();
    for r in policy.paths.iter().filter(|r| matches!(r.kind, PathKind::Read | PathKind::Write)) {
        let path = r.pattern.base();
        let access = policy.decide_path(&path).access;
        if access == Access::None || !matches!(host.kind(&path), Some(Kind::Dir | Kind::File)) {
            continue;
        }
        if !grants.iter().any(|(p, _)| *p == path) {
            grants.push((path.clone(), access));
            if access == Access::Write { lp.write.push(path) } else { lp.read.push(path) }
        }
    }
    let mut missing = vec![
        "no namespaces: other processes, the host's /tmp, /dev/shm and SysV IPC are shared, and the home directory is not replaced by a private one (Landlock still refuses everything the policy does not grant)".to_owned(),
        "names of files outside the grants are visible to stat and ls of a granted parent".to_owned(),
        "if Palisade itself is killed, processes the command started may survive it".to_owned(),
    ];
    if policy.mode() == palisade_policy::NetMode::Allowlist {
        missing.push(
            "network: the allowlist is not served (no network namespace for the gateway); all TCP is refused".into(),
        );
    }
    // Protections inside writable grants, one line per grant (there are dozens per workspace:
    // git's files, IDE and agent configuration, shell start-up files).
    let mut writable_protected: Vec<(&PathBuf, Vec<String>)> = Vec::new();
    for r in policy.paths.iter().filter(|r| matches!(r.kind, PathKind::Deny | PathKind::Protect)) {
        let base = r.pattern.base();
        let Some((grant, access)) = grants.iter().filter(|(g, _)| is_within(&base, g)).max_by_key(|(g, _)| depth(g))
        else {
            continue;
        };
        match r.kind {
            PathKind::Deny => {
                missing.push(format!("denied {} lies inside the granted {}: not hidden", r.pattern, grant.display()))
            }
            _ if *access == Access::Write => {
                let shown =
                    base.strip_prefix(grant).map_or_else(|_| base.display().to_string(), |p| p.display().to_string());
                match writable_protected.iter_mut().find(|(g, _)| *g == grant) {
                    Some((_, v)) => v.push(shown),
                    None => writable_protected.push((grant, vec![shown])),
                }
            }
            _ => {}
        }
    }
    for (grant, mut names) in writable_protected {
        names.sort();
        names.dedup();
        let n = names.len();
        let shown: Vec<_> = names.into_iter().take(6).collect();
        missing.push(format!(
            "{n} protected paths inside the writable {} stay writable ({}{})",
            grant.display(),
            shown.join(", "),
            if n > 6 { ", ..." } else { "" }
        ));
    }
    let cwd = if host.kind(&req.cwd) == Some(Kind::Dir) && grants.iter().any(|(g, _)| is_within(&req.cwd, g)) {
        req.cwd
    } else {
        policy.workspace.clone()
    };
    let entries = grants.iter().map(|(p, a)| Entry::Host { path: p.clone(), writable: *a == Access::Write }).collect();
    Ok(Plan {
        session: false,
        mode: Mode::Degraded { missing },
        view: FsView { entries, cwd, tripwires: Vec::new() },
        landlock: lp,
        argv: req.argv,
        env: req.env,
        hostname: String::new(),
        shm_size: 0,
        network: None,
        trace_exec: false,
        // The sandbox shares the host's network: nothing to publish.
        publish: Vec::new(),
        limits: Limits::of(policy),
    })
}

fn depth(p: &Path) -> usize {
    p.components().count()
}
