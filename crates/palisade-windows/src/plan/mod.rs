//! The Windows plan: the portable view turned into what Windows enforces, as data.
//!
//! [`build`] is pure: the same view, limits and host facts give the same plan on every OS,
//! so every translation below is tested on Linux with golden outputs (`tests/golden/`), and
//! `palisade run --dry-run` prints it. The backend's `sys` module carries it out.
//!
//! ## The AppContainer tier
//!
//! - One AppContainer profile per workspace (`palisade.ws.TAG`, TAG a hash of the workspace's
//!   canonical key), no network capability: Windows itself refuses every socket (network
//!   part 2 adds the gateway).
//! - Two capabilities in the token, each named after exactly the entries it holds: the
//!   workspace's (`palisade.workspace.TAG.SET`), holding every grant this workspace's policy
//!   makes, and the toolchain's (`palisade.toolchain.SET`), holding the built-in policy's
//!   read grants, which are the same for every workspace with the same built-in reads and so
//!   are applied once per machine. Their SIDs are derived from the names ([`crate::sid`]):
//!   the same workspace and policy always give the same SID, so an entry is placed once,
//!   found again by the journal, and never accumulates ("Account Unknown" by the hundred);
//!   a different policy gets a different SID, so no token holds a grant its plan lacks.
//! - Files: an AppContainer reads nothing a DACL does not grant to it (or to
//!   `ALL APPLICATION PACKAGES`), so secrets are unreadable because nothing grants them.
//!   Beneath a grant, a hidden path gets a deny entry for the granting capability, a
//!   protected one a deny of every changing right ([`rights::WRITE_ANY`]). Deny entries
//!   name only Palisade's capability SIDs, which the user's own token never holds: nothing a
//!   run leaves can stop the user's own `git commit`.
//! - A placeholder (a protected path that does not exist yet, beneath a writable grant) is
//!   an empty directory made before the run with the same deny entry, and removed after it:
//!   the grant on its parent is [`rights::MODIFY`], which has no `FILE_DELETE_CHILD`, so it
//!   cannot be removed or renamed over from inside.
//! - Every ACL change is journaled before it is made ([`crate::journal`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_policy::model::Placeholder;
use palisade_policy::winpath::WinPath;
use palisade_sandbox::Limits;
use palisade_sandbox::view::{Entry, FsView, ViewError};
use serde::Serialize;

use crate::sid::{self, Sid};

pub mod guard;
pub mod network;
pub mod rights;

#[cfg(test)]
mod tests;

pub use guard::HostFacts;

/// How a run is confined; chosen by probing the machine (`palisade check` says which and
/// why), never by version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The default: an AppContainer token with Palisade's capabilities (no admin).
    AppContainer,
    /// A write-restricted token (`CreateRestrictedToken` with `WRITE_RESTRICTED`), for tools
    /// that cannot start in an AppContainer (Store-packaged executables); chosen by the user
    /// only (`windows.tier`, which a project may not set). Writes are confined as in the
    /// AppContainer (the workspace capability is the restricting SID); reads and the network
    /// are not, and every run says so in `missing`.
    RestrictedToken,
    /// Windows 11's process security environment API, where the probe finds it. Not built
    /// yet: refused.
    SecurityEnvironment,
}

/// The capability a grant goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Holder {
    /// `palisade.workspace.TAG.SET`: this workspace's grants under this policy.
    Workspace,
    /// `palisade.toolchain.SET`: the built-in policy's read grants (shared by workspaces).
    Toolchain,
}

/// A capability in the sandbox's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capability {
    /// Which one.
    pub holder: Holder,
    /// Its name, as given to `DeriveCapabilitySidsFromName`.
    pub name: String,
    /// Its SID (derived from the name).
    pub sid: Sid,
}

/// One ACL entry the plan places on a host object, exactly as the journal records it and
/// as a revoke removes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Ace {
    /// The object (canonical path).
    pub path: String,
    /// Allow or deny.
    pub kind: rights::AceKind,
    /// The trustee: one of the plan's capability SIDs.
    pub sid: Sid,
    /// The access mask.
    pub mask: u32,
    /// The mask's name ([`rights::name`]).
    pub rights: &'static str,
    /// Whether it reaches beneath the object.
    pub inherit: rights::Inherit,
    /// Whether the entry is set on a link itself (opened without following it), not on
    /// where it leads.
    pub on_link: bool,
    /// The name of the capability whose SID `sid` is (`forget` finds a workspace's entries
    /// by it).
    pub capability: String,
}

/// A host object the run makes before it starts and removes after it ends (a placeholder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Made {
    /// Where (canonical path).
    pub path: String,
    /// Its contents, when a file (git's empty configuration, a `commondir` of `.`); `None`:
    /// an empty directory.
    pub contents: Option<String>,
}

/// The job object every process of the run lives in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobPlan {
    /// `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`: closing the supervisor's handle (its exit,
    /// even a crash) ends every process of the run. Always on.
    pub kill_on_close: bool,
    /// `JOB_OBJECT_LIMIT_BREAKAWAY_OK` and `SILENT_BREAKAWAY_OK`: always off, so no child can
    /// leave the job.
    pub breakaway: bool,
    /// `JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION`: a crash ends the process instead of
    /// opening an error dialog nobody sees (on the private desktop). Always on.
    pub die_on_unhandled_exception: bool,
    /// `JOB_OBJECT_LIMIT_ACTIVE_PROCESS`: processes at once (the policy's `pids`; Windows
    /// counts processes, not threads).
    pub active_processes: Option<u32>,
    /// `JOB_OBJECT_LIMIT_JOB_MEMORY`: committed memory of all processes, in bytes.
    pub memory: Option<u64>,
    /// `JOB_OBJECT_LIMIT_JOB_TIME`: user-mode CPU time of all processes (Windows counts
    /// user time only), in 100-nanosecond units.
    pub user_time_100ns: Option<u64>,
    /// `JOBOBJECT_BASIC_UI_RESTRICTIONS`, by name: no clipboard (it may hold a secret), no
    /// global atoms, no USER handles from outside the job, no changes to system settings,
    /// desktops or the display, no logoff.
    pub ui_restrictions: Vec<&'static str>,
}

impl JobPlan {
    /// What every job of Palisade's has (kill on close, no breakaway, death on an unhandled
    /// exception), with no limit and no UI restriction: the base the run's job and the
    /// backend's own short-lived jobs (the probe, the wall check) add to.
    pub fn bare() -> JobPlan {
        JobPlan {
            kill_on_close: true,
            breakaway: false,
            die_on_unhandled_exception: true,
            active_processes: None,
            memory: None,
            user_time_100ns: None,
            ui_restrictions: Vec::new(),
        }
    }
}

/// A process creation mitigation (`PROC_THREAD_ATTRIBUTE_MITIGATION_POLICY`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mitigation {
    /// Its name (`PROCESS_CREATION_MITIGATION_POLICY_…`, without the prefix).
    pub name: &'static str,
    /// Its bit in the 64-bit policy word.
    pub bit: u64,
}

/// How the command is started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchPlan {
    /// The command and its arguments (quoted for `CreateProcessW` by the backend, as the
    /// Microsoft C runtime parses them).
    pub argv: Vec<String>,
    /// The working directory.
    pub cwd: String,
    /// The whole environment, sorted (TEMP and TMP are set to the run's private folder when
    /// it is made).
    pub env: Vec<(String, String)>,
    /// `PROC_THREAD_ATTRIBUTE_HANDLE_LIST`: the only handles the command inherits.
    pub inherit: Vec<&'static str>,
    /// A desktop of the run's own on the user's window station (`palisade-TAG-PID`): no
    /// window of the sandbox can read or drive the user's windows.
    pub private_desktop: bool,
    /// The mitigations asked for (those that do not break ordinary developer tools; see
    /// [`MITIGATIONS`]).
    pub mitigations: Vec<Mitigation>,
    /// `PROC_THREAD_ATTRIBUTE_DESKTOP_APP_POLICY` with
    /// `PROCESS_CREATION_DESKTOP_APP_BREAKAWAY_DISABLE_PROCESS_TREE`: a packaged tool's
    /// children stay in the job.
    pub desktop_app_breakaway_disabled: bool,
    /// Where each run's private TEMP folder is made (`TEMP`, `TMP`).
    pub temp_parent: String,
}

/// The whole plan; see the module.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowsPlan {
    /// The tier.
    pub tier: Tier,
    /// The portable view it came from.
    #[serde(skip)]
    pub view: FsView,
    /// The AppContainer profile's name (`CreateAppContainerProfile`).
    pub profile: String,
    /// Its package SID.
    pub profile_sid: Sid,
    /// The token's capabilities.
    pub capabilities: Vec<Capability>,
    /// ACL entries the run needs in place, in order (made once per workspace or machine and
    /// kept: the journal says which are in place already).
    pub acl: Vec<Ace>,
    /// Objects made for this run and removed after it.
    pub made: Vec<Made>,
    /// Paths readable by every AppContainer already (`ALL APPLICATION PACKAGES`), where the
    /// plan places nothing.
    pub already_readable: Vec<String>,
    /// The network: off, or the gateway only ([`network`]).
    pub network: network::NetworkPlan,
    /// The job object.
    pub job: JobPlan,
    /// The launch.
    pub launch: LaunchPlan,
    /// Protections of the policy this plan does not give, in words (recorded in
    /// `session_start`).
    pub missing: Vec<String>,
    /// How the run differs from Linux's without losing a protection (a protected file is
    /// read-only instead of a private copy), in words.
    pub notes: Vec<String>,
}

impl WindowsPlan {
    /// This plan with the gateway's ports bound (the allowlist's): its network plan and proxy
    /// variables name them. The plan is built before the listeners exist.
    pub fn with_gateway(&self, ports: network::GatewayPorts) -> WindowsPlan {
        let mut plan = self.clone();
        plan.network = network::build(&plan.profile_sid, Some(ports));
        network::set_env(&mut plan.launch.env, &plan.network);
        plan
    }
}

/// The prefix of the capability holding the built-in policy's read grants:
/// `palisade.toolchain.TAG`, TAG a hash of the exact entries it holds (paths, kinds, masks).
/// Workspaces whose built-in reads are the same share it (so they are placed once per
/// machine); a workspace whose policy narrows them (hides `~/.cargo`) gets another, so no
/// entry placed for one set is ever held by a token planned for a narrower one.
pub const TOOLCHAIN_CAPABILITY: &str = "palisade.toolchain";

/// Stands for the toolchain capability's SID until its entries are known.
const TOOLCHAIN_PENDING: &str = "toolchain";
/// Stands for the workspace capability's SID until its entries are known.
const WORKSPACE_PENDING: &str = "workspace";

/// The prefix of a workspace's capabilities: `palisade.workspace.TAG.SET`, TAG the
/// workspace's path tag, SET a hash of exactly the entries the capability holds. Runs of a
/// workspace with the same policy share one (its entries are placed once); a run whose
/// policy differs (`--allow-write`, an edited policy) gets its own, so no token ever holds a
/// grant its own plan did not ask for, even while runs with different policies overlap.
/// `palisade forget` revokes every capability of the workspace.
pub const WORKSPACE_CAPABILITY: &str = "palisade.workspace";

/// The mitigations every run asks for: address-space layout randomisation (bottom-up, high
/// entropy), heap corruption ending the process, no legacy extension points (AppInit DLLs,
/// winsock LSPs, shims), no images from remote shares or low-integrity files.
///
/// Left out on purpose, because ordinary developer tools break under them: dynamic code
/// prohibition (Node.js, the JVM and .NET generate code), strict handle checks (tools that
/// close handles twice crash), forced relocation (old tools), `Win32k` lock-down (console
/// programs that touch USER32), Microsoft-signed-only images (every compiler's output).
pub const MITIGATIONS: &[(&str, u64)] = &[
    ("HEAP_TERMINATE_ALWAYS_ON", 1 << 12),
    ("BOTTOM_UP_ASLR_ALWAYS_ON", 1 << 16),
    ("HIGH_ENTROPY_ASLR_ALWAYS_ON", 1 << 20),
    ("EXTENSION_POINT_DISABLE_ALWAYS_ON", 1 << 32),
    ("IMAGE_LOAD_NO_REMOTE_ALWAYS_ON", 1 << 52),
    ("IMAGE_LOAD_NO_LOW_LABEL_ALWAYS_ON", 1 << 56),
];

/// The job's UI restrictions, by name (`JOB_OBJECT_UILIMIT_…`); see [`JobPlan`].
pub const UI_RESTRICTIONS: &[(&str, u32)] = &[
    ("HANDLES", 0x1),
    ("READCLIPBOARD", 0x2),
    ("WRITECLIPBOARD", 0x4),
    ("SYSTEMPARAMETERS", 0x8),
    ("DISPLAYSETTINGS", 0x10),
    ("GLOBALATOMS", 0x20),
    ("DESKTOP", 0x40),
    ("EXITWINDOWS", 0x80),
];

/// The network a run asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkInput {
    /// No network (the default).
    Off,
    /// The allowlist, through the gateway; `run` names the run's package (a profile of its
    /// own, see [`network`]); `gateway` the ports when they are bound (`None` in a dry run).
    Allowlist {
        /// Distinguishes this run's package from the workspace's other runs (the supervisor's
        /// process id).
        run: u32,
        /// The gateway's ports, once bound.
        gateway: Option<network::GatewayPorts>,
    },
    /// Ports published to the host (`--publish`): inbound, which Windows runs refuse.
    Publish,
}

/// What [`build`] needs besides the view.
#[derive(Clone)]
pub struct Input<'a> {
    /// The portable view (`palisade_sandbox::view::build`).
    pub view: FsView,
    /// The workspace (the per-workspace names derive from its key).
    pub workspace: &'a Path,
    /// The command.
    pub argv: Vec<String>,
    /// The environment, already filtered by the policy.
    pub env: Vec<(String, String)>,
    /// The run's limits.
    pub limits: Limits,
    /// The private `${tmp}` of the view.
    pub tmp: &'a Path,
    /// The host's folders.
    pub facts: &'a HostFacts,
    /// The policy's network: off, or the allowlist through the gateway.
    pub network: NetworkInput,
    /// The tier (`windows.tier`).
    pub tier: Tier,
    /// Whether a read grant at a path comes from the built-in policy (its entry then goes to
    /// the toolchain capability, applied once per machine).
    pub builtin_read: &'a dyn Fn(&Path) -> bool,
}

impl std::fmt::Debug for Input<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input").field("workspace", &self.workspace).field("argv", &self.argv).finish_non_exhaustive()
    }
}

/// Builds the AppContainer plan; see the module.
///
/// # Errors
/// [`ViewError::Unrealisable`] for a path that is no canonical Windows path, a grant the
/// guard refuses ([`guard::check`]), published ports, the allowlist in the restricted-token
/// tier (which cannot confine the network).
pub fn build(input: Input<'_>) -> Result<WindowsPlan, ViewError> {
    let facts = input.facts;
    let workspace = win(input.workspace)?;
    let tag = sid::path_tag(&workspace.key());
    // A run with the allowlist has a package of its own: its loopback exemption and filters
    // then reach no other run of the workspace (see `network`).
    let profile = match input.network {
        NetworkInput::Allowlist { run, .. } => format!("palisade.ws.{tag}.run{run}"),
        _ => format!("palisade.ws.{tag}"),
    };
    let capabilities = vec![
        // Both named (and their SIDs derived) once their entries are known; see
        // WORKSPACE_CAPABILITY and TOOLCHAIN_CAPABILITY.
        Capability { holder: Holder::Workspace, sid: Sid(WORKSPACE_PENDING.into()), name: String::new() },
        Capability { holder: Holder::Toolchain, sid: Sid(TOOLCHAIN_PENDING.into()), name: String::new() },
    ];
    let sid_of = |h: Holder| {
        capabilities.iter().find(|c| c.holder == h).map(|c| c.sid.clone()).unwrap_or_else(|| unreachable!())
    };

    match input.network {
        NetworkInput::Publish => {
            return Err(unrealisable(
                input.workspace,
                "published ports (--publish, network.publish) are not built on Windows: no connection may reach a Windows run".into(),
            ));
        }
        NetworkInput::Allowlist { .. } if input.tier == Tier::RestrictedToken => {
            return Err(unrealisable(
                input.workspace,
                "the restricted-token tier cannot confine the network to the allowlist (its token is the user's, whom no per-run filter names); use the AppContainer tier, or turn the network off".into(),
            ));
        }
        _ => {}
    }

    let mut acl: Vec<Ace> = Vec::new();
    let mut made = Vec::new();
    let mut already_readable = Vec::new();
    let mut missing = Vec::new();
    let mut notes = Vec::new();
    // The subtree grants placed so far: (path, holder), parents before children.
    let mut grants: Vec<(WinPath, Holder)> = Vec::new();
    let temp_parent = facts.state.to_string() + "\\tmp";
    let tmp = win(input.tmp)?;

    let ace = |path: &WinPath, kind, sid: Sid, mask, inherit, on_link| Ace {
        path: path.to_string(),
        kind,
        sid,
        mask,
        rights: rights::name(mask),
        inherit,
        on_link,
        capability: String::new(),
    };
    // The grants that reach `path` from above (every capability holding one).
    let covering = |grants: &[(WinPath, Holder)], path: &WinPath| -> Vec<Holder> {
        let mut h: Vec<Holder> = grants.iter().filter(|(g, _)| path.is_within(g)).map(|(_, h)| *h).collect();
        h.sort();
        h.dedup();
        h
    };

    for entry in &input.view.entries {
        let path = win(entry.path())?;
        match entry {
            Entry::Private { size, .. } if path == tmp => {
                let t = WinPath::parse(&temp_parent).map_err(|e| unrealisable(input.tmp, e))?;
                acl.push(ace(
                    &t,
                    rights::AceKind::Allow,
                    sid_of(Holder::Workspace),
                    rights::MODIFY,
                    rights::Inherit::Subtree,
                    false,
                ));
                grants.push((t, Holder::Workspace));
                notes.push(format!(
                    "the private temporary folder is {temp_parent}\\RUN (TEMP and TMP), not {path}; its size ({size} bytes) is not limited"
                ));
            }
            Entry::Private { .. } => {
                // The home directory the policy does not grant: Windows cannot put an empty
                // folder in its place, and needs none: nothing in it is granted.
                notes.push(format!(
                    "{path} is not replaced by an empty folder; what the policy does not grant in it is unreadable"
                ));
            }
            Entry::Host { writable, .. } => {
                let site = guard::check(&path, *writable, facts).map_err(|e| unrealisable(entry.path(), e))?;
                if site == guard::Site::AlreadyReadable {
                    already_readable.push(path.to_string());
                    continue;
                }
                if !*writable && grants_writable(&acl, &path) {
                    // Read-only beneath a writable grant: it reads through the grant above,
                    // and every changing right is denied here.
                    acl.push(ace(
                        &path,
                        rights::AceKind::Deny,
                        sid_of(Holder::Workspace),
                        rights::WRITE_ANY,
                        rights::Inherit::Subtree,
                        false,
                    ));
                    continue;
                }
                if !*writable && input.tier == Tier::RestrictedToken {
                    // A write-restricted token reads what the user reads: no read grant.
                    continue;
                }
                let holder = if !*writable && (input.builtin_read)(entry.path()) {
                    Holder::Toolchain
                } else {
                    Holder::Workspace
                };
                let mask = if *writable { rights::MODIFY } else { rights::READ_EXECUTE };
                acl.push(ace(&path, rights::AceKind::Allow, sid_of(holder), mask, rights::Inherit::Subtree, false));
                grants.push((path, holder));
            }
            Entry::Hidden { dir, .. } if input.tier == Tier::RestrictedToken => {
                // Reads are not checked against the restricting SIDs, but writes are: beneath
                // a writable grant, a hidden path is kept from being changed or removed.
                if grants_writable(&acl, &path) {
                    let inherit = if *dir { rights::Inherit::Subtree } else { rights::Inherit::None };
                    acl.push(ace(
                        &path,
                        rights::AceKind::Deny,
                        sid_of(Holder::Workspace),
                        rights::WRITE_ANY,
                        inherit,
                        false,
                    ));
                }
            }
            Entry::Hidden { dir, .. } => {
                if let Some(r) = already_readable.iter().find(|r| WinPath::parse(r).is_ok_and(|r| path.is_within(&r))) {
                    missing.push(format!(
                        "{path} stays readable: every AppContainer may read {r} (ALL APPLICATION PACKAGES), and hiding it needs administrator rights"
                    ));
                }
                let inherit = if *dir { rights::Inherit::Subtree } else { rights::Inherit::None };
                for h in covering(&grants, &path) {
                    acl.push(ace(&path, rights::AceKind::Deny, sid_of(h), rights::ALL, inherit, false));
                }
            }
            Entry::Placeholder { kind, .. } => {
                let contents = match kind {
                    Placeholder::Absent => None,
                    Placeholder::EmptyConfig => {
                        Some("# placeholder made by Palisade while a sandbox runs\n".to_owned())
                    }
                    Placeholder::SameDir => Some(".\n".to_owned()),
                };
                let inherit = if contents.is_none() { rights::Inherit::Subtree } else { rights::Inherit::None };
                made.push(Made { path: path.to_string(), contents });
                acl.push(ace(
                    &path,
                    rights::AceKind::Deny,
                    sid_of(Holder::Workspace),
                    rights::WRITE_ANY,
                    inherit,
                    false,
                ));
            }
            Entry::PinnedLink { .. } => {
                acl.push(ace(
                    &path,
                    rights::AceKind::Deny,
                    sid_of(Holder::Workspace),
                    rights::WRITE_ANY,
                    rights::Inherit::None,
                    true,
                ));
            }
            Entry::PrivateCopy { .. } | Entry::OwnCopy { .. } => {
                acl.push(ace(
                    &path,
                    rights::AceKind::Deny,
                    sid_of(Holder::Workspace),
                    rights::WRITE_ANY,
                    rights::Inherit::None,
                    false,
                ));
                notes.push(format!(
                    "{path} is read-only inside (Linux gives a private copy that changes with the run): commands that rewrite it fail"
                ));
            }
            Entry::Cache { .. } => {
                let site = guard::check(&path, false, facts).map_err(|e| unrealisable(entry.path(), e))?;
                if grants_writable(&acl, &path) {
                    acl.push(ace(
                        &path,
                        rights::AceKind::Deny,
                        sid_of(Holder::Workspace),
                        rights::WRITE_ANY,
                        rights::Inherit::Subtree,
                        false,
                    ));
                } else if site == guard::Site::Grant && covering(&grants, &path).is_empty() {
                    acl.push(ace(
                        &path,
                        rights::AceKind::Allow,
                        sid_of(Holder::Workspace),
                        rights::READ_EXECUTE,
                        rights::Inherit::Subtree,
                        false,
                    ));
                    grants.push((path.clone(), Holder::Workspace));
                }
                notes.push(format!(
                    "the cache {path} is read-only inside (Windows has no overlay layer): downloads into it fail"
                ));
            }
            Entry::Link { .. } => {
                // A link the host has already (`/lib64` on Linux): nothing to make.
            }
            Entry::File { .. } => {
                missing.push(format!("{path}: a file shown in place of the host's is not supported on Windows"));
            }
        }
    }
    // A protected path can be neither renamed nor removed (its own deny), but a folder above
    // it could be renamed away and a new one made in its place (`.git` moved aside, a new
    // `.git` with its own configuration): every folder between a writable grant and a
    // protected path has `DELETE` denied, on itself only.
    let protected: Vec<WinPath> = acl
        .iter()
        .filter(|a| a.kind == rights::AceKind::Deny && a.mask == rights::WRITE_ANY)
        .filter_map(|a| WinPath::parse(&a.path).ok())
        .collect();
    let writable_roots: Vec<WinPath> = acl
        .iter()
        .filter(|a| a.kind == rights::AceKind::Allow && a.mask == rights::MODIFY)
        .filter_map(|a| WinPath::parse(&a.path).ok())
        .collect();
    let mut pinned: Vec<WinPath> = Vec::new();
    for p in &protected {
        for root in writable_roots.iter().filter(|r| p.is_within(r) && p != *r) {
            let mut a = p.parent();
            while let Some(dir) = a {
                if !dir.is_within(root) || dir == *root {
                    break;
                }
                if !pinned.contains(&dir) {
                    pinned.push(dir.clone());
                }
                a = dir.parent();
            }
        }
    }
    for dir in &pinned {
        if !acl
            .iter()
            .any(|a| a.path == dir.to_string() && a.kind == rights::AceKind::Deny && a.mask & rights::DELETE != 0)
        {
            acl.push(ace(
                dir,
                rights::AceKind::Deny,
                sid_of(Holder::Workspace),
                rights::DELETE,
                rights::Inherit::None,
                false,
            ));
        }
    }
    // Each writable root itself cannot be removed or renamed from inside (its grant's DELETE
    // would otherwise let the workspace be moved into the run's TEMP, which is removed at the
    // end of the run).
    for root in &writable_roots {
        let text = root.to_string();
        if !acl.iter().any(|a| a.path == text && a.kind == rights::AceKind::Deny && a.mask & rights::DELETE != 0) {
            acl.push(ace(
                root,
                rights::AceKind::Deny,
                sid_of(Holder::Workspace),
                rights::DELETE,
                rights::Inherit::None,
                false,
            ));
        }
    }
    acl.sort_by_key(|a| std::cmp::Reverse(matches!(a.kind, rights::AceKind::Deny)));
    acl.sort_by_key(|a| depth(&a.path));
    // Both capabilities, named after exactly what they hold.
    let mut capabilities = capabilities;
    for (holder, pending, prefix) in [
        (Holder::Toolchain, TOOLCHAIN_PENDING, TOOLCHAIN_CAPABILITY.to_owned()),
        (Holder::Workspace, WORKSPACE_PENDING, format!("{WORKSPACE_CAPABILITY}.{tag}")),
    ] {
        let mut held: Vec<String> = acl
            .iter()
            .filter(|a| a.sid.0 == pending)
            .map(|a| {
                let key = WinPath::parse(&a.path).map(|w| w.key()).unwrap_or_default();
                format!("{key}|{:?}|{:#x}|{:?}|{}", a.kind, a.mask, a.inherit, a.on_link)
            })
            .collect();
        held.sort();
        if held.is_empty() && holder == Holder::Toolchain {
            capabilities.retain(|c| c.holder != holder);
            continue;
        }
        let name = format!("{prefix}.{}", sid::path_tag(&held.join("\n")));
        let csid = sid::capability_sid(&name);
        for a in acl.iter_mut().filter(|a| a.sid.0 == pending) {
            a.sid = csid.clone();
            a.capability = name.clone();
        }
        for c in capabilities.iter_mut().filter(|c| c.holder == holder) {
            c.name = name.clone();
            c.sid = csid.clone();
        }
    }
    if input.tier == Tier::RestrictedToken {
        missing.push(
            "reads: the restricted-token tier confines writes only; the command runs as you and can read every file you can (secrets included), the memory of your other programs, and what Windows decrypts for you (Credential Manager, DPAPI) (windows.tier = \"restricted_token\")".into(),
        );
        if input.network == NetworkInput::Off {
            missing.push(
                "network: the restricted-token tier does not take the network away; the command can reach any host"
                    .into(),
            );
        }
    }
    if !input.view.tripwires.is_empty() {
        missing.push("tripwires: no decoy files are placed or watched on Windows yet".into());
    }
    let limits = &input.limits;
    if limits.file_size.is_some() {
        missing.push("[process] file_size: Windows has no per-file size limit".into());
    }
    if limits.open_files.is_some() {
        missing.push("[process] open_files: Windows has no per-process handle limit".into());
    }

    let mut env = input.env;
    env.retain(|(k, _)| !k.eq_ignore_ascii_case("TEMP") && !k.eq_ignore_ascii_case("TMP"));
    env.push(("TEMP".into(), format!("{temp_parent}\\RUN")));
    env.push(("TMP".into(), format!("{temp_parent}\\RUN")));

    let profile_sid = sid::app_container_sid(&profile);
    let network = match input.network {
        NetworkInput::Allowlist { gateway, .. } => {
            network::build(&profile_sid, Some(gateway.unwrap_or(network::GatewayPorts { http: 0, socks: 0 })))
        }
        _ => network::build(&profile_sid, None),
    };
    notes.extend(network.notes.iter().cloned());
    network::set_env(&mut env, &network);

    Ok(WindowsPlan {
        tier: input.tier,
        profile_sid,
        profile,
        network,
        capabilities,
        acl,
        made,
        already_readable,
        job: JobPlan {
            active_processes: limits.pids.map(|p| u32::try_from(p).unwrap_or(u32::MAX)),
            memory: limits.memory,
            user_time_100ns: limits.cpu_time.map(|d: Duration| u64::try_from(d.as_nanos() / 100).unwrap_or(u64::MAX)),
            ui_restrictions: UI_RESTRICTIONS.iter().map(|(n, _)| *n).collect(),
            ..JobPlan::bare()
        },
        launch: LaunchPlan {
            argv: input.argv,
            cwd: win(&input.view.cwd)?.to_string(),
            env,
            inherit: vec!["stdin", "stdout", "stderr"],
            private_desktop: true,
            mitigations: MITIGATIONS.iter().map(|(name, bit)| Mitigation { name, bit: *bit }).collect(),
            desktop_app_breakaway_disabled: true,
            temp_parent,
        },
        view: input.view,
        missing,
        notes,
    })
}

/// Whether a writable grant already placed reaches `path`.
fn grants_writable(acl: &[Ace], path: &WinPath) -> bool {
    acl.iter().any(|a| {
        a.kind == rights::AceKind::Allow
            && a.mask == rights::MODIFY
            && WinPath::parse(&a.path).is_ok_and(|g| path.is_within(&g))
    })
}

fn depth(path: &str) -> usize {
    path.matches('\\').count()
}

/// `path` as a canonical Windows path.
fn win(path: &Path) -> Result<WinPath, ViewError> {
    let text = path.to_str().ok_or_else(|| unrealisable(path, "the path is not valid Unicode".into()))?;
    WinPath::parse(text).map_err(|e| unrealisable(path, e))
}

fn unrealisable(path: &Path, reason: String) -> ViewError {
    ViewError::Unrealisable { path: PathBuf::from(path), reason }
}
