//! The network part of the Windows plan, as data: what keeps a run's processes off the
//! network, or lets them reach Palisade's gateway and nothing else.
//!
//! ## Off (the default)
//!
//! The AppContainer token carries no network capability (`internetClient`,
//! `privateNetworkClientServer`, ...), and its package has no loopback exemption: Windows'
//! own AppContainer filters drop every connection and every inbound packet. Nothing is
//! installed, no administrator is needed.
//!
//! ## Allowlist: the gateway only
//!
//! The gateway runs in the supervisor (outside the container) on `127.0.0.1`, on ports chosen
//! per run. The container still has no network capability, so nothing beyond the machine is
//! reachable whatever the filters below say; to reach loopback at all it needs a loopback
//! exemption for its package SID (`NetworkIsolationSetAppContainerConfig`), which on its own
//! would open *every* loopback service of the machine (a database on `127.0.0.1:5432`, a
//! debugger port). So Windows Filtering Platform filters narrow it, all conditioned on the
//! run's package SID (`FWPM_CONDITION_ALE_PACKAGE_ID`), in Palisade's sublayer:
//!
//! - a hard permit (`FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT`) of TCP to `127.0.0.1` at each
//!   gateway port (`FWPM_LAYER_ALE_AUTH_CONNECT_V4`);
//! - a hard block of every other connection, IPv4 and IPv6 (`…_ALE_AUTH_CONNECT_V4/V6`: TCP,
//!   UDP's first datagram to a destination, other protocols);
//! - a hard block of every inbound connection and datagram (`…_ALE_AUTH_RECV_ACCEPT_V4/V6`),
//!   since an exempted package could otherwise be reached from the host's loopback.
//!
//! Filter arbitration (Microsoft Learn, "Filter Arbitration"): within a sublayer the highest
//! weight that matches decides, so the permits (weight 15) win over Palisade's blocks
//! (weight 1) for the gateway's exact address and port only; across sublayers a decision
//! whose action right is cleared cannot be overridden by a lower-priority sublayer, so no
//! other software's permit reopens what the blocks close. The permits open nothing but the
//! gateway, whatever they override.
//!
//! Adding WFP filters and changing the exemption list need an administrator. They are made by
//! Palisade's broker service (installed once by `palisade setup`), in a dynamic WFP session
//! per run: the filters go when the run's connection to the broker closes, even when the
//! supervisor crashes. The exemption is made only after the filters are in place, and removed
//! before they go. A run with the allowlist uses a package of its own (a profile named after
//! the run), so another run of the same workspace, network off, never holds the exemption,
//! and two runs never reach each other's gateway.
//!
//! Proxy variables are set as on Linux, for clients that honour them, except that `NO_PROXY`
//! is empty (loopback goes through the gateway too); clients that ignore them are blocked,
//! never redirected (an ordinary filter cannot rewrite a destination; that
//! needs a callout driver). DNS: the container resolves nothing itself; names go through the
//! gateway's proxy, which decides by name.
//!
//! The OS sandbox API tier (Windows 11's process security environment) would take the same
//! filters and a per-container WinHTTP proxy (so PowerShell 5 and .NET clients that read
//! WinHTTP's settings instead of `HTTP_PROXY` go through the gateway); that tier is refused
//! today, and [`build`] says so.

use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use crate::sid::Sid;

/// `IPPROTO_TCP`.
pub const TCP: u8 = 6;

/// The weight of a permit in Palisade's sublayer (above every block there).
pub const PERMIT_WEIGHT: u8 = 15;
/// The weight of a block in Palisade's sublayer.
pub const BLOCK_WEIGHT: u8 = 1;

/// How the run reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// No network capability, no exemption, nothing installed.
    Off,
    /// Only Palisade's gateway on loopback, through the broker's filters.
    Gateway,
}

/// The gateway's listeners in the supervisor, on `127.0.0.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GatewayPorts {
    /// The HTTP proxy (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`); 0 in a dry run (chosen at run).
    pub http: u16,
    /// SOCKS5; 0 in a dry run.
    pub socks: u16,
}

/// A WFP layer, by its `FWPM_LAYER_…` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Layer {
    /// `FWPM_LAYER_ALE_AUTH_CONNECT_V4`: an outgoing connection (or first datagram), IPv4.
    AleAuthConnectV4,
    /// `FWPM_LAYER_ALE_AUTH_CONNECT_V6`.
    AleAuthConnectV6,
    /// `FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4`: an incoming connection (or first datagram), IPv4.
    AleAuthRecvAcceptV4,
    /// `FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V6`.
    AleAuthRecvAcceptV6,
}

/// What a filter does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `FWP_ACTION_PERMIT`.
    Permit,
    /// `FWP_ACTION_BLOCK`.
    Block,
}

/// One condition of a filter (all must match; `FWP_MATCH_EQUAL`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// `FWPM_CONDITION_ALE_PACKAGE_ID`: the AppContainer package SID of the socket's process.
    PackageId(Sid),
    /// `FWPM_CONDITION_IP_PROTOCOL`.
    Protocol(u8),
    /// `FWPM_CONDITION_IP_REMOTE_ADDRESS`.
    RemoteAddress(IpAddr),
    /// `FWPM_CONDITION_IP_REMOTE_PORT`.
    RemotePort(u16),
}

/// One WFP filter, as the broker adds it (`FwpmFilterAdd0`) in Palisade's sublayer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Filter {
    /// Its display name.
    pub name: String,
    /// Where it applies.
    pub layer: Layer,
    /// What it does.
    pub action: Action,
    /// `FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT`: no other sublayer can override it.
    pub hard: bool,
    /// Its weight in the sublayer (`FWP_UINT8`).
    pub weight: u8,
    /// Its conditions.
    pub conditions: Vec<Condition>,
}

/// The network part of a run's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkPlan {
    /// Off or the gateway.
    pub mode: NetworkMode,
    /// The gateway's ports (gateway mode).
    pub gateway: Option<GatewayPorts>,
    /// Network capabilities in the token: always none (see the module).
    pub capabilities: Vec<String>,
    /// Whether the package gets a loopback exemption for the run (after the filters, before
    /// the start; removed after the end).
    pub loopback_exemption: bool,
    /// The filters, in the order the broker adds them (one transaction).
    pub filters: Vec<Filter>,
    /// Environment variables set for the run (proxy conveniences).
    pub env: Vec<(String, String)>,
    /// Whether the broker service is needed (`palisade setup`, once, as an administrator).
    pub needs_broker: bool,
    /// How the network differs from Linux's without losing a protection, in words.
    pub notes: Vec<String>,
}

/// The network plan for a run whose package SID is `package`: [`NetworkMode::Off`] when
/// `gateway` is `None`, else the gateway-only plan of the module's description.
pub fn build(package: &Sid, gateway: Option<GatewayPorts>) -> NetworkPlan {
    let Some(ports) = gateway else {
        return NetworkPlan {
            mode: NetworkMode::Off,
            gateway: None,
            capabilities: Vec::new(),
            loopback_exemption: false,
            filters: Vec::new(),
            env: Vec::new(),
            needs_broker: false,
            notes: Vec::new(),
        };
    };
    let pkg = || Condition::PackageId(package.clone());
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut filters = Vec::new();
    for (what, port) in [("HTTP proxy", ports.http), ("SOCKS5", ports.socks)] {
        filters.push(Filter {
            name: format!("palisade: the run's gateway ({what}, 127.0.0.1:{port})"),
            layer: Layer::AleAuthConnectV4,
            action: Action::Permit,
            hard: true,
            weight: PERMIT_WEIGHT,
            conditions: vec![
                pkg(),
                Condition::Protocol(TCP),
                Condition::RemoteAddress(loopback),
                Condition::RemotePort(port),
            ],
        });
    }
    for (layer, what) in [
        (Layer::AleAuthConnectV4, "every other outgoing connection, IPv4"),
        (Layer::AleAuthConnectV6, "every outgoing connection, IPv6"),
        (Layer::AleAuthRecvAcceptV4, "every incoming connection, IPv4"),
        (Layer::AleAuthRecvAcceptV6, "every incoming connection, IPv6"),
    ] {
        filters.push(Filter {
            name: format!("palisade: block {what}"),
            layer,
            action: Action::Block,
            hard: true,
            weight: BLOCK_WEIGHT,
            conditions: vec![pkg()],
        });
    }
    let http = format!("http://127.0.0.1:{}", ports.http);
    let mut env = Vec::new();
    // Windows' variable names are case-insensitive: one of each (`http_proxy` is the same).
    for k in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        env.push((k.to_owned(), http.clone()));
    }
    // Nothing bypasses the proxy: a direct connection, loopback included, is blocked, and a
    // host port the policy grants (`localhost:PORT`) is reached through the gateway.
    env.push(("NO_PROXY".into(), String::new()));
    NetworkPlan {
        mode: NetworkMode::Gateway,
        gateway: Some(ports),
        capabilities: Vec::new(),
        loopback_exemption: true,
        filters,
        env,
        needs_broker: true,
        notes: vec![
            "network: clients that ignore the proxy variables are blocked, not redirected (Linux's transparent listeners need a WFP callout driver on Windows)".into(),
            "network: loopback between the run's own processes is blocked (a test that starts a server and connects to it fails; Linux gives the run a loopback of its own)".into(),
        ],
    }
}

/// Sets `plan`'s environment variables in `env`, replacing any of the same name in any case
/// (Windows' names are case-insensitive), and sorts `env` by name as the launch plan keeps it.
pub fn set_env(env: &mut Vec<(String, String)>, plan: &NetworkPlan) {
    for (k, v) in &plan.env {
        env.retain(|(e, _)| !e.eq_ignore_ascii_case(k));
        env.push((k.clone(), v.clone()));
    }
    env.sort_by_key(|(k, _)| k.to_ascii_uppercase());
}
