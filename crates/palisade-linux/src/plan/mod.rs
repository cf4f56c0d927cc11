//! The sandbox plan: what the Linux executor will do, as plain data.
//!
//! [`build`] turns a resolved policy and a view of the host file system into a [`Plan`]:
//! ordered mount operations, Landlock rules, the command, its environment and working
//! directory. Planning reads the host only through [`HostView`], so it is unit-tested with a
//! fake file system; the executor applies a plan and never reads the policy.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use palisade_policy::model::Placeholder;
use palisade_policy::pathrule::{PathPattern, is_within};
use palisade_policy::{Access, PathKind, ResolvedPolicy};
use serde::Serialize;

pub use palisade_policy::hostfs::{HostFs as HostView, Kind};

/// One step of building the sandbox's file system view. Paths are the same inside the
/// sandbox as on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MountOp {
    /// A private, empty tmpfs (the sandbox's `/tmp`, `/dev/shm`, home directory).
    Tmpfs { path: PathBuf, size: u64 },
    /// The host's `path` (and everything mounted under it) at the same place.
    Bind { path: PathBuf, writable: bool },
    /// Hide what the host has at `path` under an empty, read-only, inaccessible mask.
    Mask { path: PathBuf, dir: bool },
    /// `path` is missing on the host under a writable tree and must stay uncreatable. The
    /// supervisor makes an empty socket there (git, and every tool that skips special files,
    /// ignores it; nothing can be created beneath it) and records it so that the last run
    /// using it removes it, even after a crash; init mounts over it a symbolic link to a
    /// path that cannot exist ([`placeholder_target`]), so inside the path reads as absent
    /// (`ENOENT`) and cannot be created, renamed or removed.
    ///
    /// `kind` says what stands on the host ([`Placeholder`]): a socket, a file git reads as
    /// empty configuration, or, for a `commondir`, a read-only file saying `.`, which is also
    /// what the sandbox sees.
    Placeholder {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Placeholder::is_absent")]
        kind: Placeholder,
    },
    /// A symbolic link at a protected path in a writable tree: bound onto itself, so it can
    /// be neither removed nor replaced; where it leads is decided by its target's own rule.
    PinLink { path: PathBuf },
    /// A protected file that tools rewrite in place (git's configuration): init copies it
    /// into a private tmpfs at [`PRIVATE_COPIES`] and mounts over it a link to the copy, so
    /// the host's file cannot be changed, renamed or removed, while git inside, which
    /// follows the link when it locks and rewrites the file, writes the copy. Changes end
    /// with the run.
    PrivateCopy { path: PathBuf },
    /// A symbolic link in the sandbox's root, so a written path that went through a link on
    /// the host (`/lib64` → `/usr/lib64`) still resolves.
    Symlink { path: PathBuf, target: PathBuf },
    /// A read-only file with these contents over an existing file (`/etc/resolv.conf`).
    File { path: PathBuf, contents: String },
}

impl MountOp {
    pub fn path(&self) -> &Path {
        match self {
            MountOp::Tmpfs { path, .. }
            | MountOp::Bind { path, .. }
            | MountOp::Mask { path, .. }
            | MountOp::Placeholder { path, .. }
            | MountOp::PinLink { path }
            | MountOp::PrivateCopy { path }
            | MountOp::Symlink { path, .. }
            | MountOp::File { path, .. } => path,
        }
    }
}

/// Landlock rules: the second, inode-based layer over the same view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LandlockPlan {
    /// Hierarchies that may be read and executed.
    pub read: Vec<PathBuf>,
    /// Hierarchies that may be read, written and executed.
    pub write: Vec<PathBuf>,
    /// Directories that may be listed, nothing more (the sandbox's own `/`).
    pub list: Vec<PathBuf>,
    /// `/proc`: readable, and writable where the kernel allows (`/proc/self/...`).
    pub proc: Vec<PathBuf>,
    /// Device files and directories: read, write and device ioctls.
    pub devices: Vec<PathBuf>,
    /// Refuse every TCP bind and connect (when there is no network namespace to do it).
    pub deny_tcp: bool,
}

/// The gateway's listening addresses inside the sandbox (network mode `allowlist`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetPlan {
    pub http_proxy: std::net::SocketAddr,
    pub socks: std::net::SocketAddr,
    /// The DNS stub (UDP and TCP).
    pub dns: std::net::SocketAddr,
    /// Ports with a transparent listener (on every local address, so on the synthetic ones):
    /// each port an allow rule names, and 80 and 443 for rules that name none.
    pub transparent_ports: Vec<u16>,
    /// The transparent ports that are granted host loopback ports (`localhost:P`): those also
    /// listen on the sandbox's `[::1]`.
    pub loopback_ports: Vec<u16>,
}

/// Where the placeholder at `path` points inside the sandbox: a name in the sandbox's
/// read-only root that never exists, so reads find nothing, and writing through the link
/// fails with `EROFS` and an error that names the path; `ls -l` shows why.
pub fn placeholder_target(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(|| path.to_string_lossy(), |n| n.to_string_lossy());
    PathBuf::from(format!("/(palisade: {name} is protected here; create it outside the sandbox)"))
}

/// Where the private copies of [`MountOp::PrivateCopy`] live inside the sandbox (a small
/// tmpfs, writable).
pub const PRIVATE_COPIES: &str = "/.palisade/copies";
/// Size of that tmpfs, and the largest file copied into it (a larger one is bound read-only).
pub const PRIVATE_COPIES_SIZE: u64 = 4 << 20;
pub const PRIVATE_COPY_MAX: u64 = 1 << 20;

/// The DNS stub's address inside the sandbox.
pub const DNS: &str = "127.0.0.53:53";
/// At most this many transparent ports (each is a listening socket).
pub const MAX_TRANSPARENT_PORTS: usize = 32;

/// Where the gateway listens inside the sandbox, and the variables that point tools at it.
pub const HTTP_PROXY: &str = "127.0.0.1:3128";
pub const SOCKS_PROXY: &str = "127.0.0.1:1080";

/// Everything the executor needs; nothing it needs to look up.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// In order; the executor adds `/proc`, `/dev` and the root itself.
    pub mounts: Vec<MountOp>,
    pub landlock: LandlockPlan,
    pub argv: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub hostname: String,
    /// Size of the private `/dev/shm`.
    pub shm_size: u64,
    /// The gateway's listeners, when the network mode is `allowlist`.
    pub network: Option<NetPlan>,
    /// Decoy files to place and watch: only inside the sandbox's own private file systems
    /// (its home), never on the host.
    pub tripwires: Vec<PathBuf>,
    /// Record every exec (seccomp user notification, as an observer).
    pub trace_exec: bool,
    pub limits: Limits,
}

/// Resource limits of a run (`None`: no limit). `[process] tmp_size` is not here: it is the
/// size of the private `/tmp` mount.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub memory: Option<u64>,
    pub pids: Option<u64>,
    pub cpu_time: Option<std::time::Duration>,
    pub wall_time: Option<std::time::Duration>,
    pub file_size: Option<u64>,
    pub open_files: Option<u64>,
}

impl Limits {
    /// The policy's limits; `unlimited` becomes `None`.
    pub fn of(policy: &ResolvedPolicy) -> Limits {
        let l = &policy.limits;
        let n =
            |v: &Option<palisade_policy::model::Setting<u64>>| v.as_ref().map(|s| s.value).filter(|v| *v != u64::MAX);
        let d = |v: &Option<palisade_policy::model::Setting<std::time::Duration>>| {
            v.as_ref().map(|s| s.value).filter(|v| *v != std::time::Duration::MAX)
        };
        Limits {
            memory: n(&l.memory),
            pids: n(&l.pids),
            cpu_time: d(&l.cpu_time),
            wall_time: d(&l.wall_time),
            file_size: n(&l.file_size),
            open_files: n(&l.open_files),
        }
    }
}

impl Plan {
    /// Whether the host's `path` (canonical) is writable from inside the sandbox: the deepest
    /// operation covering it is a writable bind of host content.
    pub fn exposes_writable(&self, path: &Path) -> bool {
        let deepest = self.mounts.iter().filter(|m| is_within(path, m.path())).max_by_key(|m| depth(m.path()));
        matches!(deepest, Some(MountOp::Bind { writable: true, .. }))
    }
}

/// Sizes of the private file systems when the policy sets none.
pub const DEFAULT_TMP_SIZE: u64 = 2 << 30;
pub const DEFAULT_HOME_SIZE: u64 = 1 << 30;
pub const DEFAULT_SHM_SIZE: u64 = 256 << 20;
/// How many directory entries a glob in `deny`/`protect` may visit while it is expanded.
pub const GLOB_BUDGET: usize = 200_000;

/// What to run, besides the policy.
#[derive(Debug, Clone)]
pub struct Request {
    pub argv: Vec<OsString>,
    /// The caller's working directory; used inside when visible, else the workspace.
    pub cwd: PathBuf,
    /// The environment, already filtered by the policy.
    pub env: Vec<(String, String)>,
    /// The private temporary directory (canonical `${tmp}`).
    pub tmp: PathBuf,
    /// Record every exec.
    pub trace_exec: bool,
}

/// Why a plan cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanError {
    #[error("{} is granted inside the denied directory {}; Palisade cannot show it there", path.display(), denied.display())]
    GrantInsideMask { path: PathBuf, denied: PathBuf },
    #[error("the pattern `{pattern}` visits more than {GLOB_BUDGET} files while it is expanded; make it narrower")]
    GlobTooBroad { pattern: String },
    #[error("the command is empty")]
    NoCommand,
}

/// How a path looks inside the sandbox, as far as planning has decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// The sandbox's own read-only root: nothing from the host.
    Root,
    /// A private tmpfs: writable, nothing from the host.
    Private,
    /// Host content with this access.
    Host(Access),
    /// A mask: nothing below can be shown.
    Masked,
}

/// Builds the plan for running `req` under `policy`.
pub fn build(policy: &ResolvedPolicy, host: &dyn HostView, req: Request) -> Result<Plan, PlanError> {
    if req.argv.is_empty() {
        return Err(PlanError::NoCommand);
    }
    let mut candidates: Vec<(PathBuf, Candidate)> = Vec::new();
    candidates.push((req.tmp.clone(), Candidate::Private(limit(policy, |l| &l.tmp_size, DEFAULT_TMP_SIZE))));
    if policy.decide_path(&policy.home).access == Access::None {
        candidates.push((policy.home.clone(), Candidate::Private(DEFAULT_HOME_SIZE)));
    }
    let grant_roots: Vec<(PathBuf, bool)> = policy
        .paths
        .iter()
        .filter(|r| matches!(r.kind, PathKind::Read | PathKind::Write))
        .map(|r| (r.pattern.base(), r.kind == PathKind::Write))
        .collect();
    for r in &policy.paths {
        match (&r.pattern, r.kind) {
            (PathPattern::Exact(p, _), _) => candidates.push((p.clone(), Candidate::Rule)),
            (PathPattern::Glob(_), _) => {
                for p in expand_glob(&r.pattern, &grant_roots, host)? {
                    candidates.push((p, Candidate::Rule));
                }
            }
        }
    }
    // Parents before children; at one path, the private file system wins (the policy's grant
    // of `${tmp}` means the private directory, never the host's).
    // Paths are normalised, so byte order and equality are enough (and much cheaper than
    // comparing component by component).
    candidates.sort_by_cached_key(|(p, c)| (depth(p), p.as_os_str().to_owned(), !c.is_private()));
    candidates.dedup_by(|(a, _), (b, _)| same(a, b));

    let mut mounted: Vec<(PathBuf, View)> = Vec::new();
    let mut mounts = Vec::new();
    for (path, cand) in candidates {
        let inherited = view_of(&mounted, &path);
        if let Candidate::Private(size) = cand {
            if inherited == View::Root {
                mounts.push(MountOp::Tmpfs { path: path.clone(), size });
                mounted.push((path, View::Private));
            }
            continue;
        }
        let d = policy.decide_path(&path);
        // Host content appears only where a grant names this very path (or beneath a bind):
        // a path whose access comes from a private directory's grant stays private.
        let granted_here = d.rule.is_some_and(|r| {
            matches!(r.kind, PathKind::Read | PathKind::Write)
                && matches!(&r.pattern, PathPattern::Exact(p, _) if same(p, &path))
        });
        if matches!(inherited, View::Root | View::Private) && !granted_here {
            continue;
        }
        let hints = Hints {
            private_copy: d.protected_by.is_some_and(|r| r.private_copy),
            placeholder: d.protected_by.map_or(Placeholder::Absent, |r| r.placeholder),
        };
        plan_path(&path, d.access, hints, inherited, host, &mut mounts, &mut mounted)?;
    }
    // Links for grants written through a symlink (`/lib64`, a linked home directory).
    for r in &policy.paths {
        let Some(link) = &r.via_link else { continue };
        let target = r.pattern.base();
        if matches!(view_of(&mounted, link), View::Root | View::Private)
            && !mounted.iter().any(|(p, _)| p == link)
            && policy.decide_path(&target).access != Access::None
            && !mounts.iter().any(|m| m.path() == link)
        {
            mounts.push(MountOp::Symlink { path: link.clone(), target });
        }
    }
    let landlock = landlock_plan(&mounts);
    let visible = matches!(view_of(&mounted, &req.cwd), View::Host(Access::Read | Access::Write));
    let cwd = if visible && host.kind(&req.cwd) == Some(Kind::Dir) { req.cwd } else { policy.workspace.clone() };
    let mut env = req.env;
    let network = (policy.mode() == palisade_policy::NetMode::Allowlist).then(|| {
        // Conveniences for tools that honour them; the network namespace is what enforces.
        // `ALL_PROXY` names the HTTP proxy too: clients that only read it (pip through
        // requests, curl for any scheme) then work without a SOCKS library; the SOCKS5
        // listener stays for clients told to use it.
        let http = format!("http://{HTTP_PROXY}");
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
            set_env(&mut env, k, &http);
            set_env(&mut env, &k.to_ascii_lowercase(), &http);
        }
        set_env(&mut env, "NO_PROXY", "localhost,127.0.0.1,::1");
        set_env(&mut env, "no_proxy", "localhost,127.0.0.1,::1");
        let mut ports: Vec<u16> =
            policy.net_allow.iter().flat_map(|r| r.pattern.port.map_or(vec![80, 443], |p| vec![p])).collect();
        ports.sort_unstable();
        ports.dedup();
        ports.truncate(MAX_TRANSPARENT_PORTS);
        let loopback_ports = ports.iter().copied().filter(|p| policy.loopback_grant(*p).is_some()).collect();
        NetPlan {
            loopback_ports,
            http_proxy: HTTP_PROXY.parse().expect("constant"),
            socks: SOCKS_PROXY.parse().expect("constant"),
            dns: DNS.parse().expect("constant"),
            transparent_ports: ports,
        }
    });
    // Names resolve through the stub; the host's resolver configuration never reaches in.
    let resolv = Path::new("/etc/resolv.conf");
    if network.is_some() && host.kind(resolv) == Some(Kind::File) && matches!(view_of(&mounted, resolv), View::Host(_))
    {
        mounts.push(MountOp::File { path: resolv.into(), contents: "nameserver 127.0.0.53\noptions edns0\n".into() });
    }
    env.sort();
    let tripwires = policy
        .tripwires
        .iter()
        .map(|t| t.value.clone())
        .filter(|t| view_of(&mounted, t) == View::Private && !mounts.iter().any(|m| m.path() == t))
        .collect();
    Ok(Plan {
        mounts,
        landlock,
        argv: req.argv,
        env,
        cwd,
        hostname: "palisade".into(),
        shm_size: DEFAULT_SHM_SIZE,
        network,
        tripwires,
        trace_exec: req.trace_exec,
        limits: Limits::of(policy),
    })
}

fn set_env(env: &mut Vec<(String, String)>, k: &str, v: &str) {
    env.retain(|(n, _)| n != k);
    env.push((k.to_owned(), v.to_owned()));
}

mod degraded;
mod paths;

pub use degraded::{DegradedPlan, build_degraded};
use paths::*;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use palisade_policy::{LayerKind, Lexical, ResolveOptions, Vars, parse_layer, resolve};

    use super::*;

    #[derive(Default)]
    struct FakeHost(BTreeMap<PathBuf, Kind>);

    fn placeholder(p: &str) -> MountOp {
        MountOp::Placeholder { path: p.into(), kind: Placeholder::Absent }
    }

    impl FakeHost {
        fn with(entries: &[(&str, Kind)]) -> FakeHost {
            let mut h = FakeHost::default();
            for (p, k) in entries {
                let p = PathBuf::from(p);
                for a in p.ancestors().skip(1) {
                    h.0.entry(a.to_path_buf()).or_insert(Kind::Dir);
                }
                h.0.insert(p, *k);
            }
            h
        }
    }

    impl HostView for FakeHost {
        fn kind(&self, path: &Path) -> Option<Kind> {
            self.0.get(path).copied()
        }
        fn list(&self, dir: &Path) -> Vec<(OsString, Kind)> {
            self.0
                .iter()
                .filter(|(p, _)| p.parent() == Some(dir))
                .map(|(p, k)| (p.file_name().unwrap().to_os_string(), *k))
                .collect()
        }
        fn read(&self, _: &Path, _: usize) -> Option<Vec<u8>> {
            None
        }
    }

    fn policy(text: &str) -> ResolvedPolicy {
        let vars = Vars::with_defaults(Path::new("/home/u"), Path::new("/w/proj"));
        let l = parse_layer(text, "t.toml", LayerKind::User, &vars, &Lexical).unwrap();
        resolve(Path::new("/w/proj"), Path::new("/home/u"), vec![l], ResolveOptions::default()).unwrap()
    }

    fn plan(text: &str, host: &FakeHost) -> Result<Plan, PlanError> {
        let req = Request {
            argv: vec!["true".into()],
            cwd: "/w/proj".into(),
            env: vec![],
            tmp: "/tmp".into(),
            trace_exec: false,
        };
        build(&policy(text), host, req)
    }

    fn bind(p: &str, writable: bool) -> MountOp {
        MountOp::Bind { path: p.into(), writable }
    }

    const BASE: &str =
        "[filesystem]\nread = [\"/usr\", \"/etc\", \"~/.cargo\"]\nwrite = [\"${workspace}\", \"${tmp}\"]\n";

    fn host() -> FakeHost {
        FakeHost::with(&[
            ("/usr/bin/sh", Kind::File),
            ("/etc/passwd", Kind::File),
            ("/etc/shadow", Kind::File),
            ("/home/u/.cargo/bin", Kind::Dir),
            ("/home/u/.ssh/id_rsa", Kind::File),
            ("/w/proj/src/main.rs", Kind::File),
            ("/w/proj/.git/hooks/pre-commit", Kind::File),
            ("/w/proj/.git/config", Kind::File),
            ("/tmp/x", Kind::File),
        ])
    }

    #[test]
    fn grants_become_binds_and_private_dirs_tmpfs() {
        let p = plan(BASE, &host()).unwrap();
        assert!(p.mounts.contains(&bind("/usr", false)));
        assert!(p.mounts.contains(&bind("/etc", false)));
        assert!(p.mounts.contains(&bind("/w/proj", true)));
        assert!(p.mounts.contains(&bind("/home/u/.cargo", false)));
        assert!(p.mounts.contains(&MountOp::Tmpfs { path: "/tmp".into(), size: DEFAULT_TMP_SIZE }));
        assert!(p.mounts.contains(&MountOp::Tmpfs { path: "/home/u".into(), size: DEFAULT_HOME_SIZE }));
        // The home's secrets are simply never bound: absent, ENOENT.
        assert!(!p.mounts.iter().any(|m| m.path().starts_with("/home/u/.ssh")));
        assert_eq!(p.landlock.read, [PathBuf::from("/etc"), "/usr".into()]);
        assert!(p.landlock.write.contains(&"/w/proj".into()));
        // ~/.cargo is bound read-only inside the private home, whose rule already covers it
        // (Landlock adds rights along the path; the mount flag is what makes it read-only).
        assert!(p.landlock.write.contains(&"/home/u".into()));
    }

    #[test]
    fn landlock_rules_only_where_a_bind_grants_more_than_its_surroundings() {
        let p = plan(&format!("{BASE}protect = [\".git/hooks\", \".git/config\"]\n"), &host()).unwrap();
        // Pins and read-only binds inside the writable workspace: no rule of their own.
        assert!(
            !p.landlock.read.iter().chain(&p.landlock.write).any(|r| r.starts_with("/w/proj/.git")),
            "{:?}",
            p.landlock
        );
        // A writable bind inside a read-only one needs its own.
        let p = plan(
            "[filesystem]\nread = [\"/opt\"]\nwrite = [\"/opt/cache\"]\n",
            &FakeHost::with(&[("/opt/cache/x", Kind::File)]),
        )
        .unwrap();
        assert_eq!(p.landlock.write.iter().filter(|w| w.starts_with("/opt")).count(), 1);
        assert!(p.landlock.read.contains(&"/opt".into()));
    }

    #[test]
    fn parents_are_mounted_before_children() {
        let p = plan(BASE, &host()).unwrap();
        for (i, m) in p.mounts.iter().enumerate() {
            for later in &p.mounts[i + 1..] {
                assert!(
                    !m.path().starts_with(later.path()) || m.path() == later.path(),
                    "{m:?} before its parent {later:?}"
                );
            }
        }
    }

    #[test]
    fn denied_files_inside_a_grant_are_masked() {
        let p = plan(&format!("{BASE}deny = [\"/etc/shadow\", \"~/.cargo/credentials.toml\"]\n"), &host()).unwrap();
        assert!(p.mounts.contains(&MountOp::Mask { path: "/etc/shadow".into(), dir: false }));
        // Missing under a read-only tree: nothing to do, it cannot appear.
        assert!(!p.mounts.iter().any(|m| m.path() == Path::new("/home/u/.cargo/credentials.toml")));
    }

    #[test]
    fn protected_paths_in_the_workspace_are_pinned_and_read_only() {
        let p =
            plan(&format!("{BASE}protect = [\".git/hooks\", \".git/config\", \".vscode\", \".git/info\"]\n"), &host())
                .unwrap();
        let i_git = p.mounts.iter().position(|m| *m == bind("/w/proj/.git", true)).expect(".git pinned");
        let i_hooks = p.mounts.iter().position(|m| *m == bind("/w/proj/.git/hooks", false)).expect("hooks read-only");
        assert!(i_git < i_hooks);
        assert!(p.mounts.contains(&bind("/w/proj/.git/config", false)));
        assert!(p.mounts.contains(&placeholder("/w/proj/.vscode")));
        assert!(p.mounts.contains(&placeholder("/w/proj/.git/info")));
        assert_eq!(p.mounts.iter().filter(|m| **m == bind("/w/proj/.git", true)).count(), 1, "pinned once");
    }

    #[test]
    fn missing_protected_path_masks_its_first_missing_component() {
        let h = FakeHost::with(&[("/usr/bin/sh", Kind::File), ("/w/proj/README", Kind::File)]);
        let p = plan(&format!("{BASE}protect = [\".git/hooks\", \".git/config\"]\n"), &h).unwrap();
        let ph: Vec<_> = p.mounts.iter().filter(|m| matches!(m, MountOp::Placeholder { .. })).collect();
        assert_eq!(ph, [&placeholder("/w/proj/.git")]);
        let p = plan(&format!("{BASE}protect = [\".mcp.json\", \".envrc\", \".claude\"]\n"), &h).unwrap();
        assert!(p.mounts.contains(&placeholder("/w/proj/.mcp.json")));
        assert!(p.mounts.contains(&placeholder("/w/proj/.envrc")));
        assert!(p.mounts.contains(&placeholder("/w/proj/.claude")));
    }

    #[test]
    fn a_file_where_a_protected_path_needs_a_directory_is_pinned() {
        // Nothing can be created beneath a file; pinned, it cannot be replaced by a directory.
        let h = FakeHost::with(&[("/w/proj/.git", Kind::File)]);
        let p = plan(&format!("{BASE}protect = [\".git/hooks\"]\n"), &h).unwrap();
        assert!(p.mounts.contains(&bind("/w/proj/.git", true)));
        assert!(!p.mounts.iter().any(|m| m.path().starts_with("/w/proj/.git/hooks")), "{:?}", p.mounts);
    }

    #[test]
    fn symlinks_at_or_above_a_protected_path_are_pinned_not_refused() {
        for protect in [".vscode", ".vscode/tasks.json"] {
            let h = FakeHost::with(&[("/w/proj/.vscode", Kind::Symlink)]);
            let p = plan(&format!("{BASE}protect = [\"{protect}\"]\n"), &h).unwrap();
            assert!(p.mounts.contains(&MountOp::PinLink { path: "/w/proj/.vscode".into() }), "{protect}");
            assert_eq!(p.mounts.iter().filter(|m| m.path().starts_with("/w/proj/.vscode")).count(), 1, "{protect}");
        }
        // A denied link in a read-only tree is harmless: nothing to do.
        let h = FakeHost::with(&[("/usr/evil", Kind::Symlink)]);
        let p = plan(&format!("{BASE}deny = [\"/usr/evil\"]\n"), &h).unwrap();
        assert!(!p.mounts.iter().any(|m| m.path() == Path::new("/usr/evil")));
    }

    #[test]
    fn write_grant_inside_a_read_grant_is_rebound_writable() {
        let h = FakeHost::with(&[("/home/u/.cargo/registry/x", Kind::File)]);
        let text = "[filesystem]\nread = [\"~/.cargo\"]\nwrite = [\"~/.cargo/registry\"]\n";
        let p = plan(text, &h).unwrap();
        assert!(p.mounts.contains(&bind("/home/u/.cargo", false)));
        assert!(p.mounts.contains(&bind("/home/u/.cargo/registry", true)));
    }

    #[test]
    fn grant_inside_a_denied_directory_is_an_error() {
        let h = FakeHost::with(&[("/srv/a/b/c", Kind::File)]);
        let e = plan("[filesystem]\nread = [\"/srv\", \"/srv/a/b\"]\ndeny = [\"/srv/a\"]\n", &h).unwrap_err();
        assert_eq!(e, PlanError::GrantInsideMask { path: "/srv/a/b".into(), denied: "/srv/a".into() });
    }

    #[test]
    fn deny_globs_expand_inside_granted_trees_only() {
        let h = FakeHost::with(&[
            ("/w/proj/.env", Kind::File),
            ("/w/proj/sub/.env", Kind::File),
            ("/w/proj/.envrc", Kind::File),
            ("/opt/.env", Kind::File),
        ]);
        let p = plan(&format!("{BASE}deny = [\"**/.env\"]\n"), &h).unwrap();
        let masks: Vec<_> =
            p.mounts.iter().filter(|m| matches!(m, MountOp::Mask { .. })).map(|m| m.path().to_path_buf()).collect();
        assert_eq!(masks, [PathBuf::from("/w/proj/.env"), "/w/proj/sub/.env".into()]);
    }

    #[test]
    fn grants_written_through_a_link_get_the_link() {
        let vars = Vars::with_defaults(Path::new("/home/u"), Path::new("/w/proj"));
        struct LinkLib64;
        impl palisade_policy::PathResolver for LinkLib64 {
            fn resolve(&self, p: &Path) -> PathBuf {
                if p == Path::new("/lib64") { "/usr/lib64".into() } else { p.to_path_buf() }
            }
        }
        let l = parse_layer("[filesystem]\nread = [\"/usr\", \"/lib64\"]\n", "t", LayerKind::User, &vars, &LinkLib64)
            .unwrap();
        let pol = resolve(Path::new("/w/proj"), Path::new("/home/u"), vec![l], ResolveOptions::default()).unwrap();
        let h = FakeHost::with(&[("/usr/lib64/ld.so", Kind::File)]);
        let req =
            Request { argv: vec!["true".into()], cwd: "/".into(), env: vec![], tmp: "/tmp".into(), trace_exec: false };
        let p = build(&pol, &h, req).unwrap();
        assert!(p.mounts.contains(&MountOp::Symlink { path: "/lib64".into(), target: "/usr/lib64".into() }));
        assert_eq!(p.cwd, Path::new("/w/proj"), "an invisible cwd falls back to the workspace");
    }

    #[test]
    fn home_and_workspace_under_the_private_tmp_stay_private() {
        // Regression: with `${tmp}` = /tmp granted write, host /tmp (and a home under it)
        // was bound into the sandbox instead of a private tmpfs.
        let vars = Vars::with_defaults(Path::new("/tmp/t/home"), Path::new("/tmp/t/ws"));
        let text = "[filesystem]\nread = [\"/usr\"]\nwrite = [\"${workspace}\", \"${tmp}\"]\ndeny = [\"~/.ssh\"]\n";
        let l = parse_layer(text, "t", LayerKind::User, &vars, &Lexical).unwrap();
        let pol =
            resolve(Path::new("/tmp/t/ws"), Path::new("/tmp/t/home"), vec![l], ResolveOptions::default()).unwrap();
        let h = FakeHost::with(&[
            ("/tmp/t/home/.ssh/id_rsa", Kind::File),
            ("/tmp/t/ws/a", Kind::File),
            ("/tmp/t/other", Kind::Dir),
            ("/usr/bin/sh", Kind::File),
        ]);
        let req = Request {
            argv: vec!["true".into()],
            cwd: "/tmp/t/other".into(),
            env: vec![],
            tmp: "/tmp".into(),
            trace_exec: false,
        };
        let p = build(&pol, &h, req).unwrap();
        assert_eq!(p.mounts[0], MountOp::Tmpfs { path: "/tmp".into(), size: DEFAULT_TMP_SIZE });
        assert!(!p.mounts.iter().any(|m| matches!(m, MountOp::Bind { path, .. } if path == Path::new("/tmp") || path.starts_with("/tmp/t/home"))), "{:?}", p.mounts);
        assert!(p.mounts.contains(&bind("/tmp/t/ws", true)));
        assert_eq!(p.cwd, Path::new("/tmp/t/ws"), "a cwd that is not bound falls back to the workspace");
    }

    #[test]
    fn degraded_plan_grants_what_exists_and_lists_what_is_lost() {
        let text = format!("{BASE}deny = [\"/etc/shadow\", \"~/.ssh\"]\nprotect = [\".git/hooks\"]\n");
        let req = Request {
            argv: vec!["true".into()],
            cwd: "/w/proj/src".into(),
            env: vec![],
            tmp: "/tmp".into(),
            trace_exec: false,
        };
        let p = build_degraded(&policy(&text), &host(), req).unwrap();
        assert!(p.landlock.deny_tcp);
        assert!(p.landlock.read.contains(&"/usr".into()) && p.landlock.write.contains(&"/w/proj".into()));
        assert!(!p.landlock.devices.iter().any(|d| d == Path::new("/dev")), "never the whole of /dev");
        assert!(p.missing.iter().any(|m| m.contains("/etc/shadow") && m.contains("not hidden")), "{:?}", p.missing);
        assert!(p.missing.iter().any(|m| m.contains(".git/hooks") && m.contains("stay writable")), "{:?}", p.missing);
        assert!(!p.missing.iter().any(|m| m.contains(".ssh")), "~/.ssh is outside every grant: still unreadable");
        assert_eq!(p.cwd, Path::new("/w/proj/src"));
    }

    #[test]
    fn allowlist_mode_gets_gateway_listeners_and_proxy_variables() {
        let p = plan(BASE, &host()).unwrap();
        assert_eq!(p.network, None);
        assert!(!p.env.iter().any(|(k, _)| k == "HTTP_PROXY"));
        let p = plan(&format!("{BASE}[network]\nmode = \"allowlist\"\nallow = [\"a.com\"]\n"), &host()).unwrap();
        assert_eq!(p.network.as_ref().unwrap().http_proxy.to_string(), HTTP_PROXY);
        let get = |k: &str| p.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("https_proxy"), Some("http://127.0.0.1:3128"));
        assert_eq!(get("ALL_PROXY"), Some("http://127.0.0.1:3128"));
        assert_eq!(get("NO_PROXY"), Some("localhost,127.0.0.1,::1"));
        assert_eq!(p.network.as_ref().unwrap().transparent_ports, [80, 443]);
        let p =
            plan(&format!("{BASE}[network]\nmode = \"allowlist\"\nallow = [\"a.com:8443\", \"b.com:22\"]\n"), &host())
                .unwrap();
        assert_eq!(p.network.as_ref().unwrap().transparent_ports, [22, 8443]);
    }

    #[test]
    fn which_host_paths_the_sandbox_can_write() {
        let p = plan(&format!("{BASE}protect = [\".git/hooks\"]\n"), &host()).unwrap();
        assert!(p.exposes_writable(Path::new("/w/proj/src/x.log")));
        assert!(!p.exposes_writable(Path::new("/w/proj/.git/hooks/x")));
        assert!(!p.exposes_writable(Path::new("/tmp/x.log")), "the sandbox's /tmp is private");
        assert!(!p.exposes_writable(Path::new("/home/u/.local/state/palisade/s.jsonl")));
        assert!(!p.exposes_writable(Path::new("/etc/x")));
    }

    #[test]
    fn tripwires_go_only_into_private_file_systems() {
        let text = format!(
            "{BASE}[monitor]\ntripwires = [\"~/.ssh/id_rsa\", \"/etc/decoy\", \"${{workspace}}/decoy\", \"~/.cargo/decoy\"]\n"
        );
        let p = plan(&text, &host()).unwrap();
        assert_eq!(p.tripwires, [PathBuf::from("/home/u/.ssh/id_rsa")], "never on the host's file systems");
    }

    #[test]
    fn empty_command_is_refused() {
        let req = Request { argv: vec![], cwd: "/".into(), env: vec![], tmp: "/tmp".into(), trace_exec: false };
        assert_eq!(build(&policy(BASE), &host(), req).unwrap_err(), PlanError::NoCommand);
    }
}
