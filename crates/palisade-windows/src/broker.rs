//! The broker's protocol and its decision, as pure code (tested on every OS).
//!
//! Adding Windows Filtering Platform filters and loopback exemptions needs an administrator;
//! a run must not prompt for elevation. Palisade's broker is a service installed once
//! (`palisade setup`, the one elevated step) that does exactly one thing for a caller: the
//! network plan of [`crate::plan::network`] for that caller's own run, in a dynamic WFP
//! session that lives as long as the caller's connection. Everything a caller can ask for is
//! decided here, from facts the service reads from Windows, never from what the caller says
//! about itself:
//!
//! - the caller is neither an AppContainer nor a restricted token (no sandboxed process can
//!   reconfigure a sandbox);
//! - the profile is a run profile (`palisade.ws.TAG.runPID`) whose PID is the caller's own
//!   process id (read from the pipe, `GetNamedPipeClientProcessId`): a process can only ask
//!   for its own run's filters, never another user's or another run's;
//! - that profile is registered for the caller's user (the service looks it up in the
//!   caller's hive);
//! - each gateway port is a TCP listener on `127.0.0.1` owned by the caller's process (the
//!   service reads the TCP table with owners): the permits can only lead to the caller's own
//!   gateway, never to a database or debugger port of the machine.
//!
//! The filters themselves are built by the service from those facts with
//! [`crate::plan::network::build`]; the caller never sends a filter. One request per
//! connection; the reply is one line; a request line is at most [`MAX_REQUEST`] bytes.
//!
//! Wire format: one JSON object per line, UTF-8, over the named pipe [`PIPE`] (byte mode;
//! a request must arrive within a few seconds). The pipe admits interactive users, SYSTEM and
//! administrators; a run over SSH or from a service is refused by Windows before the broker
//! sees it.

use serde::{Deserialize, Serialize};

use crate::plan::network::{self, GatewayPorts, NetworkPlan};
use crate::sid;

/// The broker's named pipe.
pub const PIPE: &str = r"\\.\pipe\palisade-broker";

/// The protocol's version; a request with another is refused with both named.
pub const VERSION: u32 = 1;

/// The longest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 4096;

/// What a run asks of the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Add the run's filters and loopback exemption, for as long as this connection lives.
    Open {
        /// [`VERSION`].
        version: u32,
        /// The run's AppContainer profile (`palisade.ws.TAG.runPID`).
        profile: String,
        /// The gateway's HTTP proxy port on `127.0.0.1`.
        http: u16,
        /// The gateway's SOCKS5 port on `127.0.0.1`.
        socks: u16,
    },
}

/// The broker's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// In place: this many filters, and the exemption.
    Opened {
        /// The number of filters added.
        filters: usize,
    },
    /// Nothing was changed, and why.
    Refused {
        /// The reason, in words (what was checked and what was found).
        reason: String,
    },
}

/// What the service read about the caller from Windows (never from the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The client's process id (`GetNamedPipeClientProcessId`).
    pub pid: u32,
    /// Its user's SID (`S-1-5-21-…`).
    pub user: String,
    /// Whether its token is an AppContainer token (`TokenIsAppContainer`).
    pub app_container: bool,
    /// Whether its token is restricted (`IsTokenRestricted`).
    pub restricted: bool,
}

/// The facts the decision reads from the machine, through the service.
pub trait Machine {
    /// The process that owns the TCP listener on `127.0.0.1:port`, if any
    /// (`GetExtendedTcpTable`, `TCP_TABLE_OWNER_PID_LISTENER`).
    fn listener_owner(&self, port: u16) -> Option<u32>;
    /// Whether the AppContainer profile with package SID `package` is registered for the
    /// user `user` (its mapping under the user's hive).
    fn profile_registered(&self, user: &str, package: &sid::Sid) -> bool;
}

/// Parses one request line.
///
/// # Errors
/// The line is longer than [`MAX_REQUEST`], not UTF-8, or not a request (unknown fields
/// included), in words.
pub fn parse(line: &[u8]) -> Result<Request, String> {
    if line.len() > MAX_REQUEST {
        return Err(format!("the request is {} bytes; at most {MAX_REQUEST} are read", line.len()));
    }
    let text = std::str::from_utf8(line).map_err(|e| format!("the request is not UTF-8: {e}"))?;
    serde_json::from_str(text.trim_end()).map_err(|e| format!("the request is not one the broker knows: {e}"))
}

/// Decides a request: the network plan the service then carries out, or why not (nothing is
/// changed then). See the module for each rule.
///
/// # Errors
/// The reason a rule refuses, naming what was checked and found.
pub fn decide(request: &Request, caller: &Caller, machine: &dyn Machine) -> Result<NetworkPlan, String> {
    let Request::Open { version, profile, http, socks } = request;
    if *version != VERSION {
        return Err(format!(
            "protocol version {version} asked, the broker speaks {VERSION}: run `palisade setup` with this palisade.exe"
        ));
    }
    if caller.app_container || caller.restricted {
        return Err(format!("process {} runs sandboxed (an AppContainer or restricted token)", caller.pid));
    }
    let Some(pid) = run_profile_pid(profile) else {
        return Err(format!("{profile:?} is not a Palisade run profile (palisade.ws.TAG.runPID)"));
    };
    if pid != caller.pid {
        return Err(format!("profile {profile} belongs to process {pid}, not to the caller, process {}", caller.pid));
    }
    let package = sid::app_container_sid(profile);
    if !machine.profile_registered(&caller.user, &package) {
        return Err(format!("profile {profile} ({}) is not registered for user {}", package.0, caller.user));
    }
    if http == socks || *http == 0 || *socks == 0 {
        return Err(format!("the gateway's ports must be two distinct ports, not {http} and {socks}"));
    }
    for port in [*http, *socks] {
        match machine.listener_owner(port) {
            Some(owner) if owner == caller.pid => {}
            Some(owner) => {
                return Err(format!("127.0.0.1:{port} is a listener of process {owner}, not of the caller"));
            }
            None => return Err(format!("nothing listens on 127.0.0.1:{port}")),
        }
    }
    Ok(network::build(&package, Some(GatewayPorts { http: *http, socks: *socks })))
}

/// The process id of a run profile's name, `palisade.ws.` then 32 lowercase hexadecimal
/// digits, `.run` and a decimal number without leading zeros.
pub fn run_profile_pid(profile: &str) -> Option<u32> {
    let rest = profile.strip_prefix("palisade.ws.")?;
    let (tag, pid) = rest.split_once(".run")?;
    let tag_ok = tag.len() == 32 && tag.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let pid_ok = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && !pid.starts_with('0');
    if tag_ok && pid_ok { pid.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "0123456789abcdef0123456789abcdef";

    struct Host {
        listeners: Vec<(u16, u32)>,
        registered: Vec<(String, sid::Sid)>,
    }

    impl Machine for Host {
        fn listener_owner(&self, port: u16) -> Option<u32> {
            self.listeners.iter().find(|(p, _)| *p == port).map(|(_, o)| *o)
        }
        fn profile_registered(&self, user: &str, package: &sid::Sid) -> bool {
            self.registered.iter().any(|(u, s)| u == user && s == package)
        }
    }

    fn caller() -> Caller {
        Caller { pid: 4242, user: "S-1-5-21-1-2-3-1001".into(), app_container: false, restricted: false }
    }

    fn profile(pid: u32) -> String {
        format!("palisade.ws.{TAG}.run{pid}")
    }

    /// The caller's own run, its own listeners, its profile registered for its user.
    fn host() -> Host {
        Host {
            listeners: vec![(50001, 4242), (50002, 4242), (5432, 900)],
            registered: vec![("S-1-5-21-1-2-3-1001".into(), sid::app_container_sid(&profile(4242)))],
        }
    }

    fn open(profile: String, http: u16, socks: u16) -> Request {
        Request::Open { version: VERSION, profile, http, socks }
    }

    #[test]
    fn a_run_asking_for_its_own_gateway_gets_the_plans_filters() {
        let plan = decide(&open(profile(4242), 50001, 50002), &caller(), &host()).unwrap();
        let expect =
            network::build(&sid::app_container_sid(&profile(4242)), Some(GatewayPorts { http: 50001, socks: 50002 }));
        assert_eq!(plan, expect);
        assert!(plan.loopback_exemption);
    }

    /// Each rule refuses on its own, with a reason that names what it found.
    #[test]
    fn every_rule_refuses_what_it_guards() {
        let h = host();
        let refused = |r: &Request, c: &Caller, want: &str| {
            let e = decide(r, c, &h).unwrap_err();
            assert!(e.contains(want), "{e}");
        };
        let ok = open(profile(4242), 50001, 50002);
        let other_version = Request::Open { version: 2, profile: profile(4242), http: 50001, socks: 50002 };
        refused(&other_version, &caller(), "version 2");
        refused(&ok, &Caller { app_container: true, ..caller() }, "sandboxed");
        refused(&ok, &Caller { restricted: true, ..caller() }, "sandboxed");
        // Another run's profile (another process), though registered and well formed.
        refused(&open(profile(4243), 50001, 50002), &caller(), "belongs to process 4243");
        // The same run's profile from another user: not registered for that user.
        refused(&ok, &Caller { user: "S-1-5-21-9-9-9-1002".into(), ..caller() }, "not registered");
        // A port of the machine's database, and one nobody listens on.
        refused(&open(profile(4242), 5432, 50002), &caller(), "process 900");
        refused(&open(profile(4242), 50001, 50003), &caller(), "nothing listens on 127.0.0.1:50003");
        refused(&open(profile(4242), 50001, 50001), &caller(), "two distinct ports");
        refused(&open(profile(4242), 0, 50002), &caller(), "two distinct ports");
    }

    #[test]
    fn only_run_profiles_of_the_exact_shape_are_taken() {
        assert_eq!(run_profile_pid(&profile(4242)), Some(4242));
        for bad in [
            format!("palisade.ws.{TAG}"),
            format!("palisade.ws.{TAG}.run"),
            format!("palisade.ws.{TAG}.run04242"),
            format!("palisade.ws.{TAG}.run4242x"),
            format!("palisade.ws.{TAG}.run-1"),
            format!("palisade.ws.{TAG}.run99999999999"),
            format!("palisade.ws.{}.run4242", TAG.to_uppercase()),
            format!("palisade.ws.{}.run4242", &TAG[1..]),
            format!("Microsoft.Edge.{TAG}.run4242"),
            format!("palisade.ws.{TAG}.run4242.run4242"),
        ] {
            assert_eq!(run_profile_pid(&bad), None, "{bad}");
        }
    }

    /// Requests are parsed strictly: unknown fields, other operations, oversized or non-UTF-8
    /// lines are refused; a reply line round-trips.
    #[test]
    fn the_wire_format_is_strict() {
        let line = br#"{"op":"open","version":1,"profile":"p","http":1,"socks":2}"#;
        assert_eq!(parse(line).unwrap(), open("p".into(), 1, 2));
        assert_eq!(
            parse(b"{\"op\":\"open\",\"version\":1,\"profile\":\"p\",\"http\":1,\"socks\":2}\r\n").unwrap(),
            open("p".into(), 1, 2)
        );
        for bad in [
            &br#"{"op":"open","version":1,"profile":"p","http":1,"socks":2,"filters":[]}"#[..],
            br#"{"op":"close","version":1}"#,
            br#"{"op":"open","version":1,"profile":"p","http":70000,"socks":2}"#,
            b"\xff\xfe",
            b"",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = vec![b' '; MAX_REQUEST + 1];
        assert!(parse(&long).unwrap_err().contains("at most"));
        for reply in [Reply::Opened { filters: 6 }, Reply::Refused { reason: "why".into() }] {
            let text = serde_json::to_string(&reply).unwrap();
            assert_eq!(serde_json::from_str::<Reply>(&text).unwrap(), reply);
        }
    }
}
