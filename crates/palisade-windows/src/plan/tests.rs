//! The Windows plan from views with every kind of entry, on every OS. The golden file
//! (`tests/golden/appcontainer.json`) is the whole plan of one view; rewrite it with
//! `PALISADE_BLESS=1 cargo test -p palisade-windows` and read the diff.

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_policy::model::Placeholder;
use palisade_policy::winpath::WinPath;
use palisade_sandbox::Limits;
use palisade_sandbox::view::{Entry, FsView, ViewError};

use super::rights::{self, AceKind};
use super::*;

fn w(p: &str) -> WinPath {
    WinPath::parse(p).unwrap()
}

fn facts() -> HostFacts {
    HostFacts {
        system_root: w(r"C:\Windows"),
        program_dirs: vec![w(r"C:\Program Files"), w(r"C:\Program Files (x86)"), w(r"C:\ProgramData")],
        profile: w(r"C:\Users\me"),
        temp: w(r"C:\Users\me\AppData\Local\Temp"),
        onedrive: vec![w(r"C:\Users\me\OneDrive")],
        state: w(r"C:\Users\me\AppData\Local\palisade\workspaces\0123"),
    }
}

const TMP: &str = r"C:\Users\me\AppData\Local\Temp";
const WS: &str = r"C:\src\repo";

fn host(path: &str, writable: bool) -> Entry {
    Entry::Host { path: path.into(), writable }
}

/// One view with every kind of entry the policy can produce.
fn every_entry() -> FsView {
    FsView {
        entries: vec![
            host(r"C:\Program Files\Git", false),
            Entry::Private { path: r"C:\Users\me".into(), size: 1 << 30 },
            Entry::Private { path: TMP.into(), size: 2 << 30 },
            host(r"C:\Users\me\.cargo", false),
            Entry::Cache {
                path: r"C:\Users\me\.cargo\registry".into(),
                upper: "unused".into(),
                work: "unused".into(),
                lower: true,
            },
            Entry::Hidden { path: r"C:\Users\me\.cargo\credentials.toml".into(), dir: false },
            Entry::Hidden { path: r"C:\Users\me\.ssh".into(), dir: true },
            host(WS, true),
            Entry::Hidden { path: r"C:\src\repo\.env.local".into(), dir: false },
            host(r"C:\src\repo\.git\hooks", false),
            Entry::PrivateCopy { path: r"C:\src\repo\.git\config".into() },
            Entry::Placeholder { path: r"C:\src\repo\.vscode".into(), kind: Placeholder::Absent },
            Entry::Placeholder { path: r"C:\src\repo\.git\config.worktree".into(), kind: Placeholder::EmptyConfig },
            Entry::PinnedLink { path: r"C:\src\repo\docs".into() },
            Entry::Link { path: r"C:\lib64".into(), target: r"C:\usr\lib64".into() },
        ],
        cwd: WS.into(),
        tripwires: vec![r"C:\Users\me\.ssh\id_rsa".into()],
    }
}

fn input<'a>(view: FsView, facts: &'a HostFacts, builtin: &'a dyn Fn(&Path) -> bool) -> Input<'a> {
    Input {
        view,
        workspace: Path::new(WS),
        argv: vec!["cargo".into(), "build".into()],
        env: vec![("PATH".into(), r"C:\Windows\System32".into()), ("TEMP".into(), TMP.into())],
        limits: Limits {
            memory: Some(8 << 30),
            pids: Some(4096),
            cpu_time: Some(Duration::from_secs(600)),
            file_size: Some(1 << 36),
            ..Limits::default()
        },
        tmp: Path::new(TMP),
        facts,
        network: NetworkInput::Off,
        tier: Tier::AppContainer,
        builtin_read: builtin,
    }
}

fn builtin(p: &Path) -> bool {
    p == Path::new(r"C:\Users\me\.cargo")
}

fn plan_of(view: FsView) -> Result<WindowsPlan, ViewError> {
    build(input(view, &facts(), &builtin))
}

fn aces_at<'a>(plan: &'a WindowsPlan, path: &str) -> Vec<&'a Ace> {
    plan.acl.iter().filter(|a| a.path == path).collect()
}

#[test]
fn golden_plan_of_every_entry() {
    assert_golden(&plan_of(every_entry()).unwrap(), "appcontainer.json");
}

/// The allowlist's plan: the run's own package, the gateway's filters, the proxy variables.
#[test]
fn golden_plan_of_the_allowlist() {
    let facts = facts();
    let mut i = input(every_entry(), &facts, &builtin);
    i.network =
        NetworkInput::Allowlist { run: 4242, gateway: Some(network::GatewayPorts { http: 50123, socks: 50124 }) };
    let plan = build(i).unwrap();
    assert_golden(&plan.network, "network-allowlist.json");
}

fn assert_golden<T: serde::Serialize>(value: &T, name: &str) {
    let json = serde_json::to_string_pretty(value).unwrap() + "\n";
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("PALISADE_BLESS").is_some() {
        std::fs::write(&golden, &json).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_default();
    assert!(
        json == want,
        "the plan differs from {}; rerun with PALISADE_BLESS=1 and read the diff:\n{json}",
        golden.display()
    );
}

#[test]
fn each_entry_becomes_what_windows_enforces() {
    let plan = plan_of(every_entry()).unwrap();
    let ws = plan.capabilities[0].sid.clone();
    let tc = plan.capabilities[1].sid.clone();
    // The workspace: Modify for the workspace's capability, inherited by everything beneath;
    // the folder itself cannot be removed or renamed.
    let a = aces_at(&plan, WS);
    assert_eq!(a.len(), 2);
    assert_eq!(
        (a[0].kind, a[0].mask, a[0].inherit, &a[0].sid),
        (AceKind::Deny, rights::DELETE, rights::Inherit::None, &ws)
    );
    assert_eq!(
        (a[1].kind, a[1].mask, a[1].inherit, &a[1].sid),
        (AceKind::Allow, rights::MODIFY, rights::Inherit::Subtree, &ws)
    );
    assert!(plan.acl.iter().all(|a| !a.capability.is_empty() && crate::sid::capability_sid(&a.capability) == a.sid));
    // A built-in read grant goes to the toolchain capability (once per machine).
    let a = aces_at(&plan, r"C:\Users\me\.cargo");
    assert_eq!((a[0].kind, a[0].mask, &a[0].sid), (AceKind::Allow, rights::READ_EXECUTE, &tc));
    // Hidden beneath a grant: denied to the capability that granted the parent; hidden
    // beneath nothing: no entry at all (nothing grants it).
    let a = aces_at(&plan, r"C:\Users\me\.cargo\credentials.toml");
    assert_eq!((a.len(), a[0].kind, a[0].mask, &a[0].sid), (1, AceKind::Deny, rights::ALL, &tc));
    assert!(aces_at(&plan, r"C:\Users\me\.ssh").is_empty());
    let a = aces_at(&plan, r"C:\src\repo\.env.local");
    assert_eq!((a.len(), a[0].kind, a[0].inherit, &a[0].sid), (1, AceKind::Deny, rights::Inherit::None, &ws));
    // Read-only beneath the writable workspace: every changing right denied.
    for p in [r"C:\src\repo\.git\hooks", r"C:\src\repo\.git\config", r"C:\src\repo\.vscode"] {
        let a = aces_at(&plan, p);
        assert_eq!((a.len(), a[0].kind, a[0].mask, &a[0].sid), (1, AceKind::Deny, rights::WRITE_ANY, &ws), "{p}");
    }
    // A pinned link: the entry is set on the link itself.
    assert!(aces_at(&plan, r"C:\src\repo\docs")[0].on_link);
    // Placeholders are made for the run: an empty directory, or git's empty configuration.
    assert_eq!(plan.made.len(), 2);
    assert_eq!(plan.made[0].contents, None);
    assert!(plan.made[1].contents.as_deref().unwrap().starts_with('#'));
    // The program folders get nothing: every AppContainer reads them already.
    assert_eq!(plan.already_readable, [r"C:\Program Files\Git"]);
    assert!(aces_at(&plan, r"C:\Program Files\Git").is_empty());
    // The private TEMP: a folder in the workspace's state folder, granted to the workspace.
    let t = r"C:\Users\me\AppData\Local\palisade\workspaces\0123\tmp";
    assert!(aces_at(&plan, t).iter().any(|a| a.kind == AceKind::Allow && a.mask == rights::MODIFY));
    assert!(aces_at(&plan, TMP).is_empty(), "never a grant on the user's %TEMP%");
    let temp: Vec<_> = plan.launch.env.iter().filter(|(k, _)| k == "TEMP" || k == "TMP").collect();
    assert_eq!(temp.len(), 2);
    assert!(temp.iter().all(|(_, v)| v.starts_with(t)));
    // What Windows cannot give is said, never dropped.
    assert!(plan.missing.iter().any(|m| m.contains("tripwires")));
    assert!(plan.missing.iter().any(|m| m.contains("file_size")));
    assert!(plan.notes.iter().any(|n| n.contains(r".git\config") && n.contains("read-only")));
    assert!(plan.notes.iter().any(|n| n.contains(r".cargo\registry")));
    // The job: limits from the policy, kill on close, no breakaway.
    assert!(plan.job.kill_on_close && !plan.job.breakaway);
    assert_eq!(plan.job.memory, Some(8 << 30));
    assert_eq!(plan.job.active_processes, Some(4096));
    assert_eq!(plan.job.user_time_100ns, Some(6_000_000_000));
    assert_eq!(plan.launch.inherit, ["stdin", "stdout", "stderr"]);
}

#[test]
fn no_entry_widens_what_a_capability_can_do_to_acls_or_names_another_principal() {
    let plan = plan_of(every_entry()).unwrap();
    let ours: Vec<&Sid> = plan.capabilities.iter().map(|c| &c.sid).collect();
    for a in &plan.acl {
        assert!(ours.contains(&&a.sid), "{a:?} names a principal that is not Palisade's capability");
        if a.kind == AceKind::Allow {
            // No WRITE_DAC (0x40000), WRITE_OWNER (0x80000) or FILE_DELETE_CHILD (0x40).
            assert_eq!(a.mask & (0x40000 | 0x80000 | 0x40), 0, "{a:?}");
        }
    }
    // Deny entries come before allows at the same depth, parents before children.
    let depths: Vec<usize> = plan.acl.iter().map(|a| a.path.matches('\\').count()).collect();
    assert!(depths.windows(2).all(|d| d[0] <= d[1]));
}

#[test]
fn the_same_workspace_spelled_differently_gives_the_same_profile_and_sids() {
    let a = plan_of(every_entry()).unwrap();
    let mut view = every_entry();
    view.cwd = r"c:/SRC/Repo/.".into();
    let facts = facts();
    let mut i = input(view, &facts, &builtin);
    i.workspace = Path::new(r"c:/SRC/Repo/.");
    let b = build(i).unwrap();
    assert_eq!((&a.profile, &a.profile_sid, &a.capabilities), (&b.profile, &b.profile_sid, &b.capabilities));
    let mut i = input(every_entry(), &facts, &builtin);
    i.workspace = Path::new(r"C:\src\other");
    let c = build(i).unwrap();
    assert_ne!(a.capabilities[0].sid, c.capabilities[0].sid);
    assert_eq!(a.capabilities[1].sid, c.capabilities[1].sid, "the toolchain capability is the same everywhere");
    assert!(a.profile.len() <= 64, "CreateAppContainerProfile takes at most 64 characters");
}

#[test]
fn grants_on_roots_the_profile_temp_onedrive_hives_and_windows_are_refused() {
    let cases = [
        (r"C:\", true),
        (r"D:\", false),
        (r"C:\Users", false),
        (r"C:\Users\me", true),
        (r"C:\Users\ME\", false),
        (r"C:\Users\me\AppData", true),
        (r"C:\Users\me\AppData\Local\Temp", true),
        (r"C:\Users\me\OneDrive", true),
        (r"C:\Users\me\NTUSER.DAT", false),
        (r"C:\Windows\System32", true),
        (r"C:\Program Files\Git", true),
        (r"\\server\share", true),
    ];
    for (path, writable) in cases {
        let view = FsView { entries: vec![host(path, writable)], cwd: WS.into(), tripwires: vec![] };
        match plan_of(view) {
            Err(ViewError::Unrealisable { path: p, reason }) => {
                assert_eq!(p, PathBuf::from(path), "{reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{path} (writable: {writable}) was not refused: {other:?}"),
        }
    }
    // Narrower folders in the same places are fine.
    for (path, writable) in [(r"C:\Users\me\src", true), (r"C:\Users\me\OneDrive\notes", true), (r"D:\work", true)] {
        let view = FsView { entries: vec![host(path, writable)], cwd: WS.into(), tripwires: vec![] };
        assert!(plan_of(view).is_ok(), "{path}");
    }
}

#[test]
fn a_path_that_is_no_windows_path_and_published_ports_are_refused() {
    let view = FsView { entries: vec![host("relative\\dir", true)], cwd: WS.into(), tripwires: vec![] };
    assert!(matches!(plan_of(view), Err(ViewError::Unrealisable { .. })));
    let facts = facts();
    let mut i = input(every_entry(), &facts, &builtin);
    i.network = NetworkInput::Publish;
    let e = build(i).unwrap_err().to_string();
    assert!(e.contains("--publish"), "{e}");
}

#[test]
fn a_hidden_path_inside_a_folder_every_app_container_reads_is_named_as_missing() {
    let view = FsView {
        entries: vec![
            host(r"C:\ProgramData\tool", false),
            Entry::Hidden { path: r"C:\ProgramData\tool\token".into(), dir: false },
        ],
        cwd: WS.into(),
        tripwires: vec![],
    };
    let plan = plan_of(view).unwrap();
    assert!(plan.missing.iter().any(|m| m.contains(r"C:\ProgramData\tool\token")), "{:?}", plan.missing);
}

#[test]
fn folders_above_a_protected_path_cannot_be_renamed_away() {
    let plan = plan_of(every_entry()).unwrap();
    let ws = &plan.capabilities[0].sid;
    // `.git` holds protected paths (hooks, config): renaming it aside and making a new one
    // would leave the protections on the old one.
    let a = aces_at(&plan, r"C:\src\repo\.git");
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].kind, a[0].mask, a[0].inherit, &a[0].sid),
        (AceKind::Deny, rights::DELETE, rights::Inherit::None, ws)
    );
    // The workspace itself cannot be moved either (into the run's TEMP, say, which is
    // removed after the run), nor the TEMP folders' parent.
    let delete_denied = |p: &str| {
        aces_at(&plan, p)
            .iter()
            .any(|a| a.kind == AceKind::Deny && a.mask == rights::DELETE && a.inherit == rights::Inherit::None)
    };
    assert!(delete_denied(WS));
    assert!(delete_denied(r"C:\Users\me\AppData\Local\palisade\workspaces\0123\tmp"));
}

#[test]
fn a_narrower_set_of_builtin_reads_gets_a_toolchain_capability_of_its_own() {
    let full = plan_of(every_entry()).unwrap();
    // The same view, but this workspace's policy hides one more file under ~/.cargo: the
    // deny must not reach the tokens of workspaces that may read it, and their grants must
    // not reach this one.
    let mut view = every_entry();
    view.entries.insert(6, Entry::Hidden { path: r"C:\Users\me\.cargo\config.toml".into(), dir: false });
    let narrower = plan_of(view).unwrap();
    assert_ne!(full.capabilities[1].sid, narrower.capabilities[1].sid);
    assert_eq!(full.capabilities[0].sid, narrower.capabilities[0].sid, "same workspace, same workspace capability");
    // No built-in reads at all: no toolchain capability in the token.
    let view = FsView { entries: vec![host(WS, true)], cwd: WS.into(), tripwires: vec![] };
    let plan = plan_of(view).unwrap();
    assert_eq!(plan.capabilities.len(), 1);
}

#[test]
fn the_restricted_token_tier_confines_writes_and_says_what_it_does_not() {
    let facts = facts();
    let mut i = input(every_entry(), &facts, &builtin);
    i.tier = Tier::RestrictedToken;
    let plan = build(i).unwrap();
    assert_eq!(plan.tier, Tier::RestrictedToken);
    let ws = &plan.capabilities[0].sid;
    // Writes: the same grants and denies as the AppContainer, to the restricting SID.
    assert!(aces_at(&plan, WS).iter().any(|a| (a.kind, a.mask, &a.sid) == (AceKind::Allow, rights::MODIFY, ws)));
    assert_eq!(aces_at(&plan, r"C:\src\repo\.git\hooks")[0].mask, rights::WRITE_ANY);
    assert_eq!(plan.made.len(), 2);
    // Reads: nothing placed (the token reads what the user reads), and it is said.
    assert!(aces_at(&plan, r"C:\Users\me\.cargo").is_empty());
    // A hidden path beneath the writable workspace cannot be changed or removed (the
    // restricting SID's deny holds for writes), though it can be read.
    let a = aces_at(&plan, r"C:\src\repo\.env.local");
    assert_eq!((a.len(), a[0].kind, a[0].mask), (1, AceKind::Deny, rights::WRITE_ANY));
    assert_eq!(plan.capabilities.len(), 1, "no toolchain capability: reads are not restricted");
    assert!(plan.missing.iter().any(|m| m.starts_with("reads:")), "{:?}", plan.missing);
    assert!(plan.missing.iter().any(|m| m.starts_with("network:")), "{:?}", plan.missing);
}

#[test]
fn runs_of_a_workspace_with_different_policies_hold_different_capabilities() {
    let a = plan_of(every_entry()).unwrap();
    let mut view = every_entry();
    view.entries.push(host(r"D:\scratch", true));
    let b = plan_of(view).unwrap();
    // Same workspace, same profile; but a run with the extra grant holds a capability of its
    // own, so a run without it never holds D:\scratch's grant, even while both run.
    assert_eq!(a.profile, b.profile);
    assert_ne!(a.capabilities[0].sid, b.capabilities[0].sid);
    let prefix = |n: &str| n.rsplit_once('.').unwrap().0.to_owned();
    assert_eq!(prefix(&a.capabilities[0].name), prefix(&b.capabilities[0].name), "one workspace prefix for forget");
    assert_eq!(a, plan_of(every_entry()).unwrap(), "the same policy gives the same plan");
}

/// Network off: no capability, no exemption, no filter, no proxy variable, nothing needing
/// an administrator, and the workspace's own package.
#[test]
fn with_the_network_off_nothing_is_opened_or_installed() {
    let plan = plan_of(every_entry()).unwrap();
    let n = &plan.network;
    assert_eq!(n.mode, network::NetworkMode::Off);
    assert!(n.capabilities.is_empty() && n.filters.is_empty() && !n.loopback_exemption && !n.needs_broker);
    assert!(!plan.launch.env.iter().any(|(k, _)| k.to_ascii_uppercase().ends_with("_PROXY")), "{:?}", plan.launch.env);
    assert!(!plan.profile.contains(".run"), "{}", plan.profile);
}

/// The allowlist: a package of the run's own (another run of the workspace never shares its
/// exemption), every filter scoped to it, the only permits exactly the gateway's two ports on
/// 127.0.0.1 over TCP and weighed above blocks that cover both families and both directions,
/// every filter hard; one proxy variable per name (Windows' names are case-insensitive), the
/// sandbox's own proxy settings replaced.
#[test]
fn the_allowlist_reaches_the_gateway_and_nothing_else() {
    use network::{Action, Condition, Layer};
    let facts = facts();
    let mut i = input(every_entry(), &facts, &builtin);
    i.env.push(("https_proxy".into(), "http://attacker.example:8080".into()));
    i.network = NetworkInput::Allowlist { run: 7, gateway: Some(network::GatewayPorts { http: 50001, socks: 50002 }) };
    let plan = build(i).unwrap();
    let off = plan_of(every_entry()).unwrap();
    assert_ne!(plan.profile_sid, off.profile_sid);
    assert!(plan.profile.ends_with(".run7"), "{}", plan.profile);
    let n = &plan.network;
    assert!(n.loopback_exemption && n.needs_broker && n.capabilities.is_empty());
    for f in &n.filters {
        assert!(f.hard, "{f:?}");
        assert!(f.conditions.contains(&Condition::PackageId(plan.profile_sid.clone())), "{f:?}");
    }
    let permits: Vec<_> = n.filters.iter().filter(|f| f.action == Action::Permit).collect();
    assert_eq!(permits.len(), 2);
    for (f, port) in permits.iter().zip([50001, 50002]) {
        assert_eq!(f.layer, Layer::AleAuthConnectV4);
        assert!(f.conditions.contains(&Condition::RemotePort(port)), "{f:?}");
        assert!(f.conditions.contains(&Condition::RemoteAddress("127.0.0.1".parse().unwrap())), "{f:?}");
        assert!(f.conditions.contains(&Condition::Protocol(network::TCP)), "{f:?}");
        assert_eq!(f.conditions.len(), 4);
    }
    let blocks: Vec<_> = n.filters.iter().filter(|f| f.action == Action::Block).collect();
    for layer in
        [Layer::AleAuthConnectV4, Layer::AleAuthConnectV6, Layer::AleAuthRecvAcceptV4, Layer::AleAuthRecvAcceptV6]
    {
        let b = blocks.iter().find(|f| f.layer == layer).unwrap_or_else(|| panic!("no block at {layer:?}"));
        assert_eq!(b.conditions.len(), 1, "a block narrower than the whole package: {b:?}");
        assert!(b.weight < network::PERMIT_WEIGHT);
    }
    let proxies: Vec<_> = plan.launch.env.iter().filter(|(k, _)| k.to_ascii_uppercase().contains("PROXY")).collect();
    let names: Vec<String> = proxies.iter().map(|(k, _)| k.to_ascii_uppercase()).collect();
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(names, unique, "{proxies:?}");
    assert!(proxies.iter().any(|(k, v)| k == "HTTPS_PROXY" && v == "http://127.0.0.1:50001"), "{proxies:?}");
    assert!(!proxies.iter().any(|(_, v)| v.contains("attacker")), "{proxies:?}");
    assert!(plan.notes.iter().any(|n| n.contains("blocked, not redirected")), "{:?}", plan.notes);
}

/// The restricted-token tier runs as the user, whom no per-run filter names: the allowlist is
/// refused there rather than run unconfined.
#[test]
fn the_allowlist_is_refused_in_the_restricted_token_tier() {
    let facts = facts();
    let mut i = input(every_entry(), &facts, &builtin);
    i.tier = Tier::RestrictedToken;
    i.network = NetworkInput::Allowlist { run: 1, gateway: None };
    let e = build(i).unwrap_err().to_string();
    assert!(e.contains("restricted-token tier cannot confine the network"), "{e}");
}

/// The plan built before the gateway's listeners exist names port 0; bound, it names the
/// ports in its filters and proxy variables, and nothing else changes.
#[test]
fn binding_the_gateway_names_its_ports_in_the_filters_and_the_variables() {
    let facts = facts();
    let mut i = input(every_entry(), &facts, &builtin);
    i.network = NetworkInput::Allowlist { run: 7, gateway: None };
    let unbound = build(i).unwrap();
    assert!(unbound.launch.env.iter().any(|(k, v)| k == "HTTPS_PROXY" && v == "http://127.0.0.1:0"));
    let bound = unbound.with_gateway(network::GatewayPorts { http: 50001, socks: 50002 });
    assert!(bound.launch.env.iter().any(|(k, v)| k == "HTTPS_PROXY" && v == "http://127.0.0.1:50001"));
    assert!(bound.network.filters.iter().any(|f| f.conditions.contains(&network::Condition::RemotePort(50002))));
    assert_eq!(bound.launch.env.len(), unbound.launch.env.len());
    assert_eq!((&bound.acl, &bound.profile, &bound.notes), (&unbound.acl, &unbound.profile, &unbound.notes));
}
