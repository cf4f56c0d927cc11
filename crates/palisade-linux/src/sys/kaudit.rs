//! Landlock's own reports of what it refused, read from the kernel's audit subsystem.
//!
//! Landlock (ABI 7) writes an `AUDIT_LANDLOCK_ACCESS` record for each denial of a domain
//! that logs (the command's domain sets `LOG_NEW_EXEC_ON`, so denials after `exec` are
//! logged), and with the first one an `AUDIT_LANDLOCK_DOMAIN` record naming the process
//! that created the domain. The supervisor listens on the audit multicast group, keeps the
//! domains created by the sandbox's command (or by processes of its pid namespace), and
//! reports their denials. This needs `CAP_AUDIT_READ` (root) and audit turned on; when
//! either is missing, [`open`] says which, and no denial is recorded.
//!
//! Record parsing is pure and unit-tested: values that audit hex-encodes (paths and names
//! with spaces, quotes or control characters) are decoded, then carried as data.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_AUDIT: libc::c_int = 9;
const AUDIT_GET: u16 = 1000;
const AUDIT_NLGRP_READLOG: u32 = 1;
const AUDIT_LANDLOCK_ACCESS: u16 = 1423;
const AUDIT_LANDLOCK_DOMAIN: u16 = 1424;

/// One denial Landlock reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// What was missing, e.g. `fs.read_file`, `scope.signal`.
    pub blockers: Vec<String>,
    /// The object, as the denied process saw it: `path=…`, or `opid=… ocomm=…`, decoded.
    pub object: String,
}

/// What the supervisor calls for each denial (from the reader's thread).
pub type OnDenial = std::sync::Arc<dyn Fn(Denial) + Send + Sync>;

/// A subscription from [`open`] and what to call for each of the sandbox's denials: opened
/// by the caller, who also says in the session's record whether denials are read, so that
/// the record and the run never disagree.
pub struct Reader {
    /// The netlink audit socket [`open`] returned, subscribed to the read-log group.
    pub fd: OwnedFd,
    /// Called with each denial of the sandbox's domains.
    pub on_denial: OnDenial,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("fd", &self.fd).finish()
    }
}

/// A record: its serial number and fields, with hex-encoded values decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The event's serial number, shared by the records of one event.
    pub serial: u64,
    /// The `key=value` pairs in the order written; values unquoted, and decoded where audit
    /// hex-encoded them.
    pub fields: Vec<(String, String)>,
}

impl Record {
    /// The value of the first field named `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Fields audit writes with `audit_log_untrustedstring`: quoted, or hex when unsafe.
const UNTRUSTED: &[&str] = &["path", "exe", "comm", "ocomm", "name"];

fn unhex(v: &str) -> Option<String> {
    if v.is_empty() || !v.len().is_multiple_of(2) || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..v.len()).step_by(2).map(|i| u8::from_str_radix(&v[i..i + 2], 16).ok()).collect();
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Parses `audit(SECONDS.MILLIS:SERIAL): key=value key="value" ...`.
pub fn parse(text: &str) -> Option<Record> {
    let rest = text.strip_prefix("audit(")?;
    let (stamp, rest) = rest.split_once("):")?;
    let serial = stamp.rsplit_once(':')?.1.parse().ok()?;
    let mut fields = Vec::new();
    let mut s = rest.trim_start();
    while !s.is_empty() {
        let Some((key, after)) = s.split_once('=') else { break };
        let key = key.trim().to_owned();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_owned(), &q[end + 1..]),
                None => (q.to_owned(), ""),
            }
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            let raw = &after[..end];
            let v = if UNTRUSTED.contains(&key.as_str()) {
                unhex(raw).unwrap_or_else(|| raw.to_owned())
            } else {
                raw.to_owned()
            };
            (v, &after[end..])
        };
        fields.push((key, value));
        s = next.trim_start();
    }
    Some(Record { serial, fields })
}

/// Follows Landlock's records: which domains belong to the sandbox, and their denials.
/// Access records that arrive before their domain is known (the first denial of a domain
/// precedes its `allocated` record) wait, at most [`PENDING`] of them.
#[derive(Debug, Default)]
pub struct Tracker {
    ours: HashSet<String>,
    theirs: HashSet<String>,
    pending: HashMap<String, Vec<Denial>>,
    held: usize,
}

/// The most access records a [`Tracker`] holds for domains not yet known; past it, all the
/// held records are dropped.
pub const PENDING: usize = 1024;

impl Tracker {
    /// Feeds one record; `is_ours(pid)` says whether a domain creator belongs to the sandbox.
    /// Returns the sandbox's denials it completes.
    pub fn feed(&mut self, kind: u16, r: &Record, is_ours: &dyn Fn(u32) -> bool) -> Vec<Denial> {
        let Some(domain) = r.get("domain").map(str::to_owned) else { return Vec::new() };
        match kind {
            AUDIT_LANDLOCK_DOMAIN if r.get("status") == Some("allocated") => {
                let pid = r.get("pid").and_then(|p| p.parse().ok()).unwrap_or(0);
                let waiting = self.pending.remove(&domain).unwrap_or_default();
                self.held -= waiting.len();
                if is_ours(pid) {
                    self.ours.insert(domain);
                    waiting
                } else {
                    self.theirs.insert(domain);
                    Vec::new()
                }
            }
            AUDIT_LANDLOCK_DOMAIN => {
                // Deallocated: the id is never reused.
                self.ours.remove(&domain);
                self.theirs.remove(&domain);
                Vec::new()
            }
            AUDIT_LANDLOCK_ACCESS => {
                let d = Denial {
                    blockers: r
                        .get("blockers")
                        .unwrap_or("")
                        .split(',')
                        .filter(|b| !b.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    object: r
                        .fields
                        .iter()
                        .filter(|(k, _)| k != "domain" && k != "blockers")
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                };
                if self.ours.contains(&domain) {
                    vec![d]
                } else if self.theirs.contains(&domain) {
                    Vec::new()
                } else {
                    if self.held >= PENDING {
                        self.pending.clear();
                        self.held = 0;
                    }
                    self.held += 1;
                    self.pending.entry(domain).or_default().push(d);
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }
}

fn netlink() -> io::Result<OwnedFd> {
    // SAFETY: socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_AUDIT) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: &OwnedFd, groups: u32) -> io::Result<()> {
    // SAFETY: a zeroed sockaddr_nl with family and groups set, of its own size.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    sa.nl_groups = groups;
    // SAFETY: binding our own socket to that address, passed with its own size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Whether audit is on (`AUDIT_GET`).
fn audit_enabled() -> io::Result<bool> {
    let fd = netlink()?;
    bind(&fd, 0)?;
    let mut req = [0u8; 16];
    req[0..4].copy_from_slice(&16u32.to_ne_bytes());
    req[4..6].copy_from_slice(&AUDIT_GET.to_ne_bytes());
    req[6..8].copy_from_slice(&1u16.to_ne_bytes()); // NLM_F_REQUEST
    super::ffi::write_all(fd.as_raw_fd(), &req)?;
    let mut buf = [0u8; 512];
    let n = super::ffi::read_some(fd.as_raw_fd(), &mut buf)?;
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if n < 24 || kind != AUDIT_GET {
        return Err(io::Error::other("no answer to AUDIT_GET"));
    }
    // struct audit_status { mask, enabled, ... }
    Ok(u32::from_ne_bytes([buf[20], buf[21], buf[22], buf[23]]) != 0)
}

/// Subscribes to the audit log (a `NETLINK_AUDIT` socket bound to the multicast group
/// `AUDIT_NLGRP_READLOG`), or says why Landlock's denials cannot be read here: no
/// `CAP_AUDIT_READ`, audit off (`auditctl -e 1`), or the socket itself failing.
pub fn open() -> Result<OwnedFd, String> {
    let fd = netlink().map_err(|e| format!("no audit socket: {e}"))?;
    match bind(&fd, 1 << (AUDIT_NLGRP_READLOG - 1)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            return Err("reading the kernel audit log needs CAP_AUDIT_READ (root)".into());
        }
        Err(e) => return Err(format!("cannot subscribe to the audit log: {e}")),
    }
    match audit_enabled() {
        Ok(true) => Ok(fd),
        Ok(false) => Err("the kernel audit subsystem is off (auditctl -e 1 turns it on)".into()),
        Err(e) => Err(format!("cannot ask whether audit is on: {e}")),
    }
}

/// How many queued messages [`serve`] still reads once stopped.
const DRAIN_AFTER_STOP: usize = 256;

/// Reads records until `done`, reporting the denials of the sandbox's domains. Once `done`
/// is set, what is already queued is still read (a denial just before the end), at most
/// 256 messages: on a busy host the queue never runs dry.
pub fn serve(fd: OwnedFd, is_ours: impl Fn(u32) -> bool, on_denial: OnDenial, done: &super::watch::Stop) {
    let mut tracker = Tracker::default();
    let mut buf = vec![0u8; 64 * 1024];
    // Once stopped, what is already queued is read (denials of the run's last moments), but
    // no more than this many messages: every audit record of the host reaches this socket,
    // and on a busy host the queue never runs dry.
    let mut after_stop = 0;
    loop {
        let (stopped, readable) = done.wait_or(Some(fd.as_raw_fd()), std::time::Duration::from_secs(1));
        if stopped {
            after_stop += 1;
        }
        if !readable || after_stop > DRAIN_AFTER_STOP {
            if stopped {
                return;
            }
            continue;
        }
        // SAFETY: a non-blocking read into `buf`.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or([0; 4])) as usize;
            let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if len < 16 || off + len > n {
                break;
            }
            if kind == AUDIT_LANDLOCK_ACCESS || kind == AUDIT_LANDLOCK_DOMAIN {
                let text = String::from_utf8_lossy(&buf[off + 16..off + len]);
                if let Some(r) = parse(text.trim_end_matches('\0')) {
                    for d in tracker.feed(kind, &r, &is_ours) {
                        on_denial(d);
                    }
                }
            }
            off += (len + 3) & !3;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_ends_when_stopped_even_while_records_keep_coming() {
        // A busy host: the audit group never runs dry. The reader must still end (the run
        // waits for it).
        let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let stop = std::sync::Arc::new(super::super::watch::Stop::new().unwrap());
        let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let f = flooding.clone();
        let writer = std::thread::spawn(move || {
            theirs.set_nonblocking(true).unwrap();
            let mut record = vec![0u8; 64];
            record[..4].copy_from_slice(&64u32.to_ne_bytes());
            while f.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = theirs.send(&record);
            }
        });
        let s = stop.clone();
        let reader = std::thread::spawn(move || {
            serve(OwnedFd::from(ours), |_| true, std::sync::Arc::new(|_| {}), &s);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        stop.set();
        let t = std::time::Instant::now();
        while !reader.is_finished() && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let finished = reader.is_finished();
        flooding.store(false, std::sync::atomic::Ordering::SeqCst);
        writer.join().unwrap();
        assert!(finished, "the denial reader did not end while records kept coming");
        reader.join().unwrap();
    }

    #[test]
    fn records_parse_with_quoted_and_hex_values() {
        let r = parse("audit(1795741218.616:64): domain=15b203b95 blockers=fs.read_file path=\"/tmp/ws/outer.txt\" dev=\"vda\" ino=10298874").unwrap();
        assert_eq!(r.serial, 64);
        assert_eq!(r.get("path"), Some("/tmp/ws/outer.txt"));
        assert_eq!(r.get("ino"), Some("10298874"));
        // A path with a space and a newline is hex-encoded by audit.
        let r = parse("audit(1.2:3): domain=1 blockers=fs.read_file path=2F746D702F6120620A63 dev=\"vda\"").unwrap();
        assert_eq!(r.get("path"), Some("/tmp/a b\nc"));
        assert!(parse("garbage").is_none());
    }

    #[test]
    fn only_the_sandboxs_domains_are_reported_including_the_first_denial() {
        let mut t = Tracker::default();
        let ours = |pid: u32| pid == 2880;
        let access = |d: &str, path: &str| {
            parse(&format!("audit(1.0:9): domain={d} blockers=fs.read_file path=\"{path}\" dev=\"vda\" ino=1")).unwrap()
        };
        let alloc = |d: &str, pid: u32| {
            parse(&format!(
                "audit(1.0:9): domain={d} status=allocated mode=enforcing pid={pid} uid=0 exe=\"/x\" comm=\"x\""
            ))
            .unwrap()
        };
        assert!(t.feed(AUDIT_LANDLOCK_ACCESS, &access("aa", "/secret"), &ours).is_empty());
        let first = t.feed(AUDIT_LANDLOCK_DOMAIN, &alloc("aa", 2880), &ours);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].blockers, ["fs.read_file"]);
        assert!(first[0].object.starts_with("path=/secret "), "{}", first[0].object);
        assert_eq!(t.feed(AUDIT_LANDLOCK_ACCESS, &access("aa", "/again"), &ours).len(), 1);
        // Another program's domain on the same machine.
        assert!(t.feed(AUDIT_LANDLOCK_ACCESS, &access("bb", "/theirs"), &ours).is_empty());
        assert!(t.feed(AUDIT_LANDLOCK_DOMAIN, &alloc("bb", 77), &ours).is_empty());
        assert!(t.feed(AUDIT_LANDLOCK_ACCESS, &access("bb", "/theirs"), &ours).is_empty());
        // Unknown domains never grow the pending list past its bound.
        for i in 0..5000 {
            t.feed(AUDIT_LANDLOCK_ACCESS, &access(&format!("u{i}"), "/x"), &ours);
        }
        assert!(t.held <= PENDING);
    }
}
