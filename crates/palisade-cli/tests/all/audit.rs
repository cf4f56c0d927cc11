//! The audit log from outside: what a run records, and `palisade audit verify` catching
//! every kind of tampering.

use crate::util::*;

fn run_with_audit(s: &Sandbox, log: &std::path::Path) {
    let p = s.path("p.toml");
    std::fs::write(&p, "[network]\nmode = \"allowlist\"\nallow = [\"allowed.test:9\"]\n").unwrap();
    let o = audited(
        s,
        log,
        &p,
        &[
            "/bin/sh",
            "-c",
            "getent hosts allowed.test; getent hosts denied.test; curl -s --max-time 3 http://denied.test:9/ >/dev/null; exit 3",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn a_run_records_its_session_and_every_network_decision() {
    let s = Sandbox::new("e-audit");
    let log = s.path("audit/session.jsonl");
    run_with_audit(&s, &log);
    let o = s.palisade(&["audit", "verify", log.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let raw = std::fs::read_to_string(&log).unwrap();
    for kind in ["session_start", "dns", "request", "session_end"] {
        assert!(raw.contains(&format!("\"kind\":\"{kind}\"")), "no {kind} event: {raw}");
    }
    let out = stdout(&s.palisade(&["audit", "show", log.to_str().unwrap()]));
    assert!(out.contains("exit status 3") && out.contains("denied.test:9") && out.contains("allowed.test"), "{out}");
    assert!(out.contains("limits:    held by ") && out.contains("denials:   Landlock denials "), "{out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn verify_catches_a_changed_byte_a_removed_record_and_a_cut_tail() {
    let s = Sandbox::new("e-audit-tamper");
    let log = s.path("audit/session.jsonl");
    run_with_audit(&s, &log);
    let original = std::fs::read_to_string(&log).unwrap();
    let verify = |text: &str| {
        std::fs::write(&log, text).unwrap();
        s.palisade(&["audit", "verify", log.to_str().unwrap()]).status.code()
    };
    assert_eq!(verify(&original), Some(0));
    assert_eq!(verify(&original.replacen("\"allowed\":false", "\"allowed\":true", 1)), Some(1), "a changed decision");
    let lines: Vec<&str> = original.lines().collect();
    let without =
        |i: usize| lines.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, l)| format!("{l}\n")).collect::<String>();
    assert_eq!(verify(&without(1)), Some(1), "a removed record");
    assert_eq!(verify(&without(lines.len() - 1)), Some(1), "a cut tail");
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    assert_eq!(verify(&(swapped.join("\n") + "\n")), Some(1), "reordered records");
}

#[test]
fn the_audit_log_is_never_writable_inside_the_sandbox() {
    let s = Sandbox::new("e-audit-inside");
    let o = s.palisade(&["run", "--audit", s.path("ws/log.jsonl").to_str().unwrap(), "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("writable inside the sandbox"), "{}", stderr(&o));
    // By default the log goes under the state directory, which the sandbox cannot see.
    let o = s.sh("ls ~/.local/state/palisade 2>&1; true");
    assert!(stdout(&o).contains("No such file"), "{}", stdout(&o));
    let sessions = s.home().join(".local/state/palisade/sessions");
    assert!(
        std::fs::read_dir(&sessions).map(|d| d.count()).unwrap_or(0) >= 1,
        "no default audit log in {}",
        sessions.display()
    );
}

#[test]
fn a_denied_connection_burst_raises_the_default_alert() {
    let s = Sandbox::new("e-rule-alert");
    let log = s.path("audit/a.jsonl");
    let o = s.palisade(&[
        "run",
        "--audit",
        log.to_str().unwrap(),
        "--allow-net",
        "allowed.test:443",
        "--",
        "/bin/sh",
        "-c",
        "for i in $(seq 25); do curl -s --max-time 2 http://denied$i.test/ >/dev/null; done; echo finished",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("finished"));
    assert!(stderr(&o).contains("ALERT") && stderr(&o).contains("denied-connection-burst"), "{}", stderr(&o));
    let raw = std::fs::read_to_string(&log).unwrap();
    assert_eq!(raw.matches("\"kind\":\"monitor_action\"").count(), 1, "an alert per window, not per connection");
}

#[test]
fn a_kill_rule_stops_the_sandbox_at_once_and_says_why() {
    let s = Sandbox::new("e-rule-kill");
    let log = s.path("audit/k.jsonl");
    let p = s.path("k.toml");
    std::fs::write(
        &p,
        "[network]\nmode = \"allowlist\"\nallow = [\"allowed.test:443\"]\n[[monitor.rules]]\nname = \"burst-kill\"\nwhen = \"denied_connections > 3 in 60s\"\naction = \"kill\"\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let o = audited(
        &s,
        &log,
        &p,
        &[
            "/bin/sh",
            "-c",
            "for i in 1 2 3 4 5 6; do curl -s --max-time 2 http://denied$i.test/ >/dev/null; done; sleep 20; echo survived",
        ],
    );
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert!(!stdout(&o).contains("survived"));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "the kill was not immediate");
    let show = stdout(&s.palisade(&["audit", "show", log.to_str().unwrap()]));
    assert!(show.contains("ACTION:    kill by rule \"burst-kill\"") && show.contains("killed by signal 9"), "{show}");
    assert_eq!(s.palisade(&["audit", "verify", log.to_str().unwrap()]).status.code(), Some(0));
}

#[test]
fn every_exec_is_recorded_even_renamed_or_from_memory() {
    let s = Sandbox::new("e-exec");
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("skipped: no /usr/bin/python3");
        return;
    }
    let log = s.path("audit/e.jsonl");
    let loader = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a dynamic loader");
    let script = "/bin/true; cp /bin/true ./renamed-tool; ./renamed-tool --flag; LOADER /bin/true via-loader; \
                  /usr/bin/python3 -c 'import os; fd = os.memfd_create(\"m\"); os.write(fd, open(\"/bin/true\", \"rb\").read()); os.execve(fd, [\"from-memory\"], {})'";
    let script = script.replace("LOADER", loader);
    let o = s.palisade(&["run", "--audit", log.to_str().unwrap(), "--", "/bin/sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let execs: Vec<serde_json::Value> = events_in(&log).into_iter().filter(|e| e["kind"] == "exec").collect();
    let argvs: Vec<String> = execs
        .iter()
        .map(|e| e["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect::<Vec<_>>().join(" "))
        .collect();
    for want in [
        "/bin/sh -c",
        "/bin/true",
        "cp /bin/true ./renamed-tool",
        "./renamed-tool --flag",
        &format!("{loader} /bin/true via-loader"),
        "/usr/bin/python3 -c",
        "from-memory",
    ] {
        assert!(argvs.iter().any(|a| a.starts_with(want)), "no exec of {want:?} in {argvs:#?}");
    }
    let memfd = execs.iter().find(|e| e["argv"][0] == "from-memory").unwrap();
    assert!(memfd["path"].as_str().unwrap().starts_with("fd "), "{memfd}");
    // Process ids inside the sandbox: sh is pid 2 (init is 1), and the parent of each of its
    // commands.
    let sh = execs.iter().find(|e| e["argv"][0] == "/bin/sh").unwrap();
    assert_eq!((sh["pid"].as_u64(), sh["ppid"].as_u64()), (Some(2), Some(1)), "{sh}");
    let renamed = execs.iter().find(|e| e["argv"][0] == "./renamed-tool").unwrap();
    assert_eq!(renamed["ppid"], sh["pid"], "{renamed}");
    assert_eq!(renamed["cwd"].as_str(), s.ws().to_str(), "{renamed}");
    assert_eq!(s.palisade(&["audit", "verify", log.to_str().unwrap()]).status.code(), Some(0));
    // Many arguments (pointers read 32 at a time) and strings longer than a page (kept to
    // 4 KiB each) come through whole, in order.
    let log3 = s.path("audit/args.jsonl");
    let long = "x".repeat(5000);
    let mut cmd: Vec<String> = vec!["/bin/echo".into()];
    cmd.extend((0..70).map(|i| format!("arg-{i}")));
    cmd.push(long.clone());
    let mut args = vec!["run", "--audit", log3.to_str().unwrap(), "--"];
    args.extend(cmd.iter().map(String::as_str));
    assert_eq!(s.palisade(&args).status.code(), Some(0));
    let e = events_in(&log3).into_iter().find(|e| e["kind"] == "exec").unwrap();
    let got: Vec<&str> = e["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(got.len(), 72);
    assert_eq!(got[..71], cmd[..71].iter().map(String::as_str).collect::<Vec<_>>()[..]);
    assert_eq!(got[71], &long[..4096]);
    assert_eq!(s.palisade(&["audit", "verify", log.to_str().unwrap()]).status.code(), Some(0));
    // Turned off, nothing is recorded.
    let log2 = s.path("audit/off.jsonl");
    let o = s.palisade(&["run", "--no-exec-trace", "--audit", log2.to_str().unwrap(), "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(!std::fs::read_to_string(&log2).unwrap().contains("\"kind\":\"exec\""));
}

#[test]
fn events_stream_live_copies_of_the_log_and_watch_escapes_names() {
    let s = Sandbox::new("e-live");
    let log = s.path("audit/live.jsonl");
    // The command writes nothing to stdout, so stdout is exactly the event stream.
    let o = s.palisade(&[
        "run",
        "--events",
        "-",
        "--watch",
        "--audit",
        log.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "/bin/true \"$(printf 'evil\\033[2J\\nname')\"; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let raw = std::fs::read_to_string(&log).unwrap();
    assert_eq!(stdout(&o), raw, "--events - must carry every record of the log, unchanged");
    assert!(raw.lines().count() >= 4);
    let err = stderr(&o);
    assert!(err.contains("palisade: start  namespaces"), "{err}");
    assert!(err.contains("palisade: exec   [") && err.contains("/bin/true evil\\u{1b}[2J\\nname"), "{err}");
    assert!(!err.contains('\u{1b}'), "an escape sequence from the sandbox reached the terminal: {err:?}");
    assert!(err.contains("palisade: end    exit 3"), "{err}");
    // Bad descriptors are refused before anything runs.
    for (spec, want) in [("987", "descriptor 987 is not open"), ("x", "expected a file descriptor number")] {
        let o = s.palisade(&["run", "--events", spec, "--", "/bin/true"]);
        assert_eq!(o.status.code(), Some(125));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    }
}

#[test]
fn a_flood_of_parallel_execs_is_recorded_in_full() {
    let s = Sandbox::new("e-flood");
    let log = s.path("audit/flood.jsonl");
    // 300 background processes at once, bounded, each exec'ing /bin/true with its number.
    let script = "i=0; while [ $i -lt 300 ]; do /bin/true flood-$i & i=$((i+1)); done; wait";
    let o = s.palisade(&["run", "--audit", log.to_str().unwrap(), "--", "/bin/sh", "-c", script]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let events = events_in(&log);
    let mut seen: Vec<u32> = events
        .iter()
        .filter(|e| e["kind"] == "exec" && e["argv"][0] == "/bin/true")
        .filter_map(|e| e["argv"][1].as_str()?.strip_prefix("flood-")?.parse().ok())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..300).collect::<Vec<u32>>(), "an exec escaped the record");
    let execs = events.iter().filter(|e| e["kind"] == "exec").count() as u64;
    let end = events.last().unwrap();
    assert_eq!(end["kind"], "session_end");
    assert_eq!(end["totals"]["execs"].as_u64(), Some(execs), "{end}");
    assert_eq!(s.palisade(&["audit", "verify", log.to_str().unwrap()]).status.code(), Some(0));
}

/// Held by the tests that depend on whether the kernel's audit subsystem is on.
static AUDIT_STATE: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn rules_that_cannot_fire_yet_are_said_at_every_run() {
    let _audit = AUDIT_STATE.lock().unwrap_or_else(|e| e.into_inner());
    let s = Sandbox::new("e-unfired");
    if !stdout(&s.palisade(&["check"]))
        .contains("denials:         Landlock's, from the kernel's audit log: not recorded")
    {
        eprintln!("skipped: Landlock's denials can be read here, so the rule can fire");
        return;
    }
    let p = s.path("unfired.toml");
    std::fs::write(&p, "[[monitor.rules]]\nwhen = \"denied_files > 5 in 10s\"\naction = \"kill\"\n").unwrap();
    let o = s.palisade(&["run", "--policy", p.to_str().unwrap(), "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("warning: rule `denied_files > 5 in 10s`")
            && err.contains("unfired.toml:2:")
            && err.contains("audit log, which cannot be read here"),
        "{err}"
    );
}

/// An HTTP server on the host's loopback that reads a request (head and body, however long)
/// and answers with `reply` bytes; returns its port and the body bytes it received.
fn counting_upstream(reply: usize) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten().take(4) {
            let mut c = conn;
            c.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
            let mut buf = vec![0u8; 65536];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body_start = head.windows(4).position(|w| w == b"\r\n\r\n").map_or(head.len(), |i| i + 4);
            g.fetch_add((head.len() - body_start) as u64, Ordering::SeqCst);
            let expect: u64 = String::from_utf8_lossy(&head)
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            let mut body = (head.len() - body_start) as u64;
            while body < expect {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        body += n as u64;
                        g.fetch_add(n as u64, Ordering::SeqCst);
                    }
                }
            }
            let _ = c.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {reply}\r\nConnection: close\r\n\r\n").as_bytes(),
            );
            let _ = c.write_all(&vec![b'x'; reply]);
        }
    });
    (port, got)
}

#[test]
fn connections_record_their_bytes_and_an_upload_budget_rule_kills_the_run() {
    let s = Sandbox::new("e-bytes");
    let (port, got) = counting_upstream(300_000);
    let p = s.path("bytes.toml");
    std::fs::write(
        &p,
        format!(
            "[network]\nmode = \"allowlist\"\nallow = [\"up.test:{port}\"]\nhosts = {{ \"up.test\" = \"127.0.0.1\" }}\n\
             [[monitor.rules]]\nname = \"exfil-budget\"\nwhen = \"upload_bytes > 256KiB\"\naction = \"kill\"\n"
        ),
    )
    .unwrap();
    // First a download and a small upload, within the budget: recorded with their bytes.
    let log = s.path("audit/bytes-ok.jsonl");
    let o = audited(
        &s,
        &log,
        &p,
        &["/bin/sh", "-c", &format!("curl -sS --max-time 10 --data-binary 'hello' http://up.test:{port}/ | wc -c")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "300000");
    let events = events_in(&log);
    let end = events.iter().find(|e| e["kind"] == "connection_end").unwrap_or_else(|| panic!("{events:?}"));
    let opened = events.iter().find(|e| e["kind"] == "connection" && e["allowed"] == true).unwrap();
    assert_eq!(end["id"], opened["id"]);
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 300000\r\nConnection: close\r\n\r\n".len() as u64;
    assert_eq!(end["bytes_down"].as_u64(), Some(300_000 + head), "{end}");
    assert!(end["bytes_up"].as_u64().unwrap() > 5, "{end}");
    let totals = &events.last().unwrap()["totals"];
    assert_eq!(totals["bytes_down"], end["bytes_down"]);
    // Then an upload that streams past the budget: killed while the bytes still flow, and
    // the upstream never receives the whole 64 MiB.
    let log = s.path("audit/bytes-kill.jsonl");
    let script = format!(
        "import socket,time\n\
         s=socket.create_connection(('127.0.0.1',3128))\n\
         s.sendall(b'POST http://up.test:{port}/ HTTP/1.1\\r\\nHost: up.test:{port}\\r\\nContent-Length: 67108864\\r\\n\\r\\n')\n\
         for i in range(1024):\n    s.sendall(b'y'*65536); time.sleep(0.01)\n"
    );
    let started = std::time::Instant::now();
    let o = audited(&s, &log, &p, &["python3", "-c", &script]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(9),
        "the upload ran its course: {:?}",
        started.elapsed()
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let received = got.load(std::sync::atomic::Ordering::SeqCst);
    assert!(received < 16 << 20, "{received} bytes reached the upstream");
    let events = events_in(&log);
    let traffic = events.iter().find(|e| e["kind"] == "traffic").unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(traffic["direction"], "upload");
    assert!(traffic["total"].as_u64().unwrap() > 256 * 1024);
    let action = events.iter().find(|e| e["kind"] == "monitor_action").unwrap();
    assert_eq!((action["rule"].as_str(), action["action"].as_str()), (Some("exfil-budget"), Some("kill")), "{action}");
    assert!(stderr(&o).contains("exfil-budget"), "{}", stderr(&o));
}

/// A million denied DNS queries (pipelined over one TCP connection, so none is lost):
/// every one reaches the rules and the totals, identical ones are folded into `repeated`
/// records, and the supervisor's memory stays flat.
#[test]
fn a_million_denied_queries_keep_the_supervisor_small() {
    let s = Sandbox::new("e-flood-dns");
    let log = s.path("audit/dns-flood.jsonl");
    let p = s.path("flood.toml");
    std::fs::write(&p, "[network]\nmode = \"allowlist\"\nallow = [\"allowed.test:443\"]\n").unwrap();
    // 1,000 names, each queried 1,000 times; one thread writes, one reads the answers.
    let script = r#"
import socket, struct, threading
N = 1_000_000
def q(i):
    name = b"".join(bytes([len(l)]) + l for l in [b"n%d" % (i % 1000), b"flood", b"test"]) + b"\0"
    m = struct.pack(">HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1)
    return struct.pack(">H", len(m)) + m
s = socket.create_connection(("127.0.0.53", 53))
got = [0]
def reader():
    f = s.makefile("rb", buffering=1 << 20)
    while got[0] < N:
        h = f.read(2)
        if len(h) < 2: break
        f.read(struct.unpack(">H", h)[0]); got[0] += 1
t = threading.Thread(target=reader); t.start()
batch = b"".join(q(i) for i in range(1000))
for _ in range(N // 1000):
    s.sendall(batch)
t.join()
print(got[0])
"#;
    let args =
        ["run", "--audit", log.to_str().unwrap(), "--policy", p.to_str().unwrap(), "--", "python3", "-c", script];
    let mut child = s
        .command(&s.ws(), &args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Sample the supervisor's resident memory as the flood goes on.
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the flood did not finish in 4 minutes");
        if let Ok(text) = std::fs::read_to_string(&status) {
            let hwm =
                text.lines().find_map(|l| l.strip_prefix("VmHWM:")).map(|v| v.trim().trim_end_matches(" kB").trim());
            peak = peak.max(hwm.and_then(|v| v.parse().ok()).unwrap_or(0));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "1000000", "not every query was answered");
    assert!(peak > 0 && peak < 48 * 1024, "the supervisor peaked at {peak} kB");
    let events = events_in(&log);
    let totals = &events.last().unwrap()["totals"];
    assert_eq!(totals["dns_denied"].as_u64(), Some(1_000_000), "{totals}");
    assert!(events.len() < 200_000, "{} records: the flood was not folded", events.len());
    let folded: u64 = events.iter().filter(|e| e["kind"] == "repeated").map(|e| e["count"].as_u64().unwrap()).sum();
    let single = events.iter().filter(|e| e["kind"] == "dns").count() as u64;
    assert_eq!(folded + single, 1_000_000);
    // The default rule saw the burst (denied DNS is not a denied connection: no alert).
    assert_eq!(s.palisade(&["audit", "verify", log.to_str().unwrap()]).status.code(), Some(0));
}

/// `palisade run --audit LOG --policy POLICY -- CMD`.
fn audited(s: &Sandbox, log: &std::path::Path, policy: &std::path::Path, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["run", "--audit", log.to_str().unwrap(), "--policy", policy.to_str().unwrap(), "--"];
    args.extend_from_slice(cmd);
    s.palisade(&args)
}

/// The `event` of every record of the audit log at `log`.
fn events_in(log: &std::path::Path) -> Vec<serde_json::Value> {
    let raw = std::fs::read_to_string(log).unwrap();
    raw.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone()).collect()
}

#[test]
fn the_command_cannot_install_its_own_exec_listener() {
    let s = Sandbox::new("e-listener");
    // The tracer holds the chain's one listener; a second one is refused (EBUSY)...
    assert_eq!(s.probe(&[], &["seccomp_listener"]), "EBUSY");
    // ...which is the tracer's doing, not a blanket refusal: untraced, the call is allowed.
    assert_eq!(s.probe(&["--no-exec-trace"], &["seccomp_listener"]), "ok");
}

/// Turns the kernel's audit subsystem on for as long as it lives (root only), and back off
/// if it was off: Landlock reports denials only while audit is on.
struct AuditOn {
    was_on: bool,
}

impl AuditOn {
    /// One request, one answer: `AUDIT_GET`'s reply, or for `AUDIT_SET` the kernel's
    /// acknowledgement (asked for with `NLM_F_ACK`, or the call would wait forever).
    fn netlink(msg_type: u16, payload: &[u8]) -> Option<Vec<u8>> {
        // SAFETY: a netlink socket, one request, one answer; all buffers are local.
        unsafe {
            let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 9);
            if fd < 0 {
                return None;
            }
            let mut req = Vec::new();
            req.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
            req.extend_from_slice(&msg_type.to_ne_bytes());
            let flags: u16 = if msg_type == 1001 { 1 | 4 } else { 1 }; // NLM_F_REQUEST, NLM_F_ACK
            req.extend_from_slice(&flags.to_ne_bytes());
            req.extend_from_slice(&[0u8; 8]);
            req.extend_from_slice(payload);
            let ok = libc::send(fd, req.as_ptr().cast(), req.len(), 0) == req.len() as isize;
            let mut buf = vec![0u8; 1024];
            let n = if ok { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) } else { -1 };
            libc::close(fd);
            (n > 0).then(|| buf[..n as usize].to_vec())
        }
    }

    fn enabled() -> Option<bool> {
        let a = Self::netlink(1000, &[])?; // AUDIT_GET
        (u16::from_ne_bytes([a[4], a[5]]) == 1000).then(|| a[20..24] != [0, 0, 0, 0])
    }

    fn set(on: bool) {
        // struct audit_status with mask = AUDIT_STATUS_ENABLED.
        let mut st = vec![0u8; 44];
        st[0..4].copy_from_slice(&1u32.to_ne_bytes());
        st[4..8].copy_from_slice(&u32::from(on).to_ne_bytes());
        Self::netlink(1001, &st); // AUDIT_SET
    }

    fn new() -> Option<AuditOn> {
        let was_on = Self::enabled()?;
        if !was_on {
            Self::set(true);
        }
        (Self::enabled() == Some(true)).then_some(AuditOn { was_on })
    }
}

impl Drop for AuditOn {
    fn drop(&mut self) {
        if !self.was_on {
            Self::set(false);
        }
    }
}

#[test]
fn landlock_denials_are_recorded_from_the_kernels_audit_log() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: reading the audit log needs root");
        return;
    }
    let _lock = AUDIT_STATE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_audit) = AuditOn::new() else {
        eprintln!("skipped: the audit subsystem cannot be turned on here");
        return;
    };
    let s = Sandbox::new("e-denials");
    std::fs::create_dir_all(s.path("ws/inner")).unwrap();
    s.write("ws/outer.txt", "outside the inner grants");
    let log = s.path("audit/denials.jsonl");
    let p = s.path("denials.toml");
    std::fs::write(
        &p,
        "[[monitor.rules]]\nname = \"file-probe\"\nwhen = \"denied_files > 0 in 60s\"\naction = \"alert\"\n",
    )
    .unwrap();
    // A signal to init (outside the command's Landlock domain), and a nested, degraded
    // Palisade whose Landlock domain refuses a read: both refused by Landlock, which reports
    // them to the audit log; the outer supervisor records them.
    let script = format!(
        "kill -0 1 2>/dev/null || echo signal-refused; cd inner && TMPDIR={ws}/inner {pal} run --allow-degraded --allow-read {bin} -- cat ../outer.txt 2>/dev/null || echo read-refused",
        ws = s.ws().display(),
        pal = env!("CARGO_BIN_EXE_palisade"),
        bin = bin_dir(),
    );
    let bin = bin_dir();
    let o = s.palisade(&[
        "run",
        "--audit",
        log.to_str().unwrap(),
        "--policy",
        p.to_str().unwrap(),
        "--allow-read",
        &bin,
        "--",
        "/bin/sh",
        "-c",
        &script,
    ]);
    let out = stdout(&o);
    assert!(out.contains("signal-refused") && out.contains("read-refused"), "{out}{}", stderr(&o));
    let events = events_in(&log);
    assert_eq!(events[0]["denials"], "recorded", "{}", events[0]);
    let denials: Vec<&serde_json::Value> = events.iter().filter(|e| e["kind"] == "denial").collect();
    assert!(denials.iter().any(|d| d["blockers"][0] == "scope.signal"), "no signal denial in {denials:?}");
    let read = denials
        .iter()
        .find(|d| d["blockers"][0] == "fs.read_file")
        .unwrap_or_else(|| panic!("no file denial in {denials:?}"));
    assert!(read["object"].as_str().unwrap().contains("outer.txt"), "{read}");
    assert!(stderr(&o).contains("ALERT") && stderr(&o).contains("file-probe"), "{}", stderr(&o));
    let totals = &events.last().unwrap()["totals"];
    assert!(totals["files_denied"].as_u64().unwrap() >= 1, "{totals}");
}

#[test]
fn the_latest_session_of_a_workspace_is_found_listed_and_old_ones_pruned() {
    let s = Sandbox::new("audit-latest");
    let sessions = s.home().join(".local/state/palisade/sessions");
    // Before any run: a clear answer, not a crash.
    let o = s.palisade(&["audit", "show"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("no session log of the workspace"), "{}", stderr(&o));
    // Old logs of other runs, by their names: one 40 days old, one recent.
    std::fs::create_dir_all(&sessions).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // (Pids above the kernel's limit: runs that have ended.)
    std::fs::write(sessions.join(format!("session-{}-4194305.jsonl", now - 40 * 86_400)), "").unwrap();
    std::fs::write(sessions.join(format!("session-{}-4194306.jsonl", now - 60)), "").unwrap();
    assert_eq!(s.palisade(&["run", "--", "true"]).status.code(), Some(0));
    assert_eq!(s.palisade(&["run", "--", "sh", "-c", "exit 3"]).status.code(), Some(3));
    let o = s.palisade(&["audit", "show"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("sh -c exit 3"), "{}", stdout(&o));
    assert_eq!(s.palisade(&["audit", "verify"]).status.code(), Some(0));
    let out = stdout(&s.palisade(&["audit", "list"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains("exit 0") && lines[0].contains(" true "), "{out}");
    assert!(lines[1].contains("exit 3") && lines[1].contains("sh -c 'exit 3'"), "{out}");
    // Another workspace's runs are not this one's.
    std::fs::create_dir_all(s.root.join("other")).unwrap();
    let o = s.palisade_in(&s.root.join("other"), &["audit", "show"]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(stdout(&s.palisade_in(&s.root.join("other"), &["audit", "list", "--all"])).lines().count(), 2);
    // The 40-day-old log went with the first run (30 days by default); the recent one stays.
    let logs = || -> Vec<String> {
        std::fs::read_dir(&sessions)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("session-"))
            .collect()
    };
    let names = logs();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&format!("session-{}-4194306.jsonl", now - 60)), "{names:?}");
    // `[monitor] keep` bounds the count, pruned at most once a minute: not by a run right
    // after the last prune, but by the first run a minute later.
    s.write("home/.config/palisade/policy.toml", "[monitor]\nkeep = 2\n");
    assert_eq!(s.palisade(&["run", "--", "true"]).status.code(), Some(0));
    assert_eq!(logs().len(), 4, "pruned again within a minute");
    let stamp = std::fs::File::options().write(true).open(sessions.join(".pruned")).unwrap();
    stamp.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(61)).unwrap();
    assert_eq!(s.palisade(&["run", "--", "true"]).status.code(), Some(0));
    assert_eq!(logs().len(), 2);
}
