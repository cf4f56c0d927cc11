//! THREATS group C through the gateway: upstream servers the test starts on the host's
//! loopback, reachable only through `[network] hosts` mappings and allow rules. Outcomes are
//! checked on the host side: which listener saw a connection.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::util::*;

/// An HTTP server on the host's loopback that counts the connections it accepts.
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
                h.fetch_add(1, Ordering::SeqCst);
                let mut c = conn;
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
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
        format!("--noproxy '*' http://upstream.test:{}/", up.port),          // around the proxy
        format!("--noproxy '*' http://127.0.0.1:{}/", up.port),              // straight to the host
    ];
    for a in &attempts {
        let (out, err) = curl(&s, &p, a);
        assert!(!out.contains("hello from upstream"), "{a} reached the upstream: {out}{err}");
        if !a.contains("socks") && !a.contains("noproxy") {
            assert!(out.contains("403 Forbidden") && out.contains("X-Palisade-Denied:"), "{a}: {out}{err}");
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
