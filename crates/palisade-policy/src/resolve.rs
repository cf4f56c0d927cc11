//! Layers in, one [`ResolvedPolicy`] out; the project layer may only narrow.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::decide::{Access, EnvDecision};
use crate::error::PolicyError;
use crate::model::*;
use crate::pathrule::is_within;

/// The policy every backend enforces: all layers merged, each rule tagged with its layer.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedPolicy {
    /// The workspace: absolute, canonical when [`crate::load`] found it.
    pub workspace: PathBuf,
    /// The home directory, canonical when loaded; `~` in git configuration paths expands to
    /// it.
    pub home: PathBuf,
    /// The layers that were applied, lowest first: kind and source.
    pub layers: Vec<(LayerKind, String)>,
    /// The merged rules, to which [`ResolvedPolicy::derive`] adds those of this host.
    pub rules: Rules,
    /// The git repositories found under the writable roots when the policy was derived on
    /// this host (empty before [`ResolvedPolicy::derive`], or without `protect_git`).
    #[serde(skip)]
    pub git_repositories: Vec<PathBuf>,
    /// What discovery looked at to find them (see [`crate::git::Found::watched`]), to be
    /// stamped by [`crate::load::RepoWatch`].
    #[serde(skip)]
    pub git_watched: Vec<(PathBuf, Option<(i64, i64)>)>,
    /// What derivation could not do on this host, in words (a warning at every run).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl std::ops::Deref for ResolvedPolicy {
    type Target = Rules;
    fn deref(&self) -> &Rules {
        &self.rules
    }
}

/// Options for [`resolve`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ResolveOptions {
    /// Let the project file widen access (`--trust-project`).
    pub trust_project: bool,
}

/// Merges `layers` (lowest precedence first) into one policy.
///
/// A project layer is checked against everything below it and refused, naming the key, if
/// it would widen access, unless `trust_project` is set.
pub fn resolve(
    workspace: &Path,
    home: &Path,
    layers: Vec<Layer>,
    opts: ResolveOptions,
) -> Result<ResolvedPolicy, PolicyError> {
    check_workspace(workspace, home)?;
    let mut rules = Rules::default();
    let mut applied = Vec::new();
    for layer in layers {
        if !layer.kind.is_trusted() && !opts.trust_project {
            check_narrows(&rules, &layer.rules)?;
        }
        applied.push((layer.kind, layer.source));
        // A cache beneath a directory a higher layer makes writable is just that: writable
        // (a cache is there to let builds write, never to take a grant away).
        let writes: Vec<PathBuf> =
            layer.rules.paths.iter().filter(|r| r.kind == PathKind::Write).map(|r| r.pattern.base()).collect();
        rules.paths.retain(|r| !(r.cache && writes.iter().any(|w| is_within(&r.pattern.base(), w))));
        rules.merge(layer.rules);
    }
    let notes = ineffective(&rules);
    Ok(ResolvedPolicy {
        workspace: workspace.to_path_buf(),
        home: home.to_path_buf(),
        layers: applied,
        rules,
        git_repositories: Vec::new(),
        git_watched: Vec::new(),
        notes,
    })
}

/// Settings that have no effect in the merged policy, in words (said by `policy check`,
/// `policy show` and at every run): an allowlist while the network mode is `none`.
pub fn ineffective(rules: &Rules) -> Vec<String> {
    let mut notes = Vec::new();
    if rules.mode() == NetMode::None && !rules.net_allow.is_empty() {
        let first = &rules.net_allow[0].origin;
        let mode = match &rules.net_mode {
            Some(s) => format!("set to \"none\" at {}", s.origin),
            None => "not set, so \"none\"".to_owned(),
        };
        notes.push(format!(
            "[network] allow has {} {} (the first at {first}), but the network mode is {mode}: nothing is reachable; set [network] mode = \"allowlist\" (or pass --net allowlist)",
            rules.net_allow.len(),
            if rules.net_allow.len() == 1 { "entry" } else { "entries" },
        ));
    }
    notes
}

/// Refuses workspaces that would make a broad tree writable (THREATS B-01).
fn check_workspace(workspace: &Path, home: &Path) -> Result<(), PolicyError> {
    if !workspace.is_absolute() {
        return Err(PolicyError::Setup(format!("workspace {} is not an absolute path", workspace.display())));
    }
    if workspace.parent().is_none() {
        return Err(PolicyError::Setup(
            "the workspace is the root directory; run Palisade from a project directory or pass --workspace DIR".into(),
        ));
    }
    if home.starts_with(workspace) {
        return Err(PolicyError::Setup(format!(
            "the workspace {} is your home directory or contains it, which would make your secrets and dotfiles writable; run Palisade from a project directory or pass --workspace DIR",
            workspace.display()
        )));
    }
    Ok(())
}

/// Checks that `upper` (an untrusted layer) grants nothing `lower` does not.
fn check_narrows(lower: &Rules, upper: &Rules) -> Result<(), PolicyError> {
    let widen = |origin: &Origin, why: String| PolicyError::Widening { site: origin.site.clone(), why };
    for r in &upper.paths {
        if r.state {
            return Err(widen(&r.origin, "a project may not make directories on the host (`filesystem.state`)".into()));
        }
        if r.own_copy {
            return Err(widen(&r.origin, "a project may not keep copies of files (`filesystem.own_copy`)".into()));
        }
        if r.cache {
            return Err(widen(&r.origin, "a project may not name caches (`filesystem.cache`)".into()));
        }
        let wanted = match r.kind {
            PathKind::Read => Access::Read,
            PathKind::Write => Access::Write,
            PathKind::Deny | PathKind::Protect => continue,
        };
        // Read and write rules are exact paths (globs are refused at parse time).
        let path = r.pattern.base();
        let have = lower.decide_path(&path).access;
        if wanted > have {
            return Err(widen(
                &r.origin,
                format!("it grants {} on {}, which the layers below make {}", r.kind.key(), path.display(), have),
            ));
        }
    }
    if let Some(r) = upper.net_quiet.first() {
        return Err(widen(&r.origin, "a project may not silence refusals from the monitor (`network.quiet`)".into()));
    }
    if let Some(g) = &upper.protect_git
        && !g.value
        && lower.protects_git()
    {
        return Err(widen(&g.origin, "it turns off the protection of git's configuration and hooks".into()));
    }
    if let Some(t) = &upper.windows_tier
        && t.value == crate::model::WindowsTier::RestrictedToken
        && lower.windows_tier() != crate::model::WindowsTier::RestrictedToken
    {
        return Err(widen(
            &t.origin,
            "it chooses Windows' restricted-token tier, which confines less than the layers below".into(),
        ));
    }
    if let Some(m) = &upper.net_mode
        && m.value == NetMode::Allowlist
        && lower.mode() == NetMode::None
    {
        return Err(widen(&m.origin, "it turns the network on, which the layers below keep off".into()));
    }
    for r in &upper.net_allow {
        if !lower.net_allow.iter().any(|l| r.pattern.is_subset_of(&l.pattern)) {
            return Err(widen(&r.origin, format!("it allows {}, which the layers below do not allow", r.pattern)));
        }
    }
    if let Some(h) = upper.hosts.first() {
        return Err(widen(
            &h.origin,
            format!("it maps {} to {}, redirecting where the gateway connects", h.name, h.addr),
        ));
    }
    for r in &upper.env_pass {
        let narrows = lower.env_pass.iter().any(|l| l.pattern == r.pattern)
            || (!r.pattern.contains('*') && matches!(lower.decide_env(&r.pattern), EnvDecision::Passed(_)));
        if !narrows {
            return Err(widen(
                &r.origin,
                format!("it passes `{}` from your environment, which the layers below do not", r.pattern),
            ));
        }
    }
    let l = &upper.limits;
    let ll = &lower.limits;
    macro_rules! lower_only {
        ($($f:ident),*) => {$(
            if let (Some(new), Some(old)) = (&l.$f, &ll.$f) {
                if new.value > old.value {
                    return Err(widen(&new.origin, format!("it raises {} above the {:?} set by the {}", stringify!($f), old.origin.text, old.origin.layer)));
                }
            }
        )*};
    }
    lower_only!(memory, pids, cpu_time, wall_time, file_size, open_files, tmp_size);
    let (nb, lb) = (&upper.net_budgets, lower.net_budgets.effective());
    let raised = |origin: &Origin, key: &str| {
        widen(origin, format!("it raises network.{key} above what the layers below allow"))
    };
    if let Some(s) = &nb.max_connections
        && s.value > lb.0
    {
        return Err(raised(&s.origin, "max_connections"));
    }
    for (s, old, key) in [(&nb.handshake_timeout, lb.1, "handshake_timeout"), (&nb.idle_timeout, lb.2, "idle_timeout")]
    {
        if let Some(s) = s
            && s.value > old
        {
            return Err(raised(&s.origin, key));
        }
    }
    for (s, old, key) in [(&nb.max_upload, lb.3, "max_upload"), (&nb.max_download, lb.4, "max_download")] {
        if let Some(s) = s
            && s.value > old
        {
            return Err(raised(&s.origin, key));
        }
    }
    if let Some(a) = &upper.audit {
        return Err(widen(&a.origin, "a project may not choose where the audit log is written".into()));
    }
    if let Some(p) = upper.publish.first() {
        return Err(widen(&p.origin, "a project may not publish ports (`network.publish`)".into()));
    }
    if let Some(p) = upper.programs.first() {
        return Err(widen(
            &p.origin,
            "a project may not make programs' install locations readable (`filesystem.programs`)".into(),
        ));
    }
    if let Some(o) = upper.retention.as_ref().map(|s| &s.origin).or(upper.keep.as_ref().map(|s| &s.origin)) {
        return Err(widen(o, "a project may not choose how long audit logs are kept".into()));
    }
    Ok(())
}
