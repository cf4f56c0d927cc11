//! The built-in default policy is safe on a real machine.

use palisade_policy::load::Flags;
use palisade_policy::*;

use crate::util::*;

fn default_policy() -> ResolvedPolicy {
    policy(vec![builtin()])
}

#[test]
fn secrets_are_invisible_by_the_builtin_layer() {
    let p = default_policy();
    for s in [
        "/home/u/.ssh/id_rsa",
        "/home/u/.aws/credentials",
        "/home/u/.config/gh/hosts.yml",
        "/home/u/.git-credentials",
        "/home/u/.netrc",
        "/home/u/.docker/config.json",
        "/home/u/.kube/config",
        "/home/u/.bash_history",
        "/home/u/.cargo/credentials.toml",
        "/home/u/.config/palisade/policy.toml",
        "/home/u/.local/state/palisade/x",
        "/etc/shadow",
        "/etc/ssh/ssh_host_ed25519_key",
        "/home/u/.mozilla/firefox/p/logins.json",
    ] {
        let d = p.decide_path(std::path::Path::new(s));
        assert_eq!(d.access, Access::None, "{s}");
        if let Some(r) = d.rule {
            assert_eq!(r.origin.layer, LayerKind::Builtin, "{s}");
        }
    }
}

#[test]
fn secret_denylist_wins_over_a_user_grant_of_a_parent() {
    let p = policy(vec![builtin(), layer(LayerKind::User, "[filesystem]\nread = [\"~\"]\nwrite = [\"~/.cargo\"]\n")]);
    assert_eq!(access(&p, "/home/u/notes.txt"), Access::Read);
    assert_eq!(access(&p, "/home/u/.ssh/id_rsa"), Access::None);
    assert_eq!(access(&p, "/home/u/.cargo/credentials.toml"), Access::None);
    // The built-in cache beneath the user's write grant does not take it away.
    assert_eq!(access(&p, "/home/u/.cargo/registry/x"), Access::Write);
    assert!(!p.decide_path(std::path::Path::new("/home/u/.cargo/registry/x")).rule.unwrap().cache);
    assert_eq!(access(&p, "/home/u/.bashrc"), Access::Read, "shell rc files stay read-only");
}

#[test]
fn home_is_invisible_except_toolchains() {
    let p = default_policy();
    assert_eq!(access(&p, "/home/u/Documents/taxes.pdf"), Access::None);
    assert_eq!(access(&p, "/home/u/.cargo/bin/cargo"), Access::Read);
    assert_eq!(access(&p, "/home/u/.gitconfig"), Access::Read);
    assert_eq!(access(&p, "/home/u/.bashrc"), Access::None);
    // Toolchain caches: read-only on the host, with a private layer inside.
    for c in ["/home/u/.cargo/registry/src/x", "/home/u/.cargo/git/db", "/home/u/.npm/_cacache", "/home/u/go/pkg/mod/m"]
    {
        let d = p.decide_path(std::path::Path::new(c));
        assert_eq!(d.access, Access::Read, "{c}");
        assert!(d.rule.unwrap().cache, "{c}");
    }
}

#[test]
fn system_read_only_workspace_and_tmp_writable() {
    let p = default_policy();
    assert_eq!(access(&p, "/usr/bin/git"), Access::Read);
    assert_eq!(access(&p, "/etc/passwd"), Access::Read);
    assert_eq!(access(&p, "/w/proj/src/main.rs"), Access::Write);
    assert_eq!(access(&p, "/tmp/build.o"), Access::Write);
    assert_eq!(access(&p, "/w/proj-evil/x"), Access::None);
    assert_eq!(access(&p, "/var/lib/docker"), Access::None);
}

#[test]
fn files_that_run_code_later_are_read_only_in_the_workspace() {
    let p = default_policy();
    for f in [
        ".git/hooks/pre-commit",
        ".git/config",
        ".vscode/tasks.json",
        ".idea/workspace.xml",
        ".envrc",
        ".claude/settings.json",
        ".codex/config.toml",
        ".gemini/settings.json",
        ".cursor/rules",
        ".mcp.json",
        ".palisade.toml",
        ".git/modules/sub/hooks/post-checkout",
    ] {
        assert_eq!(access(&p, &format!("{WS}/{f}")), Access::Read, "{f}");
    }
    assert_eq!(access(&p, &format!("{WS}/.git/objects/ab/cdef")), Access::Write);
    assert_eq!(access(&p, &format!("{WS}/.github/workflows/ci.yml")), Access::Write);
}

#[test]
fn network_is_off_by_default_and_one_flag_opens_one_host() {
    let p = default_policy();
    assert_eq!(p.mode(), NetMode::None);
    let d = p.decide_net(&Target::parse("api.openai.com:443", 443).unwrap());
    assert!(!d.allowed);
    assert!(matches!(d.reason, NetReason::ModeNone { set_by: Some(s) } if s.origin.layer == LayerKind::Builtin));
    let p = policy(vec![builtin(), flags(Flags { allow_net: vec!["api.openai.com".into()], ..Flags::default() })]);
    assert!(allowed(&p, "api.openai.com:443"));
    assert!(!allowed(&p, "openai.com:443"));
    assert!(!allowed(&p, "api.openai.com.evil.net:443"));
}

#[test]
fn environment_is_scrubbed() {
    let p = default_policy();
    let parent = [
        ("PATH", "/usr/bin"),
        ("HOME", "/home/u"),
        ("LC_CTYPE", "C.UTF-8"),
        ("TERM", "xterm"),
        ("GITHUB_TOKEN", "x"),
        ("AWS_SECRET_ACCESS_KEY", "x"),
        ("OPENAI_API_KEY", "x"),
        ("SSH_AUTH_SOCK", "/x"),
        ("DBUS_SESSION_BUS_ADDRESS", "unix:x"),
        ("DATABASE_PASSWORD", "x"),
        ("LC_SECRET_TOKEN", "x"),
    ]
    .map(|(k, v)| (k.into(), v.into()));
    let names: Vec<String> = p.environment(parent).into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, ["HOME", "LC_CTYPE", "PATH", "TERM"]);
}

#[test]
fn default_monitor_rules() {
    let p = default_policy();
    assert!(
        p.monitor_rules.iter().any(|r| r.when == monitor::Condition::Tripwire && r.action == monitor::Action::Kill)
    );
    assert!(!p.tripwires.is_empty());
}

#[test]
fn every_builtin_profile_parses_and_keeps_secrets_denied() {
    for (name, text) in builtin::PROFILES {
        let prof = parse_layer(text, name, LayerKind::Profile(name.to_string()), &vars(), &Lexical)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let p = policy(vec![builtin(), prof]);
        assert_eq!(access(&p, "/home/u/.ssh/id_rsa"), Access::None, "{name}");
        assert_eq!(p.mode(), NetMode::Allowlist, "{name}");
        assert_eq!(access(&p, &format!("{WS}/.git/hooks/x")), Access::Read, "{name}");
    }
}

/// Windows' default policy parses, and keeps every protection of the Linux default that is
/// not about Linux's own files: each `${writable}/NAME` row, and the secrets Windows has.
#[test]
fn the_windows_default_parses_and_keeps_every_writable_protection() {
    let rows = |text: &str, key: &str| -> Vec<String> {
        let v: toml::Value = toml::from_str(text).unwrap();
        v["filesystem"][key].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect()
    };
    let win = palisade_policy::builtin::WINDOWS_DEFAULT_POLICY;
    let unix = palisade_policy::builtin::UNIX_DEFAULT_POLICY;
    parse_layer(win, "<built-in windows>", LayerKind::Builtin, &crate::util::vars(), &Lexical).unwrap();
    let win_protect = rows(win, "protect");
    for r in rows(unix, "protect").iter().filter(|r| r.starts_with("${writable}/")) {
        assert!(win_protect.contains(r), "{r} is protected on Linux but not on Windows");
    }
    let win_deny = rows(win, "deny");
    for r in [
        "~/.ssh",
        "~/.aws",
        "~/AppData/Roaming/Microsoft/Protect",
        "~/AppData/Roaming/Microsoft/Credentials",
        "${state}/palisade",
    ] {
        assert!(win_deny.iter().any(|d| d == r), "{r} is not denied on Windows");
    }
    // Linux's system paths mean nothing on Windows and must not be there.
    assert!(!win.contains("\"/usr\"") && !win.contains("\"/etc"));
}
