//! What users run, through each path out of the sandbox: curl, Python's urllib and requests,
//! Node's fetch and http, git over smart HTTP (clone and push), pip, npm and cargo, against a
//! package mirror the test serves on the host's loopback (`data/mirror.py`). Each runs once
//! through the HTTP proxy (the proxy variables Palisade sets) and once with every proxy
//! variable unset (the transparent path). The mirror's own log says what arrived.

use std::path::Path;

use crate::util::*;

/// `python3 -m http.server --cgi` over a built mirror; stopped on drop.
struct Mirror {
    port: u16,
    _server: HttpServer,
}

impl Mirror {
    fn start(s: &Sandbox) -> Option<Mirror> {
        if !Path::new("/usr/bin/python3").exists() || !Path::new("/usr/bin/git").exists() {
            return None;
        }
        let port = free_port();
        let root = s.path("mirror");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/all/data/mirror.py");
        let built = std::process::Command::new("/usr/bin/python3")
            .arg(script)
            .arg(&root)
            .arg(format!("http://mirror.test:{port}"))
            .env("HOME", s.home())
            .output()
            .unwrap();
        assert!(built.status.success(), "mirror.py: {}", stderr(&built));
        Some(Mirror { port, _server: HttpServer::start(&root, port, true, &s.home()) })
    }
}

/// Prefix that takes the proxy variables away (the transparent path).
const NO_PROXY_VARS: &str = "env -u HTTP_PROXY -u http_proxy -u HTTPS_PROXY -u https_proxy -u ALL_PROXY -u all_proxy";

fn policy(s: &Sandbox, m: &Mirror) -> String {
    let p = s.path("mirror-policy.toml");
    std::fs::write(
        &p,
        format!(
            "[network]\nmode = \"allowlist\"\nallow = [\"mirror.test:{}\"]\nhosts = {{ \"mirror.test\" = \"127.0.0.1\" }}\n",
            m.port
        ),
    )
    .unwrap();
    p.to_string_lossy().into_owned()
}

/// Runs `script` in the sandbox (in a private /tmp directory) once per path; returns each
/// path's output.
fn each_path(s: &Sandbox, m: &Mirror, extra: &[&str], script: &str) -> Vec<(&'static str, String)> {
    let p = policy(s, m);
    // (An empty workspace draws a warning about `git init`.)
    s.write("ws/README", "mirror tests\n");
    let mut out = Vec::new();
    for (name, how) in [("proxy", ""), ("transparent", NO_PROXY_VARS)] {
        let body = script.replace("$HOW", how).replace("$PORT", &m.port.to_string()).replace("$PATHNAME", name);
        let mut opts = vec!["--policy", p.as_str()];
        opts.extend_from_slice(extra);
        let o = s.run(&opts, &["/bin/sh", "-c", &format!("cd \"$(mktemp -d)\" && {body}")]);
        out.push((name, format!("{}{}", stdout(&o), stderr(&o))));
    }
    out
}

#[test]
fn curl_python_and_node_through_each_path() {
    let s = Sandbox::new("m-clients");
    let Some(m) = Mirror::start(&s) else { return };
    let url = "http://mirror.test:$PORT/hello.txt";
    let mut script = format!(
        "$HOW curl -sS {url}; \
         $HOW /usr/bin/python3 -c 'import urllib.request; print(urllib.request.urlopen(\"{url}\").read().decode().strip(), \"urllib\")'; \
         $HOW /usr/bin/python3 -c 'from pip._vendor import requests; print(requests.get(\"{url}\").text.strip(), \"requests\")'; "
    );
    let node = Path::new("/usr/bin/node").exists();
    if node {
        // fetch ignores proxy variables (transparent either way); http.get through the proxy
        // by hand is what proxy-aware Node clients do.
        script.push_str(&format!(
            "/usr/bin/node -e 'fetch(\"{url}\").then(r => r.text()).then(t => console.log(t.trim(), \"fetch\"))'; \
             /usr/bin/node -e 'require(\"http\").get({{host: \"127.0.0.1\", port: 3128, path: \"{url}\", headers: {{host: \"mirror.test:$PORT\"}}}}, r => {{ let b = \"\"; r.on(\"data\", d => b += d); r.on(\"end\", () => console.log(b.trim(), \"http\")); }})'"
        ));
    }
    for (path, out) in each_path(&s, &m, &[], &script) {
        for client in ["urllib", "requests"].into_iter().chain(if node { vec!["fetch", "http"] } else { vec![] }) {
            assert!(out.contains(&format!("hello from the mirror {client}")), "{path}/{client}: {out}");
        }
        assert!(out.starts_with("hello from the mirror\n"), "{path}/curl: {out}");
    }
}

#[test]
fn git_clones_and_pushes_over_smart_http_through_each_path() {
    let s = Sandbox::new("m-git");
    let Some(m) = Mirror::start(&s) else { return };
    let script = "$HOW git clone -q http://mirror.test:$PORT/cgi-bin/git/repo.git smart && cat smart/README && cd smart \
         && echo more >> README && git -c user.name=a -c user.email=a@a commit -qam more \
         && $HOW git push -q origin HEAD:refs/heads/from-$PATHNAME && echo pushed; cd .. \
         && $HOW git clone -q http://mirror.test:$PORT/repo.git dumb && cat dumb/README";
    for (path, out) in each_path(&s, &m, &[], script) {
        assert!(out.contains("from the mirror\npushed\n"), "{path}: {out}");
        assert!(out.trim_end().ends_with("from the mirror"), "{path} (dumb HTTP): {out}");
    }
    // The pushes arrived: the host's own git sees both branches.
    let branches = std::process::Command::new("git")
        .args(["--git-dir", s.path("mirror/repo.git").to_str().unwrap(), "branch", "--list"])
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "safe.directory")
        .env("GIT_CONFIG_VALUE_0", "*")
        .output()
        .unwrap();
    let listed = stdout(&branches);
    assert!(listed.contains("from-proxy") && listed.contains("from-transparent"), "{listed}");
}

#[test]
fn pip_and_npm_install_from_a_local_mirror_through_each_path() {
    let s = Sandbox::new("m-pip-npm");
    let Some(m) = Mirror::start(&s) else { return };
    let mut script =
        "$HOW /usr/bin/python3 -m pip install -q --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
         --trusted-host mirror.test --target t --index-url http://mirror.test:$PORT/simple tinypkg \
         && PYTHONPATH=t /usr/bin/python3 -c 'import tinypkg; print(\"pip\", tinypkg.VALUE)'; "
            .to_owned();
    let npm = Path::new("/usr/bin/npm").exists();
    if npm {
        script.push_str(
            "$HOW npm install -s --no-audit --no-fund --cache ./npm-cache --registry http://mirror.test:$PORT/ tinynpm \
             && /usr/bin/node -e 'console.log(\"npm\", require(\"tinynpm\"))'",
        );
    }
    for (path, out) in each_path(&s, &m, &[], &script) {
        assert!(out.contains("pip 42"), "{path}/pip: {out}");
        if npm {
            assert!(out.contains("npm 42"), "{path}/npm: {out}");
        }
    }
}

#[test]
fn cargo_fetches_from_a_sparse_registry_through_each_path() {
    let s = Sandbox::new("m-cargo");
    // The toolchain's cargo (set by `cargo test`); skipped where the tests run without it.
    let Ok(cargo) = std::env::var("CARGO") else { return };
    let Ok(cargo) = std::fs::canonicalize(cargo) else { return };
    let toolchain = cargo.parent().and_then(Path::parent).unwrap().to_string_lossy().into_owned();
    let Some(m) = Mirror::start(&s) else { return };
    let script = format!(
        "mkdir -p src .cargo && touch src/lib.rs \
         && printf '[package]\\nname = \"user\"\\nversion = \"0.1.0\"\\nedition = \"2021\"\\n[dependencies]\\ntinycrate = {{ version = \"0.1\", registry = \"mirror\" }}\\n' > Cargo.toml \
         && printf '[registries.mirror]\\nindex = \"sparse+http://mirror.test:$PORT/index/\"\\n' > .cargo/config.toml \
         && PATH={toolchain}/bin:$PATH CARGO_HOME=$PWD/home $HOW {} fetch -q && ls home/registry/cache/*/",
        cargo.display()
    );
    for (path, out) in each_path(&s, &m, &["--allow-read", &toolchain], &script) {
        assert!(out.contains("tinycrate-0.1.0.crate"), "{path}: {out}");
    }
}

#[test]
fn git_and_curl_through_socks5_and_connect() {
    let s = Sandbox::new("m-socks");
    let Some(m) = Mirror::start(&s) else { return };
    let p = policy(&s, &m);
    s.write("ws/README", "mirror tests\n");
    let script = format!(
        "cd \"$(mktemp -d)\" && git -c http.proxy=socks5h://127.0.0.1:1080 clone -q http://mirror.test:{0}/cgi-bin/git/repo.git viasocks && cat viasocks/README; \
         curl -sS --noproxy '' -p -x http://127.0.0.1:3128 http://mirror.test:{0}/hello.txt; \
         curl -sS --socks5-hostname 127.0.0.1:1080 http://mirror.test:{0}/hello.txt",
        m.port
    );
    let o = s.run(&["--policy", &p], &["/bin/sh", "-c", &script]);
    assert_eq!(stdout(&o), "from the mirror\nhello from the mirror\nhello from the mirror\n", "{}", stderr(&o));
}
