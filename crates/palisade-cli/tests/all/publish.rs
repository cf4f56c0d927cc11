//! `--publish`: a server started in the sandbox is reachable from the host's loopback only
//! when the user publishes its port, and every connection is recorded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::*;

/// A server inside on `port` (127.0.0.1 only) that answers one connection with `echo:` and
/// what it received, then exits.
fn echo_once(port: u16) -> String {
    format!(
        "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
         s.bind(('127.0.0.1', {port})); s.listen(); c, _ = s.accept(); c.sendall(b'echo:' + c.recv(100)); c.close()"
    )
}

/// Sends `hello` to `127.0.0.1:port` and returns the answer; retried (the server inside may
/// not listen yet: then the connection is accepted outside and closed at once) until
/// `deadline`.
fn ask(port: u16, deadline: Instant) -> Option<String> {
    while Instant::now() < deadline {
        if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = c.write_all(b"hello");
            let mut answer = String::new();
            let _ = c.read_to_string(&mut answer);
            if !answer.is_empty() {
                return Some(answer);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn a_published_port_reaches_the_server_inside_and_each_connection_is_recorded() {
    let s = Sandbox::new("publish");
    let (inner, outer) = (free_port(), free_port());
    let audit = s.root.join("publish.jsonl");
    let publish = format!("{outer}:{inner}");
    let script = echo_once(inner);
    let args =
        ["run", "--audit", audit.to_str().unwrap(), "--publish", &publish, "--", "/usr/bin/python3", "-c", &script];
    let mut child = s.command(&s.ws(), &args).spawn().unwrap();
    let answer = ask(outer, Instant::now() + Duration::from_secs(30));
    let status = child.wait().unwrap();
    assert_eq!(answer.as_deref(), Some("echo:hello"));
    assert!(status.success(), "{status:?}");
    // Recorded: the connection that was carried, with its bytes.
    let log = std::fs::read_to_string(&audit).unwrap();
    let carried = log.lines().find(|l| l.contains("\"kind\":\"inbound\"") && !l.contains("\"error\"")).unwrap_or("");
    assert!(
        carried.contains(&format!("\"port\":{inner}")) && carried.contains(&format!("\"host_port\":{outer}")),
        "{log}"
    );
    assert!(carried.contains("\"bytes_in\":5") && carried.contains("\"bytes_out\":10"), "{carried}");
    let shown = stdout(&s.palisade(&["audit", "show", audit.to_str().unwrap()]));
    assert!(shown.contains(&format!("127.0.0.1:{outer} -> sandbox :{inner}")), "{shown}");
    // Gone with the run.
    assert!(TcpStream::connect(("127.0.0.1", outer)).is_err());
}

#[test]
fn without_publish_the_server_inside_is_unreachable_and_nothing_listens_on_the_host() {
    let s = Sandbox::new("publish-none");
    let inner = free_port();
    // Listens, says so in the workspace, and stays until told to go.
    let script = format!(
        "import socket, os, time; s = socket.socket(); s.bind(('127.0.0.1', {inner})); s.listen(); \
         open('listening', 'w').close()\nwhile not os.path.exists('stop'): time.sleep(0.05)"
    );
    let mut child = s.command(&s.ws(), &["run", "--", "/usr/bin/python3", "-c", &script]).spawn().unwrap();
    s.wait_for_ws_file("listening", 30, "the server inside never listened");
    // The sandbox's loopback is its own: the host's port of the same number has no one.
    let reached = TcpStream::connect(("127.0.0.1", inner));
    std::fs::write(s.ws().join("stop"), "").unwrap();
    assert!(reached.is_err(), "the server inside was reached from the host without --publish");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_published_port_with_no_server_inside_is_closed_and_recorded_and_a_busy_port_refuses_the_run() {
    let s = Sandbox::new("publish-err");
    let (inner, outer) = (free_port(), free_port());
    let audit = s.root.join("err.jsonl");
    let publish = format!("{outer}:{inner}");
    let args = ["run", "--audit", audit.to_str().unwrap(), "--publish", &publish, "--", "sleep", "3"];
    let mut child = s.command(&s.ws(), &args).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answered = None;
    while Instant::now() < deadline {
        if let Ok(mut c) = TcpStream::connect(("127.0.0.1", outer)) {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            answered = Some(c.read_to_end(&mut buf).map(|_| buf.len()));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(matches!(answered, Some(Ok(0))), "closed at once, nothing carried: {answered:?}");
    child.wait().unwrap();
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(log.contains("\"kind\":\"inbound\"") && log.contains("inside the sandbox"), "{log}");

    // The host port is taken: refused before anything runs, saying which and what to do.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let o = s.palisade(&["run", "--publish", &port, "--", "touch", "ran"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("127.0.0.1:{port}")) && stderr(&o).contains("--publish HOST_PORT"),
        "{}",
        stderr(&o)
    );
    assert!(!s.ws().join("ran").exists());
    // A project may not publish; a bad value is named.
    s.write("ws/.palisade.toml", "[network]\npublish = [\"3000\"]\n");
    let o = s.palisade(&["run", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("may not publish ports"), "{}", stderr(&o));
    std::fs::remove_file(s.ws().join(".palisade.toml")).unwrap();
    let o = s.palisade(&["run", "--publish", "0", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("expected PORT or HOST_PORT:PORT"), "{}", stderr(&o));
    // One host port carries one sandbox port.
    let o = s.palisade(&["run", "--publish", "18741:3000", "--publish", "18741:4000", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("already published"), "{}", stderr(&o));
}

#[test]
fn a_connection_open_when_the_run_ends_is_closed_and_recorded_before_the_end_of_the_log() {
    let s = Sandbox::new("publish-open");
    let (inner, outer) = (free_port(), free_port());
    let audit = s.root.join("open.jsonl");
    let publish = format!("{outer}:{inner}");
    // Takes one connection, reads it, never answers, and ends the run 2 s later.
    let script = format!(
        "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
         s.bind(('127.0.0.1', {inner})); s.listen(); open('listening', 'w').close(); c, _ = s.accept(); c.recv(10); time.sleep(2)"
    );
    let args =
        ["run", "--audit", audit.to_str().unwrap(), "--publish", &publish, "--", "/usr/bin/python3", "-c", &script];
    let mut child = s.command(&s.ws(), &args).spawn().unwrap();
    s.wait_for_ws_file("listening", 30, "the server inside never listened");
    let mut c = TcpStream::connect(("127.0.0.1", outer)).unwrap();
    c.write_all(b"hold").unwrap();
    assert!(child.wait().unwrap().success());
    // The client sees the end; the log has the connection, then ends with session_end.
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    assert!(c.read_to_end(&mut rest).is_ok());
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(log.contains("\"kind\":\"inbound\"") && log.contains("\"bytes_in\":4"), "{log}");
    assert!(log.lines().last().unwrap_or("").contains("\"kind\":\"session_end\""), "{log}");
    let o = s.palisade(&["audit", "verify", audit.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}
