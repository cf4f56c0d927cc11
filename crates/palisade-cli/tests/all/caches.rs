//! Toolchain caches (`filesystem.cache`): the sandbox reads what the host downloaded and
//! writes into a private layer kept for the workspace; the host's files never change.

use crate::util::*;

#[test]
fn a_cache_shows_the_hosts_files_keeps_the_sandboxs_writes_per_workspace_and_never_changes_the_host() {
    let s = Sandbox::new("cache");
    s.write("home/.cargo/registry/src/dep/lib.rs", "pub fn host() {}\n");
    s.write("home/.cargo/registry/src/dep/gone.rs", "host\n");
    s.write("home/.cargo/registry/token", "cache-secret\n");
    let src = s.home().join(".cargo/registry/src/dep");
    // Poison a host source, add a file, delete one, fill a cache the host does not have.
    let script = "cat ~/.cargo/registry/src/dep/lib.rs \
         && echo 'fn poisoned() {}' >> ~/.cargo/registry/src/dep/lib.rs \
         && echo new > ~/.cargo/registry/src/dep/new.rs \
         && rm ~/.cargo/registry/src/dep/gone.rs \
         && mkdir -p ~/.cargo/git/db/x && echo g > ~/.cargo/git/db/x/HEAD \
         && echo n > ~/.npm/entry \
         && cat ~/.cargo/registry/src/dep/lib.rs; cat ~/.cargo/registry/token";
    let o = s.run(&["--deny", "~/.cargo/registry/token"], &["/bin/sh", "-c", script]);
    assert_eq!(stdout(&o), "pub fn host() {}\npub fn host() {}\nfn poisoned() {}\n", "{}", stderr(&o));
    assert!(stderr(&o).contains("token"), "a denied file stays hidden in a cache: {}", stderr(&o));
    // From outside: the host's cache is exactly as it was; ~/.npm was never made.
    assert_eq!(std::fs::read_to_string(src.join("lib.rs")).unwrap(), "pub fn host() {}\n");
    assert_eq!(std::fs::read_to_string(src.join("gone.rs")).unwrap(), "host\n");
    assert!(!src.join("new.rs").exists());
    assert!(s.listing(&s.home().join(".cargo/git")).is_empty(), "{:?}", s.listing(&s.home().join(".cargo/git")));
    assert!(!s.home().join(".npm").exists());
    // The next run of this workspace finds its own writes.
    let o =
        s.sh("cat ~/.cargo/registry/src/dep/new.rs ~/.cargo/git/db/x/HEAD ~/.npm/entry; ls ~/.cargo/registry/src/dep");
    assert_eq!(stdout(&o), "new\ng\nn\nlib.rs\nnew.rs\n", "{}", stderr(&o));
    // Another workspace sees the host's cache only.
    let ws2 = s.root.join("ws2");
    std::fs::create_dir_all(&ws2).unwrap();
    let o = s.palisade_in(&ws2, &["run", "--", "sh", "-c", "ls ~/.cargo/registry/src/dep; ls ~/.npm"]);
    assert_eq!(stdout(&o), "gone.rs\nlib.rs\n", "{}", stderr(&o));
    // Scratch directories do not pile up: the next run takes over an ended run's (one per
    // layer stays, for it), and no run's own upper directory is left.
    let state = s.home().join(".local/state/palisade/copies");
    let named =
        |p: &std::path::Path, prefix: &str| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix));
    let work: Vec<_> = walk(&state).into_iter().filter(|p| named(p, "work-")).collect();
    let mut layers: Vec<_> = work.iter().filter_map(|p| p.parent()).collect();
    let n = layers.len();
    layers.sort();
    layers.dedup();
    assert_eq!(layers.len(), n, "two work directories in one layer: {work:?}");
    assert!(!work.is_empty(), "{work:?}");
    assert!(!walk(&state).iter().any(|p| named(p, "upper-")));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn a_project_may_not_name_a_cache_and_explain_says_where_writes_go() {
    let s = Sandbox::new("cache-explain");
    s.write("ws/.palisade.toml", "[filesystem]\ncache = [\"~/.ssh\"]\n");
    let o = s.palisade(&["policy", "check", "--project", ".palisade.toml"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(format!("{}{}", stdout(&o), stderr(&o)).contains("may not name caches"), "{}{}", stdout(&o), stderr(&o));
    std::fs::remove_file(s.ws().join(".palisade.toml")).unwrap();
    let o = s.palisade(&["policy", "explain", "~/.npm/_cacache/index"]);
    let text = stdout(&o);
    assert!(text.contains("filesystem.cache") && text.contains("private layer"), "{text}");
    // A glob is no cache.
    s.write("home/.config/palisade/policy.toml", "[filesystem]\ncache = [\"~/.cache/*\"]\n");
    let o = s.palisade(&["run", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("cache takes directories"), "{}", stderr(&o));
}

#[test]
fn a_cache_turned_into_a_link_is_not_used_and_never_shows_what_the_link_leads_to() {
    let s = Sandbox::new("cache-link");
    s.write("home/Documents/secret.txt", "cache-link-secret\n");
    s.write("home/.cache/keep", "");
    // What a sandbox given ~/.cache in an earlier run could leave: pip's cache a link to
    // the home, npm's a dangling link to a directory Palisade would make.
    std::os::unix::fs::symlink("..", s.home().join(".cache/pip")).unwrap();
    std::fs::create_dir_all(s.home().join(".cargo")).unwrap();
    std::os::unix::fs::symlink("../.cargo/planted", s.home().join(".cache/go-build")).unwrap();
    let o = s.sh("cat ~/.cache/pip/Documents/secret.txt ~/Documents/secret.txt; ls ~/.cache/pip/");
    assert!(!stdout(&o).contains("cache-link-secret"), "{}", stdout(&o));
    assert!(stderr(&o).contains("the cache") && stderr(&o).contains("is not used"), "{}", stderr(&o));
    assert!(!s.home().join(".cargo/planted").exists(), "Palisade made a directory through a planted link");
}

#[test]
fn two_runs_of_one_workspace_never_share_an_overlay_layer() {
    let s = Sandbox::new("cache-concurrent");
    s.write("home/.cargo/registry/host.txt", "host\n");
    // The first run holds the kept layer while it lives.
    let mut first = s
        .command(&s.ws(), &["run", "--", "sh", "-c", "echo a > ~/.cargo/registry/a; touch started; sleep 3"])
        .spawn()
        .unwrap();
    s.wait_for_ws_file("started", 20, "the first run never started");
    let o = s.sh("echo b > ~/.cargo/registry/b; cat ~/.cargo/registry/host.txt");
    assert_eq!(stdout(&o), "host\n", "{}", stderr(&o));
    assert!(stderr(&o).contains("another run of this workspace is using"), "{}", stderr(&o));
    assert!(first.wait().unwrap().success());
    // The kept layer has the first run's write only; the second's ended with it; the host's
    // cache is as it was.
    let o = s.sh("ls ~/.cargo/registry");
    assert_eq!(stdout(&o), "a\nhost.txt\n", "{}", stderr(&o));
    assert!(!s.home().join(".cargo/registry/a").exists() && !s.home().join(".cargo/registry/b").exists());
}

#[test]
fn runs_over_a_layer_the_host_does_not_have_share_it_and_an_overlay_never_joins_them() {
    let s = Sandbox::new("cache-alone");
    s.write("home/.config/palisade/policy.toml", "[filesystem]\ncache = [\"~/.agentstate\"]\n");
    let mut first = s
        .command(&s.ws(), &["run", "--", "sh", "-c", "echo a > ~/.agentstate/a; touch started; sleep 4"])
        .spawn()
        .unwrap();
    s.wait_for_ws_file("started", 20, "the first run never started");
    // Another run showing the layer alone shares it.
    let o = s.sh("ls ~/.agentstate; echo b > ~/.agentstate/b");
    assert_eq!(stdout(&o), "a\n", "{}", stderr(&o));
    // The host's directory appears meanwhile: a run that would lay the kept layer over it
    // must not use that layer while the first still writes it directly.
    std::fs::create_dir_all(s.home().join(".agentstate")).unwrap();
    let o = s.sh("ls ~/.agentstate; echo c > ~/.agentstate/c");
    assert_eq!(stdout(&o), "", "{}", stderr(&o));
    assert!(stderr(&o).contains("another run of this workspace is using"), "{}", stderr(&o));
    assert!(first.wait().unwrap().success());
    let o = s.sh("ls ~/.agentstate");
    assert_eq!(stdout(&o), "a\nb\n", "{}", stderr(&o));
    assert!(s.listing(&s.home().join(".agentstate")).is_empty());
}

#[test]
fn a_cache_outside_the_home_reached_through_a_link_is_not_used_either() {
    let s = Sandbox::new("cache-link-out");
    s.write("home/Documents/secret.txt", "cache-out-secret\n");
    let shared = s.root.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    // Left by a run that could write `shared`: the cache is now a link into the home.
    std::os::unix::fs::symlink(s.home().join("Documents"), shared.join("mycache")).unwrap();
    s.write(
        "home/.config/palisade/policy.toml",
        &format!("[filesystem]\ncache = [\"{}\"]\n", shared.join("mycache").display()),
    );
    let o = s.sh(&format!("cat {}/mycache/secret.txt ~/Documents/secret.txt", shared.display()));
    assert!(!stdout(&o).contains("cache-out-secret"), "{}", stdout(&o));
    assert!(stderr(&o).contains("is not used"), "{}", stderr(&o));
}
