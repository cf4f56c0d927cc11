//! The Linux plan: how the Linux backend realises the portable view, as plain data.
//!
//! [`build`] takes the neutral file-system view ([`palisade_sandbox::view`]) and adds what
//! only Linux needs: the Landlock rules over the same view, the network namespace's gateway
//! listeners and proxy variables, `/etc/resolv.conf`, the hostname and `/dev/shm`. In the
//! [`Mode::Degraded`] mode (no namespaces), it is Landlock over the policy's grants on the
//! host's own file system, with the list of what that mode cannot give. Planning reads the
//! host only through [`HostView`], so it is unit-tested with a fake file system; the executor
//! applies a plan and never reads the policy.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use palisade_policy::pathrule::is_within;
use palisade_policy::{Access, PathKind, ResolvedPolicy};
use palisade_sandbox::view::{self, Entry, FsView, Seen};
use serde::Serialize;

pub use palisade_policy::hostfs::{HostFs as HostView, Kind};
pub use palisade_sandbox::view::ViewError as PlanError;
pub use palisade_sandbox::{Limits, Request};

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
    /// The HTTP proxy (also named by `ALL_PROXY`).
    pub http_proxy: std::net::SocketAddr,
    /// The SOCKS5 proxy.
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

/// Where the private copies of [`Entry::PrivateCopy`] live inside the sandbox (a small
/// tmpfs, writable).
pub const PRIVATE_COPIES: &str = "/.palisade/copies";
/// Size of that tmpfs, in bytes.
pub const PRIVATE_COPIES_SIZE: u64 = 4 << 20;
/// The largest file copied into it, in bytes (a larger one is bound read-only).
pub const PRIVATE_COPY_MAX: u64 = 1 << 20;

/// The DNS stub's address inside the sandbox.
pub const DNS: &str = "127.0.0.53:53";
/// At most this many transparent ports (each is a listening socket).
pub const MAX_TRANSPARENT_PORTS: usize = 32;

/// Where the gateway's HTTP proxy listens inside the sandbox (the proxy variables name it).
pub const HTTP_PROXY: &str = "127.0.0.1:3128";
/// Where its SOCKS5 proxy listens inside the sandbox.
pub const SOCKS_PROXY: &str = "127.0.0.1:1080";

/// Which way the plan is run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// User, mount, pid, net, ipc, uts and cgroup namespaces; a fresh root built from the
    /// view's entries by `pivot_root`; Landlock and seccomp over it.
    Namespaces,
    /// `--allow-degraded`, when the kernel refuses user namespaces (an unprivileged
    /// container, AppArmor's restriction): no namespaces, Landlock over the policy's grants
    /// on the host's own file system, all TCP refused, seccomp; the view's entries are only
    /// those grants.
    Degraded {
        /// What the policy asks for that this mode cannot give, in words (for the warning
        /// and for `session_start`).
        missing: Vec<String>,
    },
}

/// Everything the executor needs; nothing it needs to look up.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// How it is run.
    pub mode: Mode,
    /// The portable view: entries in order (the executor adds `/proc`, `/dev` and the root
    /// itself), the working directory and the decoys.
    pub view: FsView,
    /// The Landlock rules over the same view.
    pub landlock: LandlockPlan,
    /// The command and its arguments.
    pub argv: Vec<OsString>,
    /// The command's whole environment (name, value), sorted.
    pub env: Vec<(String, String)>,
    /// The sandbox's host name (its own UTS namespace).
    pub hostname: String,
    /// Size of the private `/dev/shm`, in bytes.
    pub shm_size: u64,
    /// The gateway's listeners, when the network mode is `allowlist`.
    pub network: Option<NetPlan>,
    /// Record every exec (seccomp user notification, as an observer).
    pub trace_exec: bool,
    /// The run's resource limits.
    pub limits: Limits,
    /// Ports of the sandbox's loopback published to the host's (`--publish`): init then
    /// makes sockets in the sandbox's network namespace on the supervisor's request.
    pub publish: Vec<palisade_policy::model::Publish>,
    /// A warm session: init starts no command of its own (`argv` is empty) but serves the
    /// supervisor's requests (see `sys/child/serve.rs`).
    pub session: bool,
}

impl Plan {
    /// Whether the host's `path` (canonical) is writable from inside the sandbox.
    pub fn exposes_writable(&self, path: &Path) -> bool {
        self.view.exposes_writable(path)
    }

    /// What the degraded mode cannot give (empty with namespaces).
    pub fn missing(&self) -> &[String] {
        match &self.mode {
            Mode::Namespaces => &[],
            Mode::Degraded { missing } => missing,
        }
    }
}

/// The sandbox's host name (its own UTS namespace), which its `/etc/hosts` resolves to
/// `127.0.1.1`.
pub const HOSTNAME: &str = "palisade";
/// The host's `/etc/hosts` is copied with that line added when it is smaller than this
/// (64 KiB); a larger one is shown as it is.
const HOSTS_MAX: usize = 64 << 10;

/// Size of the private `/dev/shm` (256 MiB).
pub const DEFAULT_SHM_SIZE: u64 = 256 << 20;

/// Builds the plan for running `req` under `policy`, in `mode`'s strength: with namespaces
/// ([`palisade_sandbox::Strength::Full`]) or degraded.
///
/// # Errors
/// [`PlanError`]: an empty command, a grant inside a denied directory, a glob too broad.
pub fn build(
    policy: &ResolvedPolicy,
    host: &dyn HostView,
    req: Request,
    strength: palisade_sandbox::Strength,
) -> Result<Plan, PlanError> {
    match strength {
        palisade_sandbox::Strength::Full => build_namespaces(policy, host, req),
        palisade_sandbox::Strength::Degraded => degraded::build(policy, host, req),
    }
}

fn build_namespaces(policy: &ResolvedPolicy, host: &dyn HostView, req: Request) -> Result<Plan, PlanError> {
    let mut view = view::build(policy, host, &req)?;
    let landlock = landlock_plan(&view.entries);
    let network = (policy.mode() == palisade_policy::NetMode::Allowlist).then(|| {
        let (ports, loopback_ports) = view::gateway_ports(policy, MAX_TRANSPARENT_PORTS);
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
    if network.is_some() && host.kind(resolv) == Some(Kind::File) && matches!(view.seen(resolv), Seen::Host(_)) {
        view.entries
            .push(Entry::File { path: resolv.into(), contents: "nameserver 127.0.0.53\noptions edns0\n".into() });
    }
    // With the network off, a name lookup fails at once as "no such name" (EAI_NONAME), not
    // as a temporary failure (EAI_AGAIN) that npm, pip and others retry for a minute: the
    // name service looks only in /etc/hosts, and resolvers that read resolv.conf themselves
    // (c-ares, Go's) find a loopback server that refuses at once.
    if network.is_none() {
        let nss = Path::new("/etc/nsswitch.conf");
        if host.kind(nss) == Some(Kind::File)
            && matches!(view.seen(nss), Seen::Host(_))
            && let Some(text) = host.read(nss, HOSTS_MAX).filter(|t| t.len() < HOSTS_MAX)
        {
            let contents = files_only_hosts(&String::from_utf8_lossy(&text));
            view.entries.push(Entry::File { path: nss.into(), contents });
        }
        if host.kind(resolv) == Some(Kind::File) && matches!(view.seen(resolv), Seen::Host(_)) {
            view.entries.push(Entry::File {
                path: resolv.into(),
                contents: "# palisade: the network is off; no name server answers here\nnameserver 127.0.0.1\n".into(),
            });
        }
    }
    // The sandbox's own host name resolves to its loopback without asking DNS (git, Java
    // and `hostname -f` look it up; unanswered, the lookups are refused one by one, or time
    // out with the network off): the host's /etc/hosts with one line added.
    let hosts = Path::new("/etc/hosts");
    if host.kind(hosts) == Some(Kind::File)
        && matches!(view.seen(hosts), Seen::Host(_))
        && let Some(text) = host.read(hosts, HOSTS_MAX).filter(|t| t.len() < HOSTS_MAX)
    {
        let mut contents = String::from_utf8_lossy(&text).into_owned();
        if !contents.is_empty() && !contents.ends_with('\n') {
            contents.push('\n');
        }
        // A host whose own file names no localhost (Arch leaves it to nss-myhostname,
        // which the network-off nsswitch.conf does not ask) still resolves it.
        if !contents.split_whitespace().any(|w| w == "localhost") {
            contents.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        }
        contents.push_str(&format!("127.0.1.1\t{HOSTNAME}\n"));
        view.entries.push(Entry::File { path: hosts.into(), contents });
    }
    let session = req.session;
    let env = command_env(network.is_some(), req.env);
    Ok(Plan {
        session,
        mode: Mode::Namespaces,
        view,
        landlock,
        argv: req.argv,
        env,
        hostname: HOSTNAME.into(),
        shm_size: DEFAULT_SHM_SIZE,
        network,
        trace_exec: req.trace_exec,
        publish: policy.publish.iter().map(|p| p.value).collect(),
        limits: Limits::of(policy),
    })
}

/// `nsswitch.conf` with its `hosts:` line replaced by `hosts: files` (added when missing).
fn files_only_hosts(text: &str) -> String {
    let mut out = String::new();
    let mut seen = false;
    for line in text.lines() {
        if line.trim_start().starts_with("hosts:") {
            // glibc reads a comment after the services as more services: never on the line.
            out.push_str("# palisade: the network is off, names are looked up in /etc/hosts only\nhosts: files\n");
            seen = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !seen {
        out.push_str("# palisade: the network is off, names are looked up in /etc/hosts only\nhosts: files\n");
    }
    out
}

/// A command's environment as the plan gives it: `env` (the policy's) with, when the
/// sandbox has a network, the proxy variables naming the gateway; sorted. Warm sessions'
/// commands get theirs through this too.
pub fn command_env(network: bool, mut env: Vec<(String, String)>) -> Vec<(String, String)> {
    if network {
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
    }
    env.sort();
    env
}

fn set_env(env: &mut Vec<(String, String)>, k: &str, v: &str) {
    env.retain(|(n, _)| n != k);
    env.push((k.to_owned(), v.to_owned()));
}

mod degraded;
mod landlock;

use landlock::landlock_plan;

#[cfg(test)]
mod tests {
    use palisade_policy::{LayerKind, Lexical, ResolveOptions, Vars, parse_layer, resolve};

    use palisade_sandbox::Strength;

    use palisade_policy::hostfs::MemFs;

    use super::*;

    fn mem(entries: &[(&str, Kind)]) -> MemFs {
        entries.iter().fold(MemFs::new(), |m, (p, k)| m.with(p, *k))
    }

    fn policy(text: &str) -> ResolvedPolicy {
        let vars = Vars::with_defaults(Path::new("/home/u"), Path::new("/w/proj"));
        let l = parse_layer(text, "t.toml", LayerKind::User, &vars, &Lexical).unwrap();
        resolve(Path::new("/w/proj"), Path::new("/home/u"), vec![l], ResolveOptions::default()).unwrap()
    }

    fn plan(text: &str, host: &MemFs) -> Result<Plan, PlanError> {
        let req = Request {
            argv: vec!["true".into()],
            cwd: "/w/proj".into(),
            env: vec![],
            tmp: "/tmp".into(),
            trace_exec: false,
            copies: None,
            session: false,
        };
        build(&policy(text), host, req, Strength::Full)
    }

    const BASE: &str =
        "[filesystem]\nread = [\"/usr\", \"/etc\", \"~/.cargo\"]\nwrite = [\"${workspace}\", \"${tmp}\"]\n";

    fn host() -> MemFs {
        mem(&[
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
    fn landlock_rules_mirror_the_view() {
        let p = plan(BASE, &host()).unwrap();
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
        let p =
            plan("[filesystem]\nread = [\"/opt\"]\nwrite = [\"/opt/cache\"]\n", &mem(&[("/opt/cache/x", Kind::File)]))
                .unwrap();
        assert_eq!(p.landlock.write.iter().filter(|w| w.starts_with("/opt")).count(), 1);
        assert!(p.landlock.read.contains(&"/opt".into()));
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
            copies: None,
            session: false,
        };
        let p = build(&policy(&text), &host(), req, Strength::Degraded).unwrap();
        assert!(p.landlock.deny_tcp);
        assert!(p.landlock.read.contains(&"/usr".into()) && p.landlock.write.contains(&"/w/proj".into()));
        assert!(!p.landlock.devices.iter().any(|d| d == Path::new("/dev")), "never the whole of /dev");
        assert!(p.landlock.proc.is_empty() && p.landlock.read.contains(&"/proc".into()), "the host's /proc read-only");
        assert!(p.missing().iter().any(|m| m.contains("/etc/shadow") && m.contains("not hidden")), "{:?}", p.missing());
        assert!(
            p.missing().iter().any(|m| m.contains(".git/hooks") && m.contains("stay writable")),
            "{:?}",
            p.missing()
        );
        assert!(!p.missing().iter().any(|m| m.contains(".ssh")), "~/.ssh is outside every grant: still unreadable");
        assert_eq!(p.view.cwd, Path::new("/w/proj/src"));
        // The view is the grants on the host: what the session checks before it writes there.
        assert!(p.exposes_writable(Path::new("/w/proj/src/x")) && !p.exposes_writable(Path::new("/usr/x")));
    }

    #[test]
    fn with_the_network_off_names_are_looked_up_in_files_only() {
        let h = MemFs::new()
            .file("/etc/nsswitch.conf", "passwd: files\nhosts:          files dns\n")
            .file("/etc/resolv.conf", "nameserver 10.0.0.1\n")
            .with("/usr/bin/sh", Kind::File);
        let p = plan(BASE, &h).unwrap();
        let file = |path: &str| {
            p.view.entries.iter().find_map(|e| match e {
                Entry::File { path: p, contents } if p == Path::new(path) => Some(contents.clone()),
                _ => None,
            })
        };
        assert_eq!(
            file("/etc/nsswitch.conf").unwrap(),
            "passwd: files\n# palisade: the network is off, names are looked up in /etc/hosts only\nhosts: files\n"
        );
        assert!(file("/etc/resolv.conf").unwrap().contains("nameserver 127.0.0.1"));
        // With a network, names go to the gateway's stub.
        let p = plan(&format!("{BASE}[network]\nmode = \"allowlist\"\nallow = [\"a.com\"]\n"), &h).unwrap();
        assert!(!p.view.entries.iter().any(|e| e.path() == Path::new("/etc/nsswitch.conf")));
    }

    #[test]
    fn the_sandboxs_host_name_resolves_without_dns() {
        let h = MemFs::new().file("/etc/hosts", "127.0.0.1 localhost").with("/usr/bin/sh", Kind::File);
        let p = plan(BASE, &h).unwrap();
        let hosts = p.view.entries.iter().find(|e| e.path() == Path::new("/etc/hosts")).expect("/etc/hosts");
        assert_eq!(
            *hosts,
            Entry::File { path: "/etc/hosts".into(), contents: "127.0.0.1 localhost\n127.0.1.1\tpalisade\n".into() }
        );
        assert_eq!(p.hostname, HOSTNAME);
        // Not shown from the host (not granted): nothing to copy.
        let p = plan("[filesystem]\nread = [\"/usr\"]\n", &h).unwrap();
        assert!(!p.view.entries.iter().any(|e| e.path() == Path::new("/etc/hosts")));
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
}
