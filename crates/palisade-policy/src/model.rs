//! The policy model: rules as plain data, each carrying the layer and place it came from.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::error::Site;
use crate::host::{HostName, NetPattern};
use crate::monitor::{Action, Condition};
use crate::pathrule::PathPattern;

/// The layers, lowest precedence first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "kebab-case")]
pub enum LayerKind {
    /// The embedded default policy (`palisade policy default`).
    Builtin,
    /// `$XDG_CONFIG_HOME/palisade/policy.toml`.
    User,
    /// A profile chosen with `--profile NAME`.
    Profile(String),
    /// `<workspace>/.palisade.toml`: untrusted, may only narrow.
    Project,
    /// A file passed with `--policy FILE`: trusted.
    PolicyFile,
    /// Command-line flags.
    Flags,
}

impl LayerKind {
    /// Whether the layer may widen access. Only the project file may not (unless trusted).
    pub fn is_trusted(&self) -> bool {
        !matches!(self, LayerKind::Project)
    }
}

impl fmt::Display for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerKind::Builtin => f.write_str("built-in default"),
            LayerKind::User => f.write_str("user policy"),
            LayerKind::Profile(n) => write!(f, "profile `{n}`"),
            LayerKind::Project => f.write_str("project policy"),
            LayerKind::PolicyFile => f.write_str("--policy file"),
            LayerKind::Flags => f.write_str("command line"),
        }
    }
}

/// Where a rule came from: its layer, the file position and key, and the text as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// The layer the rule belongs to.
    pub layer: LayerKind,
    /// Where in that layer: file, line, column and key (`filesystem.deny`), or the flag.
    pub site: Site,
    /// The entry as the user wrote it, before variables were expanded.
    pub text: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.site.line == 0 {
            write!(f, "{} {}", self.layer, self.site.key)
        } else {
            write!(f, "{}, {}", self.layer, self.site)
        }
    }
}

/// A value set by one layer, with its origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting<T> {
    /// The value, parsed: bytes, a [`Duration`], a path, a mode.
    pub value: T,
    /// Where it was set, and the text as written (`"4GiB"`).
    pub origin: Origin,
}

/// A published port (`network.publish`): connections to `127.0.0.1:HOST_PORT` on the host
/// are carried to `port` on the sandbox's own loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Publish {
    /// The host's loopback port the supervisor listens on.
    pub host_port: u16,
    /// The sandbox's loopback port connections are carried to.
    pub port: u16,
}

/// What a path rule does. At equal specificity, the later variant here wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// Visible and readable.
    Read,
    /// Readable and writable.
    Write,
    /// Read-only even where a broader rule grants write; never grants anything itself.
    Protect,
    /// Absent from the sandbox's view.
    Deny,
}

impl PathKind {
    /// The kind's name as a `[filesystem]` key: `read`, `write`, `protect` or `deny`.
    pub fn key(self) -> &'static str {
        match self {
            PathKind::Read => "read",
            PathKind::Write => "write",
            PathKind::Protect => "protect",
            PathKind::Deny => "deny",
        }
    }
}

/// One path rule: a `[filesystem]` entry (`deny = ["~/.ssh"]`) or a path flag
/// (`--allow-write DIR`), canonicalised; or a rule derived on this host ([`crate::derive`]).
#[derive(Debug, Clone, Serialize)]
pub struct PathRule {
    /// What the rule does to the paths it covers.
    pub kind: PathKind,
    /// The canonical pattern that decisions use.
    pub pattern: PathPattern,
    /// For a grant (or an `own_copy` file) whose written path went through a symlink: that
    /// path, lexically normalised. Backends recreate it as a link so that the written path still works
    /// inside the sandbox (`/lib64` → `/usr/lib64`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_link: Option<PathBuf>,
    /// For a `protect` rule on a file that tools rewrite in place as part of ordinary work
    /// (git's configuration: `git submodule update` rewrites a submodule's every time): the
    /// host's file stays read-only, and the sandbox gets a private copy to write, whose
    /// changes end with the run. Set only by derivation ([`crate::derive`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub private_copy: bool,
    /// What stands in for the path on the host while a sandbox runs, when it does not exist
    /// and must stay uncreatable. Set only by derivation.
    #[serde(skip_serializing_if = "Placeholder::is_absent")]
    pub placeholder: Placeholder,
    /// For a `write` rule from `filesystem.state`: a directory that `palisade run` makes on
    /// the host (mode 0700) when it is missing, so that what is kept there persists (a grant
    /// of a missing path shows nothing, and writes there would land in a private directory
    /// and end with the run).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub state: bool,
    /// For a `protect` rule from `filesystem.own_copy` (an agent's own configuration): the
    /// host's file stays as it is, and the sandbox reads and writes a copy of its own, which
    /// Palisade keeps for the workspace across runs (seeded from the host's file, again
    /// whenever that changes; never written back).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub own_copy: bool,
    /// For a `read` rule from `filesystem.cache` (a toolchain's download cache: the cargo
    /// registry, npm's cache): the host's directory stays read-only, and the sandbox writes
    /// into a private layer over it, which Palisade keeps for the workspace across runs
    /// (Linux: an overlay mount); nothing is ever written back.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cache: bool,
    /// Where the rule came from. A derived rule carries the entry or setting that asked for
    /// it (`filesystem.protect_git`), with the reason as its text.
    pub origin: Origin,
}

/// What a backend puts on the host for a protected path that does not exist, so that a mount
/// can hold the name while a sandbox runs (see `docs/linux.md`). Inside, the path reads as
/// absent either way, except [`Placeholder::SameDir`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placeholder {
    /// Something no tool reads as a file: an empty socket, which git and most tools skip.
    #[default]
    Absent,
    /// A file that git reads as empty configuration (one comment), for a path git reads as
    /// configuration when it exists (an include target, `config.worktree`): a file git
    /// cannot read there would stop every git command on the host.
    EmptyConfig,
    /// A git `commondir` saying `.`: the git directory is its own common directory, as when
    /// the file is absent (git tests it with `lstat` before reading it).
    SameDir,
}

impl Placeholder {
    /// Whether this is [`Placeholder::Absent`], the default (left out when serialised).
    pub fn is_absent(&self) -> bool {
        *self == Placeholder::Absent
    }
}

/// A `deny` or `protect` entry written `${writable}/REL`: the path REL under every writable
/// root. Expanded into ordinary [`PathRule`]s once the roots are known ([`crate::derive`]).
#[derive(Debug, Clone, Serialize)]
pub struct RootRule {
    /// `deny` or `protect`: the only kinds in which `${writable}` may be used.
    pub kind: PathKind,
    /// Relative, normalised, non-empty, without `..`.
    pub rel: PathBuf,
    /// Where the entry was written, and the entry as written (`${writable}/.vscode`).
    pub origin: Origin,
}

/// One `network.allow` or `network.deny` entry, or an `--allow-net` or `--deny-net` flag.
#[derive(Debug, Clone, Serialize)]
pub struct NetRule {
    /// What it matches: `github.com:443`, `*.example.com`, `10.0.0.0/8`, `[::1]:8080`.
    pub pattern: NetPattern,
    /// Where it was written, and the entry as written.
    pub origin: Origin,
}

/// A static name → address mapping used by the gateway (an `/etc/hosts` for the sandbox).
#[derive(Debug, Clone, Serialize)]
pub struct HostMapping {
    /// The name mapped, normalised: `git.internal` in
    /// `[network] hosts = { "git.internal" = "10.20.0.7" }`.
    pub name: HostName,
    /// The address the gateway connects to for the name (IPv4-mapped IPv6 taken as IPv4).
    pub addr: IpAddr,
    /// Where the mapping was written; its text is `NAME = ADDR`.
    pub origin: Origin,
}

/// An environment variable name or pattern (`LC_*`, `*TOKEN*`).
#[derive(Debug, Clone, Serialize)]
pub struct EnvRule {
    /// The name or pattern as written; `*` stands for any run of characters
    /// ([`crate::decide::env_match`]).
    pub pattern: String,
    /// Where it was written: `process.env.pass`, `process.env.deny` or `--env NAME`.
    pub origin: Origin,
}

/// A variable set to a fixed value inside the sandbox: a `process.env.set` entry
/// (`set = { RUST_LOG = "info" }`) or `--env NAME=VALUE`. It beats `pass`.
#[derive(Debug, Clone, Serialize)]
pub struct EnvSet {
    /// The variable's name: a plain name, no `*`.
    pub name: String,
    /// The value, as written (never a NUL byte).
    pub value: String,
    /// Where it was set; its text is `NAME=VALUE`.
    pub origin: Origin,
}

/// The network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Loopback only.
    None,
    /// Through the egress gateway, to allowlisted targets only.
    Allowlist,
}

impl fmt::Display for NetMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetMode::None => "none",
            NetMode::Allowlist => "allowlist",
        })
    }
}

/// How Windows confines a run (`windows.tier`); ignored elsewhere. See `docs/windows.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowsTier {
    /// An AppContainer per workspace (the default): reads, writes and the network confined.
    AppContainer,
    /// A write-restricted token, for programs that cannot start in an AppContainer
    /// (Store-packaged ones): only writes are confined; every run says what it lacks.
    RestrictedToken,
}

impl fmt::Display for WindowsTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WindowsTier::AppContainer => "app_container",
            WindowsTier::RestrictedToken => "restricted_token",
        })
    }
}

/// Resource limits; `None` means no limit from the policy.
///
/// `unlimited`, which lifts a lower layer's limit, is stored as `u64::MAX` or
/// [`Duration::MAX`]. See `docs/policy.md` for how backends enforce each.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Limits {
    /// `process.memory`: memory of the whole sandbox, in bytes (`"8GiB"`).
    pub memory: Option<Setting<u64>>,
    /// `process.pids`: processes and threads at once (`4096`).
    pub pids: Option<Setting<u64>>,
    /// `process.cpu_time`: CPU time of all the sandbox's processes together (`"30m"`).
    pub cpu_time: Option<Setting<Duration>>,
    /// `process.wall_time`: wall-clock time of the run (`"2h"`).
    pub wall_time: Option<Setting<Duration>>,
    /// `process.file_size`: the largest file a process may write, in bytes (`RLIMIT_FSIZE`).
    pub file_size: Option<Setting<u64>>,
    /// `process.open_files`: open descriptors per process (`RLIMIT_NOFILE`).
    pub open_files: Option<Setting<u64>>,
    /// `process.tmp_size`: size of the sandbox's private `/tmp` tmpfs, in bytes.
    pub tmp_size: Option<Setting<u64>>,
}

/// The gateway's budgets (`[network]` keys); absent ones take the defaults below. A project
/// layer may only lower them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetBudgets {
    /// Client connections served at once; more wait for a slot.
    pub max_connections: Option<Setting<u64>>,
    /// Time for a request head, SOCKS messages or a TLS ClientHello to arrive.
    pub handshake_timeout: Option<Setting<Duration>>,
    /// A connection with no traffic either way for this long is closed.
    pub idle_timeout: Option<Setting<Duration>>,
    /// Bytes out of the sandbox over the whole session; past it, connections close.
    pub max_upload: Option<Setting<u64>>,
    /// Bytes into the sandbox over the whole session.
    pub max_download: Option<Setting<u64>>,
}

impl NetBudgets {
    /// Client connections served at once when no layer sets `max_connections`.
    pub const DEFAULT_MAX_CONNECTIONS: u64 = 1024;
    /// `handshake_timeout` when no layer sets it: 10 seconds.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// `idle_timeout` when no layer sets it: 10 minutes.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
    /// `max_upload` when no layer sets it: 4 GiB, in bytes.
    pub const DEFAULT_MAX_UPLOAD: u64 = 4 << 30;
    /// `max_download` when no layer sets it: 64 GiB, in bytes.
    pub const DEFAULT_MAX_DOWNLOAD: u64 = 64 << 30;

    /// The values in force: (max_connections, handshake, idle, max_upload, max_download).
    pub fn effective(&self) -> (u64, Duration, Duration, u64, u64) {
        (
            self.max_connections.as_ref().map_or(Self::DEFAULT_MAX_CONNECTIONS, |s| s.value),
            self.handshake_timeout.as_ref().map_or(Self::DEFAULT_HANDSHAKE_TIMEOUT, |s| s.value),
            self.idle_timeout.as_ref().map_or(Self::DEFAULT_IDLE_TIMEOUT, |s| s.value),
            self.max_upload.as_ref().map_or(Self::DEFAULT_MAX_UPLOAD, |s| s.value),
            self.max_download.as_ref().map_or(Self::DEFAULT_MAX_DOWNLOAD, |s| s.value),
        )
    }
}

/// One `[[monitor.rules]]` entry: when the condition holds, take the action.
#[derive(Debug, Clone, Serialize)]
pub struct MonitorRule {
    /// The optional `name` (`"denied-connection-burst"`), which the monitor reports when the
    /// rule fires.
    pub name: Option<String>,
    /// `when`, parsed: `denied_connections > 20 in 60s`.
    pub when: Condition,
    /// `action`: `log`, `alert` or `kill`.
    pub action: Action,
    /// Where the rule was written; its site and text are those of `when`.
    pub origin: Origin,
}

/// A set of rules: what one layer says, or (merged) what all layers say.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rules {
    /// Path rules (`[filesystem]` `read`, `write`, `deny`, `protect` and the path flags),
    /// lowest layer first; [`ResolvedPolicy::derive`](crate::ResolvedPolicy::derive) appends
    /// those derived on this host.
    pub paths: Vec<PathRule>,
    /// `${writable}/...` entries, not yet expanded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_root: Vec<RootRule>,
    /// `filesystem.protect_git`: keep the files through which git on the host would run code
    /// read-only under every writable root (see [`crate::git`]).
    pub protect_git: Option<Setting<bool>>,
    /// `windows.tier`: how Windows confines a run (the AppContainer when unset).
    pub windows_tier: Option<Setting<WindowsTier>>,
    /// `network.mode` (or `--net`); when no layer sets it, [`Rules::mode`] says `none`.
    pub net_mode: Option<Setting<NetMode>>,
    /// `network.allow` entries and `--allow-net` flags, lowest layer first.
    pub net_allow: Vec<NetRule>,
    /// `network.deny` entries and `--deny-net` flags; deny beats allow.
    pub net_deny: Vec<NetRule>,
    /// `network.quiet` patterns: destinations whose refusal is expected (an agent's
    /// telemetry and update checks). Still refused unless allowed, and recorded, but with
    /// `quiet`, so that no `denied_connections` or `denied_dns` rule counts them.
    pub net_quiet: Vec<NetRule>,
    /// `network.hosts` mappings, one per name (a higher layer's replaces a lower one's).
    pub hosts: Vec<HostMapping>,
    /// The gateway's budgets (`network.max_connections`, `network.idle_timeout`, ...).
    pub net_budgets: NetBudgets,
    /// `process.env.pass` names and patterns (`LC_*`), and `--env NAME` flags.
    pub env_pass: Vec<EnvRule>,
    /// `process.env.deny` patterns (`*TOKEN*`), matched without regard to case.
    pub env_deny: Vec<EnvRule>,
    /// `process.env.set` entries and `--env NAME=VALUE` flags, one per name.
    pub env_set: Vec<EnvSet>,
    /// `[process]` resource limits and their flags (`--memory 4GiB`, ...).
    pub limits: Limits,
    /// `monitor.audit`: the directory where each run writes its audit log
    /// (`session-SECONDS-PID.jsonl`; expanded, absolute); `None` for the default,
    /// `$XDG_STATE_HOME/palisade/sessions`.
    pub audit: Option<Setting<PathBuf>>,
    /// `monitor.retention`: session logs in that directory older than this are removed after
    /// a run (`Duration::MAX` for `unlimited`); `None` for the default, 30 days.
    pub retention: Option<Setting<std::time::Duration>>,
    /// `monitor.keep`: at most this many session logs stay in that directory, the newest;
    /// `None` for the default, 1,000.
    pub keep: Option<Setting<u64>>,
    /// `network.publish`: ports of the sandbox's loopback that the supervisor forwards from
    /// the host's loopback (`127.0.0.1:HOST_PORT`), for the user to reach a server started
    /// inside.
    pub publish: Vec<Setting<Publish>>,
    /// `filesystem.programs`: commands whose install location is made readable, found on
    /// `PATH` at load ([`crate::programs`]).
    pub programs: Vec<Setting<String>>,
    /// `monitor.tripwires`: decoy files (expanded, absolute; never a glob).
    pub tripwires: Vec<Setting<PathBuf>>,
    /// `[[monitor.rules]]`, lowest layer first.
    pub monitor_rules: Vec<MonitorRule>,
}

impl Rules {
    /// Adds a higher layer's rules: lists accumulate, single values are replaced, a host
    /// mapping replaces an earlier mapping of the same name.
    pub fn merge(&mut self, upper: Rules) {
        self.paths.extend(upper.paths);
        self.per_root.extend(upper.per_root);
        if upper.protect_git.is_some() {
            self.protect_git = upper.protect_git;
        }
        if upper.windows_tier.is_some() {
            self.windows_tier = upper.windows_tier;
        }
        if upper.net_mode.is_some() {
            self.net_mode = upper.net_mode;
        }
        self.net_allow.extend(upper.net_allow);
        self.net_deny.extend(upper.net_deny);
        self.net_quiet.extend(upper.net_quiet);
        for m in upper.hosts {
            self.hosts.retain(|h| h.name != m.name);
            self.hosts.push(m);
        }
        let nb = upper.net_budgets;
        macro_rules! over_net {
            ($($f:ident),*) => { $( if nb.$f.is_some() { self.net_budgets.$f = nb.$f; } )* };
        }
        over_net!(max_connections, handshake_timeout, idle_timeout, max_upload, max_download);
        self.env_pass.extend(upper.env_pass);
        self.env_deny.extend(upper.env_deny);
        for s in upper.env_set {
            self.env_set.retain(|e| e.name != s.name);
            self.env_set.push(s);
        }
        let l = upper.limits;
        macro_rules! over {
            ($($f:ident),*) => { $( if l.$f.is_some() { self.limits.$f = l.$f; } )* };
        }
        over!(memory, pids, cpu_time, wall_time, file_size, open_files, tmp_size);
        if upper.audit.is_some() {
            self.audit = upper.audit;
        }
        if upper.retention.is_some() {
            self.retention = upper.retention;
        }
        if upper.keep.is_some() {
            self.keep = upper.keep;
        }
        self.tripwires.extend(upper.tripwires);
        self.programs.extend(upper.programs);
        for p in upper.publish {
            self.publish.retain(|q| q.value.host_port != p.value.host_port);
            self.publish.push(p);
        }
        self.monitor_rules.extend(upper.monitor_rules);
    }

    /// Whether git's control files are protected (`false` when no layer says so; the
    /// built-in default says `true`).
    pub fn protects_git(&self) -> bool {
        self.protect_git.as_ref().is_some_and(|s| s.value)
    }

    /// The network mode in force (`none` when no layer set one).
    pub fn mode(&self) -> NetMode {
        self.net_mode.as_ref().map_or(NetMode::None, |s| s.value)
    }

    /// The Windows tier (`windows.tier`; the AppContainer when unset).
    pub fn windows_tier(&self) -> WindowsTier {
        self.windows_tier.as_ref().map_or(WindowsTier::AppContainer, |s| s.value)
    }
}

/// One layer of configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    /// Which layer this is, and so whether it may widen access.
    pub kind: LayerKind,
    /// Where the layer was read from (a path, `<built-in>`, `command line`).
    pub source: String,
    /// What the layer says, each value checked and carrying its origin.
    pub rules: Rules,
}
