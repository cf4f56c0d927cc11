//! THREATS C-07 and the gateway's HTTP: every request decided on its own, on every path out
//! (plain proxy, CONNECT, SOCKS5, transparent). Outcomes are checked on the host side: the
//! bytes a loopback origin the test starts actually received.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::*;

/// An HTTP/1.1 origin on the host's loopback that keeps connections alive, answers every
/// request `200 ok`, and keeps every byte it received.
pub struct Origin {
    pub port: u16,
    got: Arc<Mutex<Vec<u8>>>,
}

impl Origin {
    pub fn start() -> Origin {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten().take(200) {
                let g = g.clone();
                std::thread::spawn(move || serve(c, &g));
            }
        });
        Origin { port, got }
    }

    /// Everything received so far, as text.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.got.lock().unwrap()).into_owned()
    }

    /// The request lines received.
    pub fn request_lines(&self) -> Vec<String> {
        self.received()
            .split("\r\n")
            .filter(|l| l.ends_with(" HTTP/1.1") || l.ends_with(" HTTP/1.0"))
            .map(str::to_owned)
            .collect()
    }
}

/// Reads requests (`Content-Length` or chunked bodies) and answers each.
fn serve(mut c: TcpStream, got: &Mutex<Vec<u8>>) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match c.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    got.lock().unwrap().extend_from_slice(&chunk[..n]);
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let mut rest = buf.split_off(head_end);
        let done = |rest: &[u8]| {
            if head.contains("transfer-encoding: chunked") {
                rest.windows(5).position(|w| w == b"0\r\n\r\n").map(|i| i + 5)
            } else {
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                (rest.len() >= len).then_some(len)
            }
        };
        let used = loop {
            if let Some(n) = done(&rest) {
                break n;
            }
            match c.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    got.lock().unwrap().extend_from_slice(&chunk[..n]);
                    rest.extend_from_slice(&chunk[..n]);
                }
            }
        };
        buf = rest.split_off(used);
        if c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n").is_err() {
            return;
        }
    }
}

/// A policy mapping `allowed.test` to the host's loopback, allowed on the origin's port.
pub fn allow_origin(s: &Sandbox, o: &Origin, extra: &str) -> String {
    let p = s.path("gw-policy.toml");
    std::fs::write(
        &p,
        format!(
            "[network]\nmode = \"allowlist\"\nallow = [\"allowed.test:{}\"]\nhosts = {{ \"allowed.test\" = \"127.0.0.1\" }}\n{extra}",
            o.port
        ),
    )
    .unwrap();
    p.to_string_lossy().into_owned()
}

/// A Python script run in the sandbox that sends `payload` in one write to (host, port) and
/// prints every byte of the reply.
fn raw_exchange(host: &str, port: u16, payload: &str) -> String {
    format!(
        "import socket, sys, time\nc = socket.create_connection(('{host}', {port}), timeout=5)\nc.sendall({payload})\nout = b''\nwhile True:\n    try:\n        d = c.recv(65536)\n    except Exception:\n        break\n    if not d:\n        break\n    out += d\nsys.stdout.write(out.decode('latin-1'))"
    )
}

fn python() -> bool {
    std::path::Path::new("/usr/bin/python3").exists()
}

#[test]
fn pipelined_requests_are_each_decided_on_the_proxy_and_the_transparent_path() {
    if !python() {
        return;
    }
    let s = Sandbox::new("c-pipelining");
    let o = Origin::start();
    let p = allow_origin(&s, &o, "");
    let port = o.port;
    // One write: an allowed request, then one for another host on the same connection.
    let proxy = format!(
        "b'GET http://allowed.test:{port}/one HTTP/1.1\\r\\nHost: allowed.test:{port}\\r\\n\\r\\nGET http://127.0.0.2:{port}/two HTTP/1.1\\r\\nHost: 127.0.0.2:{port}\\r\\n\\r\\n'"
    );
    let transparent = format!(
        "b'GET /one HTTP/1.1\\r\\nHost: allowed.test:{port}\\r\\n\\r\\nGET /two HTTP/1.1\\r\\nHost: 127.0.0.2:{port}\\r\\n\\r\\n'"
    );
    for (how, host, lport, payload) in
        [("proxy", "127.0.0.1", 3128, proxy), ("transparent", "allowed.test", port, transparent)]
    {
        let o2 = s.run(&["--policy", &p], &["/usr/bin/python3", "-c", &raw_exchange(host, lport, &payload)]);
        let out = stdout(&o2);
        assert!(out.starts_with("HTTP/1.1 200 OK") && out.contains("\r\n\r\nok\n"), "{how}: {out}{}", stderr(&o2));
        assert!(out.contains("403 Forbidden") && out.contains("x-palisade-denied"), "{how}: {out}");
    }
    assert_eq!(o.request_lines(), ["GET /one HTTP/1.1", "GET /one HTTP/1.1"], "{}", o.received());
    assert!(!o.received().contains("127.0.0.2"), "{}", o.received());
}

#[test]
fn a_host_inside_a_tunnel_must_be_the_tunnels_name() {
    let s = Sandbox::new("c07-tunnel-host");
    let o = Origin::start();
    let p = allow_origin(&s, &o, "");
    let url = format!("http://allowed.test:{}/x", o.port);
    let front = format!("-H 'Host: 127.0.0.2:{}'", o.port);
    let noproxy = "--noproxy ''";
    for args in [
        format!("{noproxy} -p -x http://127.0.0.1:3128 {front} {url}"),
        format!("{noproxy} --socks5-hostname 127.0.0.1:1080 {front} {url}"),
        format!("--noproxy '*' {front} {url}"),
        format!("{noproxy} {front} {url}"),
    ] {
        let out = stdout(
            &s.run(&["--policy", &p], &["/bin/sh", "-c", &format!("curl -sS -i --max-time 5 {args}; echo exit=$?")]),
        );
        assert!(out.contains("403 Forbidden") && !out.contains("\r\n\r\nok"), "{args}: {out}");
    }
    assert_eq!(o.received(), "", "a request naming another host reached the origin");
    // The same requests naming the tunnel's host go through, each path once.
    for args in [
        format!("{noproxy} -p -x http://127.0.0.1:3128 {url}"),
        format!("{noproxy} --socks5-hostname 127.0.0.1:1080 {url}"),
        format!("--noproxy '*' {url}"),
        format!("{noproxy} {url}"),
    ] {
        let out = stdout(&s.run(&["--policy", &p], &["/bin/sh", "-c", &format!("curl -sS --max-time 5 {args}")]));
        assert_eq!(out, "ok\n", "{args}");
    }
    assert_eq!(o.request_lines().len(), 4, "{}", o.received());
}

#[test]
fn origins_get_origin_form_and_no_hop_by_hop_headers() {
    let s = Sandbox::new("c-origin-form");
    let o = Origin::start();
    let p = allow_origin(&s, &o, "");
    let out = stdout(&s.run(
        &["--policy", &p],
        &[
            "/bin/sh",
            "-c",
            &format!(
                "curl -sS --max-time 5 -H 'Proxy-Authorization: Basic c2VjcmV0' -H 'Connection: keep-alive, X-Hop' -H 'X-Hop: 1' 'http://allowed.test:{}/v1/items?page=2'",
                o.port
            ),
        ],
    ));
    assert_eq!(out, "ok\n");
    let got = o.received();
    assert!(got.starts_with("GET /v1/items?page=2 HTTP/1.1\r\n"), "{got}");
    assert!(got.contains(&format!("\r\nHost: allowed.test:{}\r\n", o.port)), "{got}");
    for hop in ["Proxy-Authorization", "X-Hop", "Proxy-Connection", "c2VjcmV0"] {
        assert!(!got.to_ascii_lowercase().contains(&hop.to_ascii_lowercase()), "{hop} was forwarded: {got}");
    }
}

#[test]
fn python_http_server_answers_through_the_proxy() {
    // The case that used to fail: an origin that only understands origin-form (404 on an
    // absolute URI).
    if !python() {
        return;
    }
    let s = Sandbox::new("c-origin-python");
    let root = s.path("site");
    std::fs::create_dir_all(root.join("v1")).unwrap();
    std::fs::write(root.join("v1/items"), "items\n").unwrap();
    let server = HttpServer::start(&root, free_port(), false, &s.home());
    let port = server.port;
    let p = s.path("py-policy.toml");
    std::fs::write(
        &p,
        format!("[network]\nmode = \"allowlist\"\nallow = [\"mirror.test:{port}\"]\nhosts = {{ \"mirror.test\" = \"127.0.0.1\" }}\n"),
    )
    .unwrap();
    let url = format!("http://mirror.test:{port}/v1/items?page=2");
    let out = stdout(&s.run(
        &["--policy", p.to_str().unwrap()],
        &["/bin/sh", "-c", &format!("curl -sS --max-time 5 '{url}'; curl -sS --max-time 5 --noproxy '*' '{url}'")],
    ));
    drop(server);
    assert_eq!(out, "items\nitems\n");
}

#[test]
fn a_granted_host_loopback_port_is_reachable_and_only_it() {
    let s = Sandbox::new("c-host-loopback");
    let (o, other) = (Origin::start(), Origin::start());
    let log = s.path("audit/loop.jsonl");
    let log2 = s.path("audit/loop2.jsonl");
    for (grant, log) in [(format!("localhost:{}", o.port), &log), (format!("127.0.0.1:{}", o.port), &log2)] {
        // Plain clients (NO_PROXY lists localhost), forced through the proxy, and by address.
        let script = format!(
            "for u in http://localhost:{0}/a http://127.0.0.1:{0}/b; do curl -sS --max-time 5 $u; curl -sS --max-time 5 --noproxy '' -x http://127.0.0.1:3128 $u; done; \
             curl -sS --max-time 5 http://127.0.0.2:{0}/c; curl -sS --max-time 5 --noproxy '' -x http://127.0.0.1:3128 http://127.0.0.1:{1}/d; echo done",
            o.port, other.port
        );
        let out = s.run(
            &["--allow-net", &grant, "--allow-net", "unrelated.test:443", "--audit", log.to_str().unwrap()],
            &["/bin/sh", "-c", &script],
        );
        let text = stdout(&out);
        let oks = text.matches("ok\n").count();
        // The host's loopback port is one place, by either name.
        assert_eq!(oks, 4, "{grant}: {text}{}", stderr(&out));
        assert!(text.contains("request refused") && text.ends_with("done\n"), "{grant}: {text}");
    }
    assert_eq!(other.received(), "", "an ungranted host loopback port was reached");
    assert!(!o.received().contains("GET /c"), "127.0.0.2 inside reached the host");
    // Refusals are recorded, with a reason that says how to grant.
    let audit = std::fs::read_to_string(&log).unwrap();
    assert!(audit.contains("\"kind\":\"request\"") && audit.contains("\"allowed\":false"), "{audit}");
    assert!(audit.contains("127.0.0.2:") && audit.contains("--allow-net localhost:"), "{audit}");
    // 443 is a transparent port here: the sandbox's loopback on it is not the host's.
    let log = s.path("audit/loop3.jsonl");
    let out = stdout(&s.run(
        &["--allow-net", "unrelated.test:443", "--audit", log.to_str().unwrap()],
        &["/bin/sh", "-c", "curl -sS -i --max-time 5 http://127.0.0.1:443/; echo exit=$?"],
    ));
    // An HTTP client is told why, in a 403 of the gateway's own.
    assert!(out.starts_with("HTTP/1.1 403") && out.contains("--allow-net localhost:443"), "{out}");
    let audit = std::fs::read_to_string(&log).unwrap();
    assert!(audit.contains("loopback port 443 inside the sandbox is not a service of the host"), "{audit}");
}

#[test]
fn the_project_file_cannot_grant_a_host_loopback_port() {
    let s = Sandbox::new("c-loopback-project");
    let o = Origin::start();
    s.write("ws/.palisade.toml", &format!("[network]\nallow = [\"localhost:{}\"]\n", o.port));
    let out = s.run(
        &["--allow-net", "unrelated.test:443"],
        &["/bin/sh", "-c", &format!("curl -sS --max-time 5 http://localhost:{}/", o.port)],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("may only narrow"), "{}", stderr(&out));
    assert_eq!(o.received(), "");
}

#[test]
fn request_events_say_what_was_decided_without_queries() {
    let s = Sandbox::new("c-request-event");
    let o = Origin::start();
    let p = allow_origin(&s, &o, "");
    let log = s.path("audit/req.jsonl");
    let script = format!(
        "curl -sS --max-time 5 -d 'body' 'http://allowed.test:{0}/upload?token=s3cr3t'; curl -sS --max-time 5 http://denied.test:{0}/x?k=s3cr3t",
        o.port
    );
    let out = s.run(&["--policy", &p, "--audit", log.to_str().unwrap()], &["/bin/sh", "-c", &script]);
    assert!(stdout(&out).starts_with("ok\n"), "{}{}", stdout(&out), stderr(&out));
    let audit = std::fs::read_to_string(&log).unwrap();
    let requests: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone())
        .filter(|e| e["kind"] == "request")
        .collect();
    assert_eq!(requests.len(), 2, "{audit}");
    let (a, d) = (&requests[0], &requests[1]);
    assert_eq!(
        (a["method"].as_str(), a["host"].as_str(), a["path"].as_str()),
        (Some("POST"), Some("allowed.test"), Some("/upload"))
    );
    assert_eq!(
        (a["allowed"].as_bool(), a["status"].as_u64(), a["bytes_up"].as_u64(), a["bytes_down"].as_u64()),
        (Some(true), Some(200), Some(4), Some(3))
    );
    assert_eq!(
        (d["host"].as_str(), d["allowed"].as_bool(), d["status"].as_u64()),
        (Some("denied.test"), Some(false), Some(403))
    );
    for r in &requests {
        assert!(!r.to_string().contains("s3cr3t"), "a query reached a request event: {r}");
    }
    let shown = stdout(&s.palisade(&["audit", "show", log.to_str().unwrap()]));
    assert!(shown.contains("HTTP requests") && shown.contains("GET denied.test:"), "{shown}");
}

#[test]
fn smuggling_inputs_are_refused_or_normalised_and_nothing_hidden_reaches_the_origin() {
    if !python() {
        return;
    }
    let s = Sandbox::new("c-smuggling");
    let o = Origin::start();
    let p = allow_origin(&s, &o, "");
    let logs = s.path("audit");
    let port = o.port;
    let h = format!("Host: allowed.test:{port}");
    let smuggled = format!("GET /smuggled HTTP/1.1\\r\\nHost: 127.0.0.2:{port}\\r\\n\\r\\n");
    let big = "a".repeat(20_000);
    // (payload, the status the client must get first)
    let cases = [
        (
            format!(
                "POST / HTTP/1.1\\r\\n{h}\\r\\nContent-Length: 4\\r\\nContent-Length: 40\\r\\n\\r\\nbody{smuggled}"
            ),
            "400",
        ),
        (format!("POST / HTTP/1.1\\r\\n{h}\\r\\nTransfer-Encoding: gzip, identity\\r\\n\\r\\n{smuggled}"), "400"),
        (format!("POST / HTTP/1.0\\r\\n{h}\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n{smuggled}"), "400"),
        (format!("GET / HTTP/1.1\\r\\n{h}\\r\\nX-Folded: a\\r\\n b\\r\\n\\r\\n{smuggled}"), "400"),
        (format!("GET / HTTP/1.1\\r\\n{h}\\r\\nX-Big: {big}\\r\\n\\r\\n{smuggled}"), "431"),
        (format!("GET / HTTP/1.1\\r\\n{h}\\r\\nX-Nul: a\\x00b\\r\\n\\r\\n{smuggled}"), "400"),
        // Both lengths: framed by Transfer-Encoding alone and the connection closed after it
        // (RFC 9112 §6.1), so the bytes after the chunked body are never read.
        (
            format!(
                "POST / HTTP/1.1\\r\\n{h}\\r\\nContent-Length: 40\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n{smuggled}"
            ),
            "200",
        ),
        (
            format!(
                "POST / HTTP/1.1\\r\\n{h}\\r\\nTransfer-Encoding: chunked\\r\\nContent-Length: 40\\r\\n\\r\\n0\\r\\n\\r\\n{smuggled}"
            ),
            "200",
        ),
        // A malformed chunked body: the client's fault, recorded as refused.
        (format!("POST / HTTP/1.1\\r\\n{h}\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\nzz\\r\\n{smuggled}"), "400"),
        // Bare LF line ends: parsed as line ends and forwarded with CRLF.
        (format!("GET /bare HTTP/1.1\\n{h}\\nConnection: close\\n\\n"), "200"),
    ];
    for (path, host, lport) in [("proxy", "127.0.0.1", 3128), ("transparent", "allowed.test", port)] {
        for (payload, status) in &cases {
            // Through the proxy, requests name their target in absolute form.
            let payload = if path == "proxy" {
                payload.replacen(" / HTTP", &format!(" http://allowed.test:{port}/ HTTP"), 1).replacen(
                    " /bare HTTP",
                    &format!(" http://allowed.test:{port}/bare HTTP"),
                    1,
                )
            } else {
                payload.clone()
            };
            let log = logs.join(format!("{}.jsonl", std::fs::read_dir(&logs).map_or(0, |d| d.count())));
            let out = s.run(
                &["--policy", &p, "--audit", log.to_str().unwrap()],
                &["/usr/bin/python3", "-c", &raw_exchange(host, lport, &format!("b'{payload}'"))],
            );
            let text = stdout(&out);
            assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{path} {payload}: {text}{}", stderr(&out));
            assert!(!text.contains("x-palisade-denied: this connection"), "{path} {payload}: {text}");
        }
    }
    let got = o.received();
    assert!(!got.contains("smuggled") && !got.contains("127.0.0.2"), "{got}");
    assert!(got.contains("GET /bare HTTP/1.1\r\nHost: "), "bare LF not normalised: {got:?}");
    assert!(!got.contains("X-Folded") && !got.contains("X-Nul") && !got.contains("X-Big"), "{got}");
    let audit: String =
        std::fs::read_dir(&logs).unwrap().map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect();
    assert!(audit.matches("malformed request").count() >= 10, "{audit}");
}

#[test]
fn raw_tcp_needs_a_rule_that_names_the_port() {
    if !python() {
        return;
    }
    let s = Sandbox::new("c-raw-tcp");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten().take(20) {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 256];
            if let Ok(n) = c.read(&mut buf) {
                seen2.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = c.write_all(b"pong\n");
            }
        }
    });
    let policy = |allow: &str| {
        let p = s.path(&format!("raw-{}.toml", allow.len()));
        std::fs::write(
            &p,
            format!("[network]\nmode = \"allowlist\"\nallow = [\"{allow}\"]\nhosts = {{ \"raw.test\" = \"127.0.0.1\" }}\nhandshake_timeout = \"1s\"\n"),
        )
        .unwrap();
        p.to_string_lossy().into_owned()
    };
    let ping = format!(
        "import socket\nc = socket.create_connection(('raw.test', {port}), timeout=5)\nc.sendall(b'PING raw\\r\\n')\nprint(c.recv(100).decode().strip() or 'closed')"
    );
    let socks = format!(
        "curl -sS --max-time 5 --socks5-hostname 127.0.0.1:1080 telnet://raw.test:{port} <<EOF\nPING socks\nEOF\necho exit=$?"
    );
    // A rule naming the port lets other protocols through, on the transparent path and SOCKS5.
    let named = policy(&format!("raw.test:{port}"));
    let o = s.run(&["--policy", &named], &["/usr/bin/python3", "-c", &ping]);
    assert_eq!(stdout(&o).trim(), "pong", "{}", stderr(&o));
    let o = s.run(&["--policy", &named], &["/bin/sh", "-c", &socks]);
    assert!(stdout(&o).contains("pong"), "{}{}", stdout(&o), stderr(&o));
    let n = seen.lock().unwrap().len();
    assert_eq!(n, 2);
    // A rule without a port lets only TLS and HTTP through that tunnel.
    let any = policy("raw.test");
    let o = s.run(&["--policy", &any], &["/bin/sh", "-c", &socks]);
    assert!(!stdout(&o).contains("pong"), "{}", stdout(&o));
    // (The tunnel's connection is made before its first bytes are seen; none of them pass.)
    let got: Vec<String> = seen.lock().unwrap().iter().filter(|s| !s.is_empty()).cloned().collect();
    assert_eq!(got.len(), 2, "raw bytes reached the host: {got:?}");
}

#[test]
fn a_websocket_upgrade_is_passed_on_and_h2c_is_not() {
    if !python() {
        return;
    }
    let s = Sandbox::new("c-websocket");
    // An origin that accepts any upgrade it is asked for and then echoes, keeping what it got.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(String::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten().take(20) {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let Ok(n) = c.read(&mut buf) else { continue };
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            g.lock().unwrap().push_str(&head);
            let proto = if head.to_ascii_lowercase().contains("upgrade: websocket") { "websocket" } else { "h2c" };
            let _ = c.write_all(
                format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: {proto}\r\nConnection: Upgrade\r\n\r\n")
                    .as_bytes(),
            );
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 || c.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    let p = s.path("ws-policy.toml");
    std::fs::write(
        &p,
        format!(
            "[network]\nmode = \"allowlist\"\nallow = [\"ws.test:{port}\"]\nhosts = {{ \"ws.test\" = \"127.0.0.1\" }}\n"
        ),
    )
    .unwrap();
    let script = |proto: &str, target: &str, connect: (&str, u16)| {
        format!(
            "import socket\nc = socket.create_connection(('{}', {}), timeout=3)\nc.sendall(b'GET {target} HTTP/1.1\\r\\nHost: ws.test:{port}\\r\\nConnection: Upgrade\\r\\nUpgrade: {proto}\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n')\nhead = c.recv(4096).decode()\nprint(head.split('\\r\\n')[0])\ntry:\n    c.sendall(b'frame-bytes')\n    print(c.recv(100).decode() or 'closed')\nexcept Exception as e:\n    print('closed', type(e).__name__)",
            connect.0, connect.1
        )
    };
    let proxy_target = format!("http://ws.test:{port}/chat");
    for (target, connect) in [("/chat", ("ws.test", port)), (proxy_target.as_str(), ("127.0.0.1", 3128))] {
        let o = s.run(
            &["--policy", p.to_str().unwrap()],
            &["/usr/bin/python3", "-c", &script("websocket", target, connect)],
        );
        assert_eq!(stdout(&o), "HTTP/1.1 101 Switching Protocols\nframe-bytes\n", "{target}: {}", stderr(&o));
        let o = s.run(&["--policy", p.to_str().unwrap()], &["/usr/bin/python3", "-c", &script("h2c", target, connect)]);
        assert!(stdout(&o).starts_with("HTTP/1.1 502") && !stdout(&o).contains("frame-bytes"), "h2c: {}", stdout(&o));
    }
    let got = got.lock().unwrap().to_ascii_lowercase();
    assert_eq!(got.matches("upgrade: websocket").count(), 2, "{got}");
    assert!(!got.contains("h2c"), "an h2c upgrade reached the origin: {got}");
}

#[test]
fn whatever_a_server_might_take_for_http_is_checked_even_where_raw_tcp_is_allowed() {
    if !python() {
        return;
    }
    // The rule names the port, so raw TCP may pass; an HTTP request still may not name
    // another host, however it opens (found by a review: a leading empty line).
    let s = Sandbox::new("c-http-openings");
    let o = Origin::start();
    let p = allow_origin(&s, &o, "handshake_timeout = \"1s\"\n");
    let port = o.port;
    let front = format!("Host: secret-vhost.internal:{port}");
    for opening in [
        format!("\\r\\nGET /a HTTP/1.1\\r\\n{front}\\r\\n\\r\\n"),
        format!("\\n\\nget /b HTTP/1.1\\r\\n{front}\\r\\n\\r\\n"),
        format!("GET /c HTTP/1.2\\r\\n{front}\\r\\n\\r\\n"),
        format!("PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\nGET /d HTTP/1.1\\r\\n{front}\\r\\n\\r\\n"),
        format!("GET /{} HTTP/1.1\\r\\n{front}\\r\\n\\r\\n", "e".repeat(20_000)),
        // What lenient servers (Python's http.server) also take (found by a second review).
        format!("GET\\t/f\\tHTTP/1.1\\r\\n{front}\\r\\n\\r\\n"),
        format!("GET /g HTTP/1.1 \\r\\n{front}\\r\\n\\r\\n"),
        format!(" GET /h HTTP/1.1\\r\\n{front}\\r\\n\\r\\n"),
        "GET http://secret-vhost.internal/i\\r\\n".to_string(),
    ] {
        for (host, lport, connect) in [
            ("allowed.test", port, String::new()),
            ("127.0.0.1", 3128, format!("CONNECT allowed.test:{port} HTTP/1.1\\r\\n\\r\\n")),
        ] {
            let py = format!(
                "import socket, time\nc = socket.create_connection(('{host}', {lport}), timeout=3)\nif {connect:?}:\n    c.sendall({connect:?}.encode()); c.recv(100)\nc.sendall(b'{opening}')\nout = b''\ntry:\n    while True:\n        d = c.recv(65536)\n        if not d: break\n        out += d\nexcept Exception:\n    pass\nprint(out.decode('latin-1').split('\\r\\n')[0] or 'closed')"
            );
            let out = s.run(&["--policy", &p], &["/usr/bin/python3", "-c", &py]);
            assert!(!stdout(&out).contains("200 OK"), "{host} {opening}: {}{}", stdout(&out), stderr(&out));
        }
    }
    assert!(!o.received().contains("secret-vhost"), "a request for another host reached the origin: {}", o.received());
    // A silent client on a port where raw TCP may pass is closed at the handshake budget.
    let py = format!(
        "import socket, time\nc = socket.create_connection(('allowed.test', {port}), timeout=10)\nt = time.time()\nc.recv(10)\nprint(round(time.time() - t))"
    );
    let out = s.run(&["--policy", &p], &["/usr/bin/python3", "-c", &py]);
    assert!(matches!(stdout(&out).trim(), "1" | "2"), "a silent client was kept: {}{}", stdout(&out), stderr(&out));
}

#[test]
fn socks5_refusals_before_a_target_are_recorded_and_local_resolution_works() {
    if !python() {
        return;
    }
    let s = Sandbox::new("c-socks-records");
    let o = Origin::start();
    let p = allow_origin(&s, &o, "");
    let log = s.path("audit/socks.jsonl");
    // BIND (command 2), then a client that resolved the name itself (socks5://, not socks5h).
    let script = format!(
        "/usr/bin/python3 -c \"import socket; c = socket.create_connection(('127.0.0.1', 1080)); c.sendall(bytes([5, 1, 0])); c.recv(2); c.sendall(bytes([5, 2, 0, 1, 127, 0, 0, 1, 0, 80])); print(list(c.recv(10))[:2])\"; \
         curl -sS --max-time 5 --socks5 127.0.0.1:1080 http://allowed.test:{}/local",
        o.port
    );
    let out = s.run(&["--policy", &p, "--audit", log.to_str().unwrap()], &["/bin/sh", "-c", &script]);
    assert_eq!(stdout(&out), "[5, 7]\nok\n", "{}", stderr(&out));
    let audit = std::fs::read_to_string(&log).unwrap();
    assert!(audit.contains("\"via\":\"socks5\",\"target\":\"-\",\"allowed\":false"), "{audit}");
    assert!(o.received().contains("GET /local HTTP/1.1"), "{}", o.received());
}

#[test]
fn policy_explain_says_what_the_gateway_does() {
    let s = Sandbox::new("c-explain-net");
    let explain = |args: &[&str]| {
        let mut a = vec!["policy", "explain"];
        a.extend_from_slice(args);
        stdout(&s.palisade(&a))
    };
    let out = explain(&["--allow-net", "localhost:11434", "127.0.0.1:11434"]);
    assert!(
        out.starts_with("127.0.0.1:11434: the host's port, allowed") && out.contains("host's own loopback"),
        "{out}"
    );
    let out = explain(&["--allow-net", "localhost:11434", "localhost:11435"]);
    assert!(
        out.contains("the host's own port 11435 is not reachable") && out.contains("--allow-net localhost:11435"),
        "{out}"
    );
    let out = explain(&["--allow-net", "github.com", "github.com:22"]);
    assert!(out.contains("allowed") && out.contains("only TLS and HTTP"), "{out}");
    let out = explain(&["--allow-net", "github.com:22", "github.com:22"]);
    assert!(out.contains("carries: any protocol"), "{out}");
}

#[test]
fn the_most_transparent_ports_start() {
    // 32 granted host loopback ports, each with an IPv4 and an IPv6 listener: 68 descriptors
    // in one message.
    let s = Sandbox::new("c-many-ports");
    let o = Origin::start();
    let mut opts = vec![];
    let rules: Vec<String> = (0..31).map(|i| format!("localhost:{}", 41000 + i)).collect();
    for r in &rules {
        opts.push("--allow-net");
        opts.push(r.as_str());
    }
    let last = format!("localhost:{}", o.port);
    opts.extend_from_slice(&["--allow-net", &last]);
    let out = s.run(&opts, &["/bin/sh", "-c", &format!("curl -sS --max-time 5 http://localhost:{}/last", o.port)]);
    assert_eq!(stdout(&out), "ok\n", "{}", stderr(&out));
}
