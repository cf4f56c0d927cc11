//! Rule semantics: specificity, precedence of kinds, protect, globs, hosts, environment.

use palisade_policy::*;

use crate::util::*;

#[test]
fn most_specific_path_rule_wins() {
    let p = policy(vec![layer(
        LayerKind::User,
        r#"
[filesystem]
read = ["/data"]
write = ["/data/out"]
deny = ["/data/out/private"]
"#,
    )]);
    assert_eq!(access(&p, "/data/x"), Access::Read);
    assert_eq!(access(&p, "/data/out/y"), Access::Write);
    assert_eq!(access(&p, "/data/out/private/z"), Access::None);
    assert_eq!(access(&p, "/data/out/privateer"), Access::Write, "matching is per component");
    assert_eq!(access(&p, "/elsewhere"), Access::None, "nothing is visible unless granted");
}

#[test]
fn equal_specificity_deny_beats_protect_beats_write_beats_read() {
    let l = |body: &str| policy(vec![layer(LayerKind::User, &format!("[filesystem]\n{body}"))]);
    assert_eq!(access(&l("read = [\"/a\"]\nwrite = [\"/a\"]"), "/a/f"), Access::Write);
    assert_eq!(access(&l("write = [\"/a\"]\nread = [\"/a\"]"), "/a/f"), Access::Write);
    assert_eq!(access(&l("write = [\"/a\"]\nprotect = [\"/a\"]"), "/a/f"), Access::Read);
    assert_eq!(access(&l("protect = [\"/a\"]\ndeny = [\"/a\"]\nwrite = [\"/a\"]"), "/a/f"), Access::None);
    assert_eq!(access(&l("deny = [\"/a\"]\nread = [\"/a\"]"), "/a"), Access::None);
}

#[test]
fn protect_caps_but_never_grants() {
    let p = policy(vec![layer(
        LayerKind::User,
        r#"
[filesystem]
write = ["/w/proj"]
protect = ["/w/proj/.git/hooks", "/secret/thing"]
"#,
    )]);
    let d = p.decide_path(std::path::Path::new("/w/proj/.git/hooks/pre-commit"));
    assert_eq!(d.access, Access::Read);
    assert_eq!(d.protected_by.unwrap().origin.text, "/w/proj/.git/hooks");
    assert_eq!(d.rule.unwrap().kind, PathKind::Write);
    assert_eq!(access(&p, "/secret/thing"), Access::None, "protect on an invisible path keeps it invisible");
    // A path that does not exist yet is covered all the same.
    assert_eq!(access(&p, "/w/proj/.git/hooks/not-yet-created"), Access::Read);
}

#[test]
fn globs_deny_by_name_anywhere() {
    let p = policy(vec![layer(
        LayerKind::User,
        r#"
[filesystem]
write = ["/w/proj"]
deny = ["**/.env", "/w/proj/keys/*.pem"]
"#,
    )]);
    assert_eq!(access(&p, "/w/proj/.env"), Access::None);
    assert_eq!(access(&p, "/w/proj/sub/dir/.env"), Access::None);
    assert_eq!(access(&p, "/w/proj/.env.example"), Access::Write);
    assert_eq!(access(&p, "/w/proj/keys/a.pem"), Access::None);
    assert_eq!(access(&p, "/w/proj/keys/a.pub"), Access::Write);
    assert_eq!(access(&p, "/w/proj/keys/sub/a.pem"), Access::Write, "`*` does not cross `/`");
}

#[test]
fn decisions_name_rule_and_layer() {
    let p = policy(vec![builtin(), layer(LayerKind::User, "[filesystem]\nread = [\"/srv\"]\n")]);
    let d = p.decide_path(std::path::Path::new("/srv/data"));
    let rule = d.rule.unwrap();
    assert_eq!(rule.origin.layer, LayerKind::User);
    assert_eq!(rule.origin.site.source, "user policy.toml");
    assert_eq!(rule.origin.site.line, 2);
    assert_eq!(rule.origin.site.key, "filesystem.read");
    let text = d.to_string();
    assert!(text.contains("read-only") && text.contains("user policy"), "{text}");
}

#[test]
fn hosts_are_normalised_before_matching() {
    let p = policy(vec![layer(
        LayerKind::User,
        r#"
[network]
mode = "allowlist"
allow = ["API.Example.COM.:443", "bücher.example"]
"#,
    )]);
    assert!(allowed(&p, "api.example.com:443"));
    assert!(allowed(&p, "API.EXAMPLE.com.:443"));
    assert!(allowed(&p, "xn--bcher-kva.example:80"));
    assert!(allowed(&p, "BÜCHER.example:80"));
    assert!(!allowed(&p, "api.example.com:22"), "host:443 does not open host:22");
    assert!(Target::parse("api.example.com\0.evil:443", 443).is_err());
}

#[test]
fn deny_beats_allow_whatever_the_order_or_layer() {
    let p = policy(vec![
        layer(LayerKind::User, "[network]\nmode = \"allowlist\"\ndeny = [\"evil.example.com\"]\n"),
        layer(LayerKind::PolicyFile, "[network]\nallow = [\"*.example.com\", \"evil.example.com\"]\n"),
    ]);
    assert!(allowed(&p, "good.example.com:443"));
    let d = p.decide_net(&Target::parse("evil.example.com:443", 443).unwrap());
    assert!(!d.allowed);
    assert!(matches!(d.reason, NetReason::DeniedBy(r) if r.origin.layer == LayerKind::User));
}

#[test]
fn empty_allowlist_allows_nothing() {
    let p = policy(vec![layer(LayerKind::User, "[network]\nmode = \"allowlist\"\n")]);
    for t in ["example.com:443", "127.0.0.1:80", "[::1]:22", "localhost:8080"] {
        assert!(!allowed(&p, t), "{t}");
    }
    assert!(matches!(p.decide_net(&Target::parse("a.com:1", 1).unwrap()).reason, NetReason::NotListed));
}

#[test]
fn mode_none_denies_even_listed_hosts() {
    let p = policy(vec![layer(LayerKind::User, "[network]\nmode = \"none\"\nallow = [\"a.com\"]\n")]);
    assert!(!allowed(&p, "a.com:443"));
}

#[test]
fn ip_literals_only_match_address_rules() {
    let p = policy(vec![layer(
        LayerKind::User,
        r#"
[network]
mode = "allowlist"
allow = ["localhost", "10.0.0.0/8:5432", "[fd00::1]:443"]
"#,
    )]);
    assert!(!allowed(&p, "127.0.0.1:80"));
    assert!(allowed(&p, "10.1.2.3:5432"));
    assert!(allowed(&p, "[::ffff:10.1.2.3]:5432"), "IPv4-mapped IPv6 is the IPv4 address");
    assert!(!allowed(&p, "10.1.2.3:22"));
    assert!(allowed(&p, "[fd00::1]:443"));
    assert!(allowed(&p, "[FD00:0::1]:443"));
    assert!(Target::parse("127.1:80", 80).is_err(), "short IPv4 forms are refused, not treated as names");
}

#[test]
fn environment_is_an_allowlist_and_secrets_need_their_name() {
    let p = policy(vec![layer(
        LayerKind::User,
        r#"
[process.env]
pass = ["PATH", "LC_*", "MY_*", "MY_API_TOKEN"]
deny = ["*TOKEN*", "*SECRET*"]
set = { PALISADE_SANDBOX = "1", PATH = "/usr/bin" }
"#,
    )]);
    let parent = [
        ("PATH", "/home/u/bin:/usr/bin"),
        ("LC_ALL", "C"),
        ("MY_VAR", "x"),
        ("MY_SECRET", "s"),
        ("MY_API_TOKEN", "t"),
        ("GITHUB_TOKEN", "g"),
        ("SSH_AUTH_SOCK", "/tmp/agent"),
        ("my_secret_lower", "s"),
    ]
    .map(|(k, v)| (k.into(), v.into()));
    let env = p.environment(parent);
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["LC_ALL", "MY_API_TOKEN", "MY_VAR", "PALISADE_SANDBOX", "PATH"]);
    assert_eq!(env.iter().find(|(k, _)| k == "PATH").unwrap().1, "/usr/bin", "set beats pass");
    assert!(matches!(p.decide_env("MY_SECRET"), EnvDecision::Secret { .. }));
    assert!(matches!(p.decide_env("GITHUB_TOKEN"), EnvDecision::NotPassed));
}

#[test]
fn flags_are_the_top_layer() {
    use palisade_policy::load::Flags;
    let p = policy(vec![
        builtin(),
        flags(Flags {
            allow_net: vec!["api.openai.com".into()],
            allow_read: vec!["/srv/ref".into()],
            deny: vec!["src/secret".into()],
            env: vec!["EDITOR_X=vi".into()],
            ..Flags::default()
        }),
    ]);
    assert!(allowed(&p, "api.openai.com:443"));
    assert_eq!(p.mode(), NetMode::Allowlist);
    assert_eq!(access(&p, "/srv/ref/a"), Access::Read);
    assert_eq!(
        access(&p, "/w/proj/src/secret/k"),
        Access::None,
        "relative flag paths are relative to the current directory"
    );
    let d = p.decide_net(&Target::parse("api.openai.com:443", 443).unwrap());
    assert!(
        matches!(d.reason, NetReason::AllowedBy(r) if r.origin.layer == LayerKind::Flags && r.origin.site.key == "--allow-net")
    );
}

#[test]
fn contradictory_flags_are_refused() {
    use palisade_policy::load::{Flags, flags_layer};
    let f = Flags { net: Some("none".into()), allow_net: vec!["a.com".into()], ..Flags::default() };
    let e = flags_layer(&f, &vars(), &Lexical, std::path::Path::new(WS)).unwrap_err().to_string();
    assert!(e.contains("--net none") && e.starts_with("command line: --net"), "{e}");
    let f = Flags { allow_net: vec!["*".into()], ..Flags::default() };
    let e = flags_layer(&f, &vars(), &Lexical, std::path::Path::new(WS)).unwrap_err().to_string();
    assert!(e.starts_with("command line: --allow-net: `*`"), "{e}");
}

#[test]
fn workspace_must_not_be_home_or_root() {
    use std::path::Path;
    let r = |ws: &str| resolve(Path::new(ws), Path::new(HOME), vec![], ResolveOptions::default());
    assert!(r("/home/u").unwrap_err().to_string().contains("home directory"));
    assert!(r("/home").unwrap_err().to_string().contains("home directory"));
    assert!(r("/").unwrap_err().to_string().contains("root directory"));
    assert!(r("/home/u/proj").is_ok());
}

#[test]
fn later_layers_replace_single_values() {
    let p = policy(vec![
        layer(LayerKind::User, "[process]\nmemory = \"4GiB\"\npids = 100\n"),
        layer(LayerKind::PolicyFile, "[process]\nmemory = \"8GiB\"\n"),
    ]);
    assert_eq!(p.limits.memory.as_ref().unwrap().value, 8 << 30);
    assert_eq!(p.limits.memory.as_ref().unwrap().origin.layer, LayerKind::PolicyFile);
    assert_eq!(p.limits.pids.as_ref().unwrap().value, 100);
}

#[test]
fn network_budgets_are_keys_that_a_project_may_only_lower() {
    use std::time::Duration;
    let user =
        "[network]\nmode = \"allowlist\"\nallow = [\"a.test:443\"]\nmax_upload = \"1GiB\"\nidle_timeout = \"5m\"\n";
    let p = policy(vec![
        layer(LayerKind::User, user),
        layer(
            LayerKind::Project,
            "[network]\nmax_upload = \"10MiB\"\nhandshake_timeout = \"2s\"\nmax_connections = 8\n",
        ),
    ]);
    let (c, h, i, u, d) = p.net_budgets.effective();
    assert_eq!((c, h, i, u), (8, Duration::from_secs(2), Duration::from_secs(300), 10 << 20));
    assert_eq!(d, palisade_policy::model::NetBudgets::DEFAULT_MAX_DOWNLOAD);
    // Above a lower layer's value, or above the default where none set one: refused.
    for raise in [
        "[network]\nmax_upload = \"2GiB\"\n",
        "[network]\nidle_timeout = \"1h\"\n",
        "[network]\nmax_download = \"1TiB\"\n",
        "[network]\nmax_connections = 5000\n",
        "[network]\nhandshake_timeout = \"1m\"\n",
    ] {
        let r = resolve_layers(vec![layer(LayerKind::User, user), layer(LayerKind::Project, raise)], false);
        let e = r.expect_err(raise).to_string();
        assert!(e.contains("may only narrow") && e.contains("network."), "{raise}: {e}");
    }
    // Bad values name the key.
    for (bad, key) in [
        ("[network]\nidle_timeout = \"0s\"\n", "network.idle_timeout"),
        ("[network]\nhandshake_timeout = \"unlimited\"\n", "network.handshake_timeout"),
        ("[network]\nmax_connections = 0\n", "network.max_connections"),
        ("[network]\nmax_upload = \"lots\"\n", "network.max_upload"),
    ] {
        let e = parse_layer(bad, "t.toml", LayerKind::User, &vars(), &Lexical).map(|_| ()).expect_err(bad).to_string();
        assert!(e.contains(key), "{bad}: {e}");
    }
}
