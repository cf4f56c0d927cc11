//! `palisade policy ...`

use crate::util::*;

#[test]
fn explain_ssh_key_is_denied_by_the_builtin_layer() {
    let s = Sandbox::new("explain-ssh");
    let key = s.home().join(".ssh/id_rsa");
    let o = s.palisade(&["policy", "explain", key.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("denied (invisible)"), "{out}");
    assert!(out.contains("deny \"~/.ssh\"") && out.contains("built-in default"), "{out}");
}

#[test]
fn explain_host_denied_by_default_and_allowed_by_flag() {
    let s = Sandbox::new("explain-host");
    let out = stdout(&s.palisade(&["policy", "explain", "api.openai.com:443"]));
    assert!(out.starts_with("api.openai.com:443: denied"), "{out}");
    assert!(out.contains("network mode \"none\"") && out.contains("built-in default"), "{out}");
    let out = stdout(&s.palisade(&["policy", "explain", "api.openai.com:443", "--allow-net", "api.openai.com"]));
    assert!(out.starts_with("api.openai.com:443: allowed"), "{out}");
    assert!(out.contains("command line --allow-net"), "{out}");
}

#[test]
fn explain_json_is_machine_readable() {
    let s = Sandbox::new("explain-json");
    let o = s.palisade(&["policy", "explain", "--json", "--path", ".git/config"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["access"], "read");
    assert_eq!(v["protected_by"]["origin"]["layer"]["kind"], "builtin");
    let o =
        s.palisade(&["policy", "explain", "--json", "--host", "a.example.com:22", "--allow-net", "*.example.com:443"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["allowed"], false);
    assert_eq!(v["reason"]["kind"], "not_listed");
}

#[test]
fn show_tags_rules_with_layers_and_accepts_run_options() {
    let s = Sandbox::new("show");
    s.write("home/.config/palisade/policy.toml", "[filesystem]\nread = [\"/srv/shared\"]\n");
    s.write("ws/.palisade.toml", "[filesystem]\ndeny = [\"data\"]\n");
    let o = s.palisade(&["policy", "show", "--deny", "/srv/shared/private", "--allow-net", "pypi.org:443"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("user policy"), "{out}");
    assert!(out.contains("/srv/shared") && out.contains("filesystem.read"), "{out}");
    assert!(out.contains("project policy") && out.contains("/ws/data"), "{out}");
    assert!(out.contains("command line --deny"), "{out}");
    assert!(out.contains("network: allowlist"), "{out}");
    let o = s.palisade(&["policy", "show", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["workspace"], s.ws().to_str().unwrap());
    assert!(v["rules"]["paths"].as_array().unwrap().len() > 50);
}

#[test]
fn project_file_that_widens_is_refused_naming_the_key() {
    let s = Sandbox::new("widen");
    s.write("ws/.palisade.toml", "[filesystem]\nread = [\"~/.ssh\"]\n");
    let o = s.palisade(&["run", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(err.contains(".palisade.toml:2:9: filesystem.read") && err.contains("may only narrow"), "{err}");
    let o = s.palisade(&["policy", "explain", "--trust-project", s.home().join(".ssh/x").to_str().unwrap()]);
    assert!(stdout(&o).contains("denied"), "the secret denylist still wins at equal depth: {}", stdout(&o));
}

#[test]
fn malformed_user_policy_names_file_line_and_key() {
    let s = Sandbox::new("malformed");
    s.write("home/.config/palisade/policy.toml", "[network]\nmode = \"allowlist\"\nallow = [\"ok.com\", \"*.com\"]\n");
    let o = s.palisade(&["policy", "show"]);
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(err.contains("palisade/policy.toml:3:20: network.allow: `*.com` is too broad"), "{err}");
    s.write("home/.config/palisade/policy.toml", "[filesytem]\n");
    let err = stderr(&s.palisade(&["policy", "show"]));
    assert!(err.contains("policy.toml:1:2: filesytem: unknown field `filesytem`"), "{err}");
}

#[test]
fn unreadable_user_policy_fails_closed() {
    let s = Sandbox::new("unreadable");
    std::fs::create_dir_all(s.home().join(".config/palisade/policy.toml")).unwrap();
    let o = s.palisade(&["policy", "show"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("cannot read policy file"), "{}", stderr(&o));
}

#[test]
fn check_reports_errors_with_exit_1() {
    let s = Sandbox::new("check");
    s.write("ws/good.toml", "[filesystem]\ndeny = [\"**/.env\"]\n");
    s.write("ws/bad.toml", "[process]\nmemory = \"lots\"\n");
    s.write("ws/widens.toml", "[network]\nmode = \"allowlist\"\n");
    let o = s.palisade(&["policy", "check", "good.toml"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("good.toml: ok"));
    let o = s.palisade(&["policy", "check", "bad.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("bad.toml:2:10: process.memory"), "{}", stderr(&o));
    assert_eq!(s.palisade(&["policy", "check", "widens.toml"]).status.code(), Some(0));
    let o = s.palisade(&["policy", "check", "--project", "widens.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("network.mode"), "{}", stderr(&o));
}

#[test]
fn default_prints_the_embedded_policy_which_checks_clean() {
    let s = Sandbox::new("default");
    let o = s.palisade(&["policy", "default"]);
    assert!(stdout(&o).contains("[filesystem]"));
    s.write("ws/default.toml", &stdout(&o));
    assert_eq!(s.palisade(&["policy", "check", "default.toml"]).status.code(), Some(0));
}

#[test]
fn profiles_apply_and_unknown_profiles_fail() {
    let s = Sandbox::new("profiles");
    let out = stdout(&s.palisade(&["policy", "explain", "api.anthropic.com", "--profile", "claude"]));
    assert!(out.contains("allowed") && out.contains("profile `claude`"), "{out}");
    let o = s.palisade(&["policy", "show", "--profile", "nope"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("unknown profile `nope`"));
    s.write(
        "home/.config/palisade/profiles/mine.toml",
        "[network]\nmode = \"allowlist\"\nallow = [\"internal.example:443\"]\n",
    );
    let out = stdout(&s.palisade(&["policy", "explain", "internal.example", "--profile", "mine"]));
    assert!(out.contains("allowed"), "{out}");
}

#[test]
fn workspace_in_home_is_refused() {
    let s = Sandbox::new("home-ws");
    let o = s.palisade_in(&s.home(), &["policy", "show"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("home directory"), "{}", stderr(&o));
}

#[test]
fn help_exists_for_every_command() {
    let s = Sandbox::new("help");
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["policy", "--help"],
        &["policy", "explain", "--help"],
        &["check", "--help"],
    ] {
        let o = s.palisade(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(stdout(&o).contains("Usage"), "{args:?}");
    }
    assert_eq!(s.palisade(&["bogus"]).status.code(), Some(125));
}

#[test]
fn settings_without_effect_are_said_where_the_user_looks() {
    let s = Sandbox::new("ineffective");
    s.write("ws/allow.toml", "[network]\nallow = [\"a.example\"]\n");
    let o = s.palisade(&["policy", "check", "allow.toml"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("warning: [network] allow has 1 entry, but this file sets no mode"), "{}", stdout(&o));
    let o = s.palisade(&["policy", "show", "--policy", "allow.toml"]);
    assert!(stdout(&o).contains("nothing is reachable; set [network] mode = \"allowlist\""), "{}", stdout(&o));
    let o = s.palisade(&["run", "--policy", "allow.toml", "--", "true"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("but the network mode is set to \"none\""), "{}", stderr(&o));
    // With the mode set, nothing to say.
    s.write("ws/on.toml", "[network]\nmode = \"allowlist\"\nallow = [\"a.example\"]\n");
    assert!(!stdout(&s.palisade(&["policy", "check", "on.toml"])).contains("warning"));
}

#[test]
fn explain_tells_the_truth_about_loopback_decoys_and_the_allowlist() {
    let s = Sandbox::new("explain-truth");
    let out = stdout(&s.palisade(&["policy", "explain", "localhost:8000"]));
    assert!(out.contains("inside, the sandbox's own loopback: reachable"), "{out}");
    assert!(out.contains("the host's own port 8000 is not reachable"), "{out}");
    let out = stdout(&s.palisade(&["policy", "explain", "localhost:8000", "--allow-net", "localhost:8000"]));
    assert!(out.contains("the host's port, allowed") && out.contains("is the gateway's"), "{out}");
    let out = stdout(&s.palisade(&["policy", "explain", "evil.example", "--profile", "claude"]));
    assert!(out.contains("none matches") && !out.contains("empty"), "{out}");
    let out = stdout(&s.palisade(&["policy", "explain", "evil.example", "--net", "allowlist"]));
    assert!(out.contains("which is empty"), "{out}");
    let out = stdout(&s.palisade(&["policy", "explain", "~/.ssh/id_rsa"]));
    assert!(out.contains("decoy:") && out.contains("monitor.tripwires"), "{out}");
}

#[test]
fn each_profile_grants_its_agent_what_it_needs_and_no_more() {
    let s = Sandbox::new("profile-grants");
    let explain =
        |profile: &str, target: &str| stdout(&s.palisade(&["policy", "explain", "--profile", profile, target]));
    for (profile, state, config, host, quiet) in [
        ("codex", "~/.codex/auth.json", "~/.codex/config.toml", "api.openai.com", "ab.chatgpt.com"),
        ("claude", "~/.claude/projects/x", "~/.claude/settings.json", "platform.claude.com", "statsig.anthropic.com"),
        (
            "gemini",
            "~/.gemini/history/x",
            "~/.gemini/trustedFolders.json",
            "generativelanguage.googleapis.com",
            "play.googleapis.com",
        ),
        ("opencode", "~/.local/share/opencode/auth.json", "~/.config/opencode/opencode.json", "models.opencode.ai", ""),
        ("aider", "~/.aider/analytics.json", "~/.aider/oauth-keys.env", "api.openai.com", "us.i.posthog.com"),
    ] {
        // The agent's state: read-only on the host, written inside into the workspace's
        // private layer (nothing the agent writes reaches the host's agent).
        let out = explain(profile, state);
        assert!(out.contains("read-only") && out.contains("filesystem.cache"), "{profile}: {out}");
        assert!(out.contains("private layer"), "{profile}: {out}");
        let out = explain(profile, config);
        assert!(out.contains("read-only"), "{profile}: its configuration must not be writable on the host: {out}");
        assert!(explain(profile, host).contains("allowed"), "{profile}");
        if !quiet.is_empty() {
            let out = explain(profile, quiet);
            assert!(out.contains("denied") && out.contains("quiet:"), "{profile}: {out}");
        }
        // No secrets, no other host. (Nothing else of a real home either; this test's home
        // lies under the private ${tmp}, so other home paths explain as that.)
        assert!(explain(profile, "~/.ssh/id_rsa").contains("denied"), "{profile}");
        assert!(explain(profile, "evil.example").contains("denied"), "{profile}");
    }
    // aider on the host acts on a project's .env (AIDER_* lines are options) and its
    // repository map's pickle: read-only inside under its profile; opencode's project
    // plugins and configuration under every profile.
    for (profile, path) in [("aider", ".env"), ("aider", ".aider.tags.cache.v4"), ("generic", ".opencode/plugin/p.js")]
    {
        let out = explain(profile, path);
        assert!(out.contains("read-only"), "{profile} {path}: {out}");
    }
    // generic: the common APIs and their keys, nothing of the home.
    assert!(explain("generic", "api.mistral.ai").contains("allowed"));
    let out = stdout(&s.palisade(&["policy", "show", "--profile", "generic"]));
    assert!(out.contains("MISTRAL_API_KEY"), "{out}");
    assert!(!out.lines().any(|l| l.contains("<profile generic>") && l.contains("filesystem.")), "{out}");
}

#[test]
fn profiles_lists_the_built_in_ones_and_yours() {
    let s = Sandbox::new("profiles-list");
    s.write("home/.config/palisade/profiles/mine.toml", "# My agent, my way.\n[network]\nmode = \"none\"\n");
    s.write("home/.config/palisade/profiles/codex.toml", "# Codex, my way.\n");
    let out = stdout(&s.palisade(&["profiles"]));
    for name in ["aider ", "claude ", "codex ", "gemini ", "generic ", "opencode "] {
        assert!(out.lines().any(|l| l.starts_with(name) && l.contains("built-in")), "{name}: {out}");
    }
    assert!(out.lines().any(|l| l.starts_with("mine ") && l.contains("My agent, my way.")), "{out}");
    assert!(out.contains("(replaced by yours in"), "{out}");
}
