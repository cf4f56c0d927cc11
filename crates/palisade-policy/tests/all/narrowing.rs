//! The project layer may only narrow: unit cases and a property test.

use palisade_policy::*;
use proptest::prelude::*;

use crate::util::*;

fn with_project(text: &str, trust: bool) -> Result<ResolvedPolicy, PolicyError> {
    resolve_layers(vec![builtin(), layer(LayerKind::Project, text)], trust)
}

fn widening(text: &str) -> String {
    match with_project(text, false) {
        Err(e @ PolicyError::Widening { .. }) => e.to_string(),
        other => panic!("expected a widening error for {text:?}, got {other:?}"),
    }
}

#[test]
fn widening_keys_are_refused_by_name() {
    let e = widening("[filesystem]\nread = [\"~/.ssh\"]\n");
    assert!(
        e.starts_with("Project.toml:2:9: filesystem.read:")
            || e.starts_with("project policy.toml:2:9: filesystem.read:"),
        "{e}"
    );
    assert!(e.contains("--trust-project"), "{e}");
    assert!(widening("[filesystem]\nwrite = [\"/usr/bin\"]\n").contains("filesystem.write"));
    assert!(widening("[filesystem]\nwrite = [\".git/hooks\"]\n").contains("filesystem.write"));
    assert!(widening("[network]\nmode = \"allowlist\"\n").contains("network.mode"));
    assert!(widening("[network]\nallow = [\"evil.com\"]\n").contains("network.allow"));
    assert!(widening("[network.hosts]\n\"api.openai.com\" = \"127.0.0.1\"\n").contains("network.hosts"));
    assert!(widening("[process.env]\npass = [\"GITHUB_TOKEN\"]\n").contains("process.env.pass"));
    assert!(widening("[monitor]\naudit = \"/tmp/x\"\n").contains("monitor.audit"));
    assert!(widening("[windows]\ntier = \"restricted_token\"\n").contains("windows.tier"));
}

#[test]
fn the_windows_tier_is_chosen_by_the_user_and_spelled_exactly() {
    // A project may keep the AppContainer (it is the default); only the user's layers may
    // choose the weaker tier.
    let p = with_project("[windows]\ntier = \"app_container\"\n", false).unwrap();
    assert_eq!(p.windows_tier(), WindowsTier::AppContainer);
    let user = layer(LayerKind::User, "[windows]\ntier = \"restricted_token\"\n");
    let p = resolve_layers(vec![builtin(), user], false).unwrap();
    assert_eq!(p.windows_tier(), WindowsTier::RestrictedToken);
    let e = parse_layer("[windows]\ntier = \"none\"\n", "user.toml", LayerKind::User, &vars(), &Lexical).unwrap_err();
    assert!(
        e.to_string().starts_with("user.toml:2:8: windows.tier:") && e.to_string().contains("restricted_token"),
        "{e}"
    );
}

#[test]
fn narrowing_keys_are_accepted() {
    let p = with_project(
        r#"
[filesystem]
read = ["src"]
write = ["build"]
deny = ["**/.env", "data"]
protect = ["Makefile"]
[network]
mode = "none"
deny = ["evil.com"]
[process]
memory = "1GiB"
[process.env]
pass = ["PATH", "LC_*"]
deny = ["MY_*"]
set = { CI = "1" }
[monitor]
tripwires = ["secrets.txt"]
[[monitor.rules]]
when = "exec matches \"curl *\""
action = "kill"
"#,
        false,
    )
    .unwrap();
    assert_eq!(access(&p, &format!("{WS}/data/x")), Access::None);
    assert_eq!(access(&p, &format!("{WS}/Makefile")), Access::Read);
}

#[test]
fn project_allow_must_be_inside_a_lower_allow() {
    let lower =
        layer(LayerKind::User, "[network]\nmode = \"allowlist\"\nallow = [\"*.github.com\", \"pypi.org:443\"]\n");
    let ok = layer(LayerKind::Project, "[network]\nallow = [\"api.github.com:443\", \"pypi.org:443\"]\n");
    assert!(resolve_layers(vec![builtin(), lower.clone(), ok], false).is_ok());
    let bad = layer(LayerKind::Project, "[network]\nallow = [\"pypi.org\"]\n");
    assert!(matches!(resolve_layers(vec![builtin(), lower, bad], false), Err(PolicyError::Widening { .. })));
}

#[test]
fn project_limits_may_only_go_down() {
    let lower = layer(LayerKind::User, "[process]\nmemory = \"4GiB\"\n");
    let up = layer(LayerKind::Project, "[process]\nmemory = \"8GiB\"\n");
    let e = resolve_layers(vec![lower, up], false).unwrap_err().to_string();
    assert!(e.contains("process.memory") && e.contains("raises memory"), "{e}");
}

#[test]
fn trust_project_lets_it_widen() {
    let p =
        with_project("[filesystem]\nread = [\"/srv\"]\n[network]\nmode = \"allowlist\"\nallow = [\"a.com\"]\n", true)
            .unwrap();
    assert_eq!(access(&p, "/srv/x"), Access::Read);
    assert!(allowed(&p, "a.com:443"));
}

// ---- property: for any project layer that is accepted, access only shrinks ----

const PATHS: &[&str] = &[
    "/w/proj",
    "/w/proj/src",
    "/w/proj/src/a.rs",
    "/w/proj/.git",
    "/w/proj/.git/hooks",
    "/w/proj/.git/hooks/pre-commit",
    "/w/proj/.git/config",
    "/w/proj/.env",
    "/w/proj/sub/.env",
    "/w/proj/build",
    "/home/u",
    "/home/u/.ssh",
    "/home/u/.ssh/id_rsa",
    "/home/u/.cargo",
    "/home/u/.cargo/credentials.toml",
    "/home/u/.bashrc",
    "/usr",
    "/usr/bin/git",
    "/etc/shadow",
    "/tmp",
    "/tmp/x",
    "/srv",
    "/srv/data",
];
const PATTERNS: &[&str] = &[
    "src",
    "src/a.rs",
    ".git",
    ".git/hooks",
    ".git/config",
    "**/.env",
    "sub/*",
    "~",
    "~/.ssh",
    "~/.cargo",
    "~/.bashrc",
    "/usr",
    "/usr/bin",
    "/etc",
    "/tmp",
    "/srv",
    "/w",
    "build",
    "**/hooks",
];
const HOSTS: &[&str] = &[
    "api.openai.com",
    "*.openai.com",
    "a.example.com:443",
    "*.example.com",
    "10.0.0.0/8",
    "127.0.0.1",
    "pypi.org:443",
];
const TARGETS: &[&str] = &[
    "api.openai.com:443",
    "chat.openai.com:443",
    "a.example.com:443",
    "a.example.com:22",
    "b.example.com:443",
    "10.1.1.1:80",
    "127.0.0.1:8080",
    "pypi.org:443",
];
const ENV: &[&str] = &["PATH", "HOME", "LC_*", "GITHUB_TOKEN", "MY_*", "OPENAI_API_KEY", "AWS_REGION"];
const ENV_NAMES: &[&str] =
    &["PATH", "HOME", "LC_ALL", "GITHUB_TOKEN", "MY_VAR", "OPENAI_API_KEY", "AWS_REGION", "TERM"];

fn quoted(items: &[&str]) -> String {
    items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
}

prop_compose! {
    fn project_text()(
        read in proptest::sample::subsequence(PATTERNS, 0..4),
        write in proptest::sample::subsequence(PATTERNS, 0..4),
        deny in proptest::sample::subsequence(PATTERNS, 0..3),
        protect in proptest::sample::subsequence(PATTERNS, 0..3),
        mode in proptest::option::of(prop_oneof![Just("none"), Just("allowlist")]),
        allow in proptest::sample::subsequence(HOSTS, 0..3),
        ndeny in proptest::sample::subsequence(HOSTS, 0..2),
        pass in proptest::sample::subsequence(ENV, 0..3),
        edeny in proptest::sample::subsequence(ENV, 0..2),
    ) -> String {
        let keep = |v: Vec<&'static str>| v.into_iter().filter(|p| !p.contains('*') || p.starts_with("**")).collect::<Vec<_>>();
        let mut t = format!(
            "[filesystem]\nread = [{}]\nwrite = [{}]\ndeny = [{}]\nprotect = [{}]\n[network]\nallow = [{}]\ndeny = [{}]\n",
            quoted(&keep(read).into_iter().filter(|p| !p.contains('*')).collect::<Vec<_>>()),
            quoted(&keep(write).into_iter().filter(|p| !p.contains('*')).collect::<Vec<_>>()),
            quoted(&deny), quoted(&protect), quoted(&allow), quoted(&ndeny),
        );
        if let Some(m) = mode {
            t.push_str(&format!("mode = {m:?}\n"));
        }
        t.push_str(&format!("[process.env]\npass = [{}]\ndeny = [{}]\n", quoted(&pass), quoted(&edeny)));
        t
    }
}

prop_compose! {
    fn lower_text()(
        read in proptest::sample::subsequence(PATTERNS, 0..3),
        allow in proptest::sample::subsequence(HOSTS, 0..4),
        open in any::<bool>(),
    ) -> String {
        let read: Vec<&str> = read.into_iter().filter(|p| !p.contains('*')).collect();
        format!(
            "[filesystem]\nread = [{}]\n[network]\nmode = {:?}\nallow = [{}]\n",
            quoted(&read), if open { "allowlist" } else { "none" }, quoted(&allow),
        )
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn an_accepted_project_layer_never_widens(lower in lower_text(), project in project_text()) {
        let base = vec![builtin(), layer(LayerKind::User, &lower)];
        let without = resolve_layers(base.clone(), false).unwrap();
        let mut with_layers = base;
        with_layers.push(layer(LayerKind::Project, &project));
        let Ok(with) = resolve_layers(with_layers, false) else { return Ok(()) };
        for p in PATHS {
            let (a, b) = (access(&with, p), access(&without, p));
            prop_assert!(a <= b, "{p}: {a:?} with the project layer, {b:?} without\n{project}");
        }
        for t in TARGETS {
            prop_assert!(!allowed(&with, t) || allowed(&without, t), "{t} allowed only with the project layer\n{project}");
        }
        for n in ENV_NAMES {
            let passed = |p: &ResolvedPolicy| matches!(p.decide_env(n), EnvDecision::Passed(_));
            prop_assert!(!passed(&with) || passed(&without), "{n} passed only with the project layer\n{project}");
        }
    }
}
