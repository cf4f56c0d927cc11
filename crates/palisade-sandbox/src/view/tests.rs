//! The view, decided for a fake host.

use palisade_policy::{LayerKind, Lexical, ResolveOptions, Vars, parse_layer, resolve};

use palisade_policy::hostfs::MemFs;

use super::*;

fn mem(entries: &[(&str, Kind)]) -> MemFs {
    entries.iter().fold(MemFs::new(), |m, (p, k)| m.with(p, *k))
}

fn placeholder(p: &str) -> Entry {
    Entry::Placeholder { path: p.into(), kind: Placeholder::Absent }
}

fn policy(text: &str) -> ResolvedPolicy {
    let vars = Vars::with_defaults(Path::new("/home/u"), Path::new("/w/proj"));
    let l = parse_layer(text, "t.toml", LayerKind::User, &vars, &Lexical).unwrap();
    resolve(Path::new("/w/proj"), Path::new("/home/u"), vec![l], ResolveOptions::default()).unwrap()
}

/// `true` in the project, with kept copies and caches in `copies`, if any.
fn request(copies: Option<&Path>) -> Request {
    Request {
        argv: vec!["true".into()],
        cwd: "/w/proj".into(),
        env: vec![],
        tmp: "/tmp".into(),
        trace_exec: false,
        copies: copies.map(Path::to_path_buf),
        session: false,
    }
}

fn plan(text: &str, host: &MemFs) -> Result<FsView, ViewError> {
    build(&policy(text), host, &request(None))
}

fn shown(p: &str, writable: bool) -> Entry {
    Entry::Host { path: p.into(), writable }
}

const BASE: &str = "[filesystem]\nread = [\"/usr\", \"/etc\", \"~/.cargo\"]\nwrite = [\"${workspace}\", \"${tmp}\"]\n";

fn host() -> MemFs {
    mem(&[
        ("/usr/bin/sh", Kind::File),
        ("/etc/passwd", Kind::File),
        ("/etc/shadow", Kind::File),
        ("/home/u/.cargo/bin", Kind::Dir),
        ("/home/u/.ssh/id_rsa", Kind::File),
        ("/w/proj/src/main.rs", Kind::File),
        ("/w/proj/.git/hooks/pre-commit", Kind::File),
        ("/w/proj/.git/config", Kind::File),
        ("/tmp/x", Kind::File),
    ])
}

#[test]
fn grants_become_host_entries_and_private_dirs() {
    let p = plan(BASE, &host()).unwrap();
    assert!(p.entries.contains(&shown("/usr", false)));
    assert!(p.entries.contains(&shown("/etc", false)));
    assert!(p.entries.contains(&shown("/w/proj", true)));
    assert!(p.entries.contains(&shown("/home/u/.cargo", false)));
    assert!(p.entries.contains(&Entry::Private { path: "/tmp".into(), size: DEFAULT_TMP_SIZE }));
    assert!(p.entries.contains(&Entry::Private { path: "/home/u".into(), size: DEFAULT_HOME_SIZE }));
    // The home's secrets are simply never bound: absent, ENOENT.
    assert!(!p.entries.iter().any(|m| m.path().starts_with("/home/u/.ssh")));
}

#[test]
fn parents_come_before_children() {
    let p = plan(BASE, &host()).unwrap();
    for (i, m) in p.entries.iter().enumerate() {
        for later in &p.entries[i + 1..] {
            assert!(
                !m.path().starts_with(later.path()) || m.path() == later.path(),
                "{m:?} before its parent {later:?}"
            );
        }
    }
}

#[test]
fn denied_files_inside_a_grant_are_hidden() {
    let p = plan(&format!("{BASE}deny = [\"/etc/shadow\", \"~/.cargo/credentials.toml\"]\n"), &host()).unwrap();
    assert!(p.entries.contains(&Entry::Hidden { path: "/etc/shadow".into(), dir: false }));
    // Missing under a read-only tree: nothing to do, it cannot appear.
    assert!(!p.entries.iter().any(|m| m.path() == Path::new("/home/u/.cargo/credentials.toml")));
}

#[test]
fn protected_paths_in_the_workspace_are_pinned_and_read_only() {
    let p = plan(&format!("{BASE}protect = [\".git/hooks\", \".git/config\", \".vscode\", \".git/info\"]\n"), &host())
        .unwrap();
    let i_git = p.entries.iter().position(|m| *m == shown("/w/proj/.git", true)).expect(".git pinned");
    let i_hooks = p.entries.iter().position(|m| *m == shown("/w/proj/.git/hooks", false)).expect("hooks read-only");
    assert!(i_git < i_hooks);
    assert!(p.entries.contains(&shown("/w/proj/.git/config", false)));
    assert!(p.entries.contains(&placeholder("/w/proj/.vscode")));
    assert!(p.entries.contains(&placeholder("/w/proj/.git/info")));
    assert_eq!(p.entries.iter().filter(|m| **m == shown("/w/proj/.git", true)).count(), 1, "pinned once");
}

#[test]
fn missing_protected_path_masks_its_first_missing_component() {
    let h = mem(&[("/usr/bin/sh", Kind::File), ("/w/proj/README", Kind::File)]);
    let p = plan(&format!("{BASE}protect = [\".git/hooks\", \".git/config\"]\n"), &h).unwrap();
    let ph: Vec<_> = p.entries.iter().filter(|m| matches!(m, Entry::Placeholder { .. })).collect();
    assert_eq!(ph, [&placeholder("/w/proj/.git")]);
    let p = plan(&format!("{BASE}protect = [\".mcp.json\", \".envrc\", \".claude\"]\n"), &h).unwrap();
    assert!(p.entries.contains(&placeholder("/w/proj/.mcp.json")));
    assert!(p.entries.contains(&placeholder("/w/proj/.envrc")));
    assert!(p.entries.contains(&placeholder("/w/proj/.claude")));
}

#[test]
fn a_file_where_a_protected_path_needs_a_directory_is_pinned() {
    // Nothing can be created beneath a file; pinned, it cannot be replaced by a directory.
    let h = mem(&[("/w/proj/.git", Kind::File)]);
    let p = plan(&format!("{BASE}protect = [\".git/hooks\"]\n"), &h).unwrap();
    assert!(p.entries.contains(&shown("/w/proj/.git", true)));
    assert!(!p.entries.iter().any(|m| m.path().starts_with("/w/proj/.git/hooks")), "{:?}", p.entries);
}

#[test]
fn symlinks_at_or_above_a_protected_path_are_pinned_not_refused() {
    for protect in [".vscode", ".vscode/tasks.json"] {
        let h = mem(&[("/w/proj/.vscode", Kind::Symlink)]);
        let p = plan(&format!("{BASE}protect = [\"{protect}\"]\n"), &h).unwrap();
        assert!(p.entries.contains(&Entry::PinnedLink { path: "/w/proj/.vscode".into() }), "{protect}");
        assert_eq!(p.entries.iter().filter(|m| m.path().starts_with("/w/proj/.vscode")).count(), 1, "{protect}");
    }
    // A denied link in a read-only tree is harmless: nothing to do.
    let h = mem(&[("/usr/evil", Kind::Symlink)]);
    let p = plan(&format!("{BASE}deny = [\"/usr/evil\"]\n"), &h).unwrap();
    assert!(!p.entries.iter().any(|m| m.path() == Path::new("/usr/evil")));
}

#[test]
fn write_grant_inside_a_read_grant_is_shown_writable() {
    let h = mem(&[("/home/u/.cargo/registry/x", Kind::File)]);
    let text = "[filesystem]\nread = [\"~/.cargo\"]\nwrite = [\"~/.cargo/registry\"]\n";
    let p = plan(text, &h).unwrap();
    assert!(p.entries.contains(&shown("/home/u/.cargo", false)));
    assert!(p.entries.contains(&shown("/home/u/.cargo/registry", true)));
}

#[test]
fn grant_inside_a_denied_directory_is_an_error() {
    let h = mem(&[("/srv/a/b/c", Kind::File)]);
    let e = plan("[filesystem]\nread = [\"/srv\", \"/srv/a/b\"]\ndeny = [\"/srv/a\"]\n", &h).unwrap_err();
    assert_eq!(e, ViewError::GrantInsideMask { path: "/srv/a/b".into(), denied: "/srv/a".into() });
}

#[test]
fn deny_globs_expand_inside_granted_trees_only() {
    let h = mem(&[
        ("/w/proj/.env", Kind::File),
        ("/w/proj/sub/.env", Kind::File),
        ("/w/proj/.envrc", Kind::File),
        ("/opt/.env", Kind::File),
    ]);
    let p = plan(&format!("{BASE}deny = [\"**/.env\"]\n"), &h).unwrap();
    let masks: Vec<_> =
        p.entries.iter().filter(|m| matches!(m, Entry::Hidden { .. })).map(|m| m.path().to_path_buf()).collect();
    assert_eq!(masks, [PathBuf::from("/w/proj/.env"), "/w/proj/sub/.env".into()]);
}

#[test]
fn grants_written_through_a_link_get_the_link() {
    let vars = Vars::with_defaults(Path::new("/home/u"), Path::new("/w/proj"));
    struct LinkLib64;
    impl palisade_policy::PathResolver for LinkLib64 {
        fn resolve(&self, p: &Path) -> PathBuf {
            if p == Path::new("/lib64") { "/usr/lib64".into() } else { p.to_path_buf() }
        }
    }
    let l =
        parse_layer("[filesystem]\nread = [\"/usr\", \"/lib64\"]\n", "t", LayerKind::User, &vars, &LinkLib64).unwrap();
    let pol = resolve(Path::new("/w/proj"), Path::new("/home/u"), vec![l], ResolveOptions::default()).unwrap();
    let h = mem(&[("/usr/lib64/ld.so", Kind::File)]);
    let req = Request {
        argv: vec!["true".into()],
        cwd: "/".into(),
        env: vec![],
        tmp: "/tmp".into(),
        trace_exec: false,
        copies: None,
        session: false,
    };
    let p = build(&pol, &h, &req).unwrap();
    assert!(p.entries.contains(&Entry::Link { path: "/lib64".into(), target: "/usr/lib64".into() }));
    assert_eq!(p.cwd, Path::new("/w/proj"), "an invisible cwd falls back to the workspace");
}

#[test]
fn home_and_workspace_under_the_private_tmp_stay_private() {
    // Regression: with `${tmp}` = /tmp granted write, host /tmp (and a home under it)
    // was bound into the sandbox instead of a private tmpfs.
    let vars = Vars::with_defaults(Path::new("/tmp/t/home"), Path::new("/tmp/t/ws"));
    let text = "[filesystem]\nread = [\"/usr\"]\nwrite = [\"${workspace}\", \"${tmp}\"]\ndeny = [\"~/.ssh\"]\n";
    let l = parse_layer(text, "t", LayerKind::User, &vars, &Lexical).unwrap();
    let pol = resolve(Path::new("/tmp/t/ws"), Path::new("/tmp/t/home"), vec![l], ResolveOptions::default()).unwrap();
    let h = mem(&[
        ("/tmp/t/home/.ssh/id_rsa", Kind::File),
        ("/tmp/t/ws/a", Kind::File),
        ("/tmp/t/other", Kind::Dir),
        ("/usr/bin/sh", Kind::File),
    ]);
    let req = Request {
        argv: vec!["true".into()],
        cwd: "/tmp/t/other".into(),
        env: vec![],
        tmp: "/tmp".into(),
        trace_exec: false,
        copies: None,
        session: false,
    };
    let p = build(&pol, &h, &req).unwrap();
    assert_eq!(p.entries[0], Entry::Private { path: "/tmp".into(), size: DEFAULT_TMP_SIZE });
    assert!(
        !p.entries.iter().any(
            |m| matches!(m, Entry::Host { path, .. } if path == Path::new("/tmp") || path.starts_with("/tmp/t/home"))
        ),
        "{:?}",
        p.entries
    );
    assert!(p.entries.contains(&shown("/tmp/t/ws", true)));
    assert_eq!(p.cwd, Path::new("/tmp/t/ws"), "a cwd that is not bound falls back to the workspace");
}

#[test]
fn which_host_paths_the_sandbox_can_write() {
    let p = plan(&format!("{BASE}protect = [\".git/hooks\"]\n"), &host()).unwrap();
    assert!(p.exposes_writable(Path::new("/w/proj/src/x.log")));
    assert!(!p.exposes_writable(Path::new("/w/proj/.git/hooks/x")));
    assert!(!p.exposes_writable(Path::new("/tmp/x.log")), "the sandbox's /tmp is private");
    assert!(!p.exposes_writable(Path::new("/home/u/.local/state/palisade/s.jsonl")));
    assert!(!p.exposes_writable(Path::new("/etc/x")));
}

#[test]
fn tripwires_go_only_into_private_file_systems() {
    let text = format!(
        "{BASE}[monitor]\ntripwires = [\"~/.ssh/id_rsa\", \"/etc/decoy\", \"${{workspace}}/decoy\", \"~/.cargo/decoy\"]\n"
    );
    let p = plan(&text, &host()).unwrap();
    assert_eq!(p.tripwires, [PathBuf::from("/home/u/.ssh/id_rsa")], "never on the host's file systems");
}

#[test]
fn empty_command_is_refused() {
    let req = Request {
        argv: vec![],
        cwd: "/".into(),
        env: vec![],
        tmp: "/tmp".into(),
        trace_exec: false,
        copies: None,
        session: false,
    };
    assert_eq!(build(&policy(BASE), &host(), &req).unwrap_err(), ViewError::NoCommand);
}

#[test]
fn a_cache_is_a_private_layer_over_the_hosts_directory_only_when_its_layer_is_ready() {
    let text = format!(
        "{BASE}cache = [\"~/.cargo/registry\", \"~/.npm\", \"~/.cache/pip\"]\ndeny = [\"~/.cargo/registry/token\"]\n"
    );
    let copies = Path::new("/state/copies/proj");
    let layer = |p: &str| crate::copies::cache_dirs(&cache_layer(copies, Path::new(p)));
    let (reg_up, reg_work) = layer("/home/u/.cargo/registry");
    let (npm_up, _) = layer("/home/u/.npm");
    let host = host()
        .with("/home/u/.cargo/registry/src/x.rs", Kind::File)
        .with("/home/u/.cargo/registry/token", Kind::File)
        .with(reg_up.to_str().unwrap(), Kind::Dir)
        .with(reg_work.to_str().unwrap(), Kind::Dir)
        .with(npm_up.to_str().unwrap(), Kind::Dir);
    let v = build(&policy(&text), &host, &request(Some(copies))).unwrap();
    let cache = |path: &str, upper: &Path, work: &Path, lower: bool| Entry::Cache {
        path: path.into(),
        upper: upper.into(),
        work: work.into(),
        lower,
    };
    let (npm_up, npm_work) = layer("/home/u/.npm");
    let reg = v.entries.iter().position(|e| *e == cache("/home/u/.cargo/registry", &reg_up, &reg_work, true));
    let token = v.entries.iter().position(|e| e.path() == Path::new("/home/u/.cargo/registry/token"));
    // Over the host's directory, after the read-only bind of its parent; a denied file in it
    // hidden after it.
    assert!(reg.is_some() && token.is_some() && reg < token, "{:?}", v.entries);
    assert!(matches!(v.entries[token.unwrap()], Entry::Hidden { .. }));
    // Missing on the host, in the private home: the layer alone.
    assert!(v.entries.contains(&cache("/home/u/.npm", &npm_up, &npm_work, false)), "{:?}", v.entries);
    // No layer ready (it could not be made): nothing from the cache rule but the host's
    // directory, read-only (here, missing: nothing).
    assert!(!v.entries.iter().any(|e| e.path().starts_with("/home/u/.cache")), "{:?}", v.entries);
    // The host's files are never writable through a cache.
    assert!(!v.exposes_writable(Path::new("/home/u/.cargo/registry/src/x.rs")));
    // Without a copies directory (no state to keep layers in), the cache is read-only host content.
    let v = plan(&text, &host).unwrap();
    assert!(v.entries.iter().all(|e| !matches!(e, Entry::Cache { .. })), "{:?}", v.entries);
    assert_eq!(v.seen(Path::new("/home/u/.cargo/registry/src/x.rs")), Seen::Host(Access::Read));
}

/// The real file system seen through a clock `shift` seconds back (so that a tree just made
/// looks old enough to trust) and, with `coarse`, change times cut to whole seconds (a file
/// system with coarse timestamps); counts the directories listed.
#[cfg(unix)]
struct Clocked {
    shift: i64,
    coarse: bool,
    lists: std::cell::Cell<usize>,
}

#[cfg(unix)]
impl HostFs for Clocked {
    fn kind(&self, path: &Path) -> Option<Kind> {
        palisade_policy::load::RealFs.kind(path)
    }
    fn list(&self, dir: &Path) -> Vec<(std::ffi::OsString, Kind)> {
        self.lists.set(self.lists.get() + 1);
        palisade_policy::load::RealFs.list(dir)
    }
    fn read(&self, path: &Path, limit: usize) -> Option<Vec<u8>> {
        palisade_policy::load::RealFs.read(path, limit)
    }
    fn stamp(&self, path: &Path) -> Option<(u64, u64, i64, i64)> {
        let (dev, ino, s, ns) = palisade_policy::load::RealFs.stamp(path)?;
        Some((dev, ino, s - self.shift, if self.coarse { 0 } else { ns }))
    }
}

#[cfg(unix)]
fn glob_tree(tag: &str) -> (PathBuf, PathBuf, PathPattern) {
    let root = std::env::temp_dir().join(format!("palisade-globcache-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ws = root.join("ws");
    for d in ["a/b", "c", "d/e/f"] {
        std::fs::create_dir_all(ws.join(d)).unwrap();
    }
    for f in ["a/b/.env", ".env", "d/e/f/x.rs", "c/.envrc"] {
        std::fs::write(ws.join(f), "x").unwrap();
    }
    let vars = Vars::with_defaults(Path::new("/home/u"), &ws);
    let l = parse_layer("[filesystem]\ndeny = [\"**/.env\"]\n", "t", LayerKind::User, &vars, &Lexical).unwrap();
    let pol = resolve(&ws, Path::new("/home/u"), vec![l], ResolveOptions::default()).unwrap();
    let pattern = pol.paths.iter().find(|r| matches!(r.pattern, PathPattern::Glob(_))).unwrap().pattern.clone();
    (root, ws, pattern)
}

/// A glob's kept walk gives what a full walk gives after every kind of change, and lists
/// only the directories that changed.
#[cfg(unix)]
#[test]
fn a_kept_glob_walk_sees_every_change_and_relists_only_changed_directories() {
    let (root, ws, pattern) = glob_tree("changes");
    let records = root.join("state/globs");
    let roots = [(ws.clone(), true)];
    let host = Clocked { shift: 60, coarse: false, lists: std::cell::Cell::new(0) };
    let full = |h: &dyn HostFs| expand_glob(&pattern, &roots, h, None).unwrap();
    let kept = |h: &Clocked| {
        h.lists.set(0);
        let v = expand_glob(&pattern, &roots, h, Some(&records)).unwrap();
        (v, h.lists.get())
    };
    let (first, listed) = kept(&host);
    assert_eq!(first, [ws.join(".env"), ws.join("a/b/.env")]);
    assert_eq!(listed, 7, "the first walk lists every directory");
    assert_eq!(kept(&host), (first.clone(), 0), "nothing changed: nothing listed");
    type Change = Box<dyn Fn(&Path)>;
    let changes: Vec<(&str, Change, usize)> = vec![
        ("a file added deep", Box::new(|w| std::fs::write(w.join("d/e/f/.env"), "").unwrap()), 1),
        ("a match removed", Box::new(|w| std::fs::remove_file(w.join(".env")).unwrap()), 1),
        ("a directory renamed", Box::new(|w| std::fs::rename(w.join("a"), w.join("z")).unwrap()), 3),
        (
            "a new tree",
            Box::new(|w| {
                std::fs::create_dir_all(w.join("n/m")).and_then(|()| std::fs::write(w.join("n/m/.env"), "")).unwrap()
            }),
            3,
        ),
        ("a file renamed to match", Box::new(|w| std::fs::rename(w.join("c/.envrc"), w.join("c/.env")).unwrap()), 1),
        (
            "a directory replaced by a file",
            Box::new(|w| std::fs::remove_dir_all(w.join("n")).and_then(|()| std::fs::write(w.join("n"), "")).unwrap()),
            1,
        ),
    ];
    for (what, change, relisted) in changes {
        change(&ws);
        let (got, listed) = kept(&host);
        assert_eq!(got, full(&host), "{what}");
        assert_eq!(listed, relisted, "{what}: directories listed again");
    }
    // A record that cannot be read is a full walk, never fewer matches.
    std::fs::write(std::fs::read_dir(&records).unwrap().next().unwrap().unwrap().path(), "D\tgarbage\n").unwrap();
    assert_eq!(kept(&host).0, full(&host));
    let _ = std::fs::remove_dir_all(&root);
}

/// A directory that cannot be listed is hidden whole, and never recorded: a sandbox that
/// made it unreadable in one run (so that the next run's walk would skip it) cannot read
/// what the glob hides in it after restoring it.
#[cfg(unix)]
#[test]
fn a_directory_that_cannot_be_listed_is_hidden_whole() {
    struct Unlistable(Clocked, PathBuf);
    impl HostFs for Unlistable {
        fn kind(&self, p: &Path) -> Option<Kind> {
            self.0.kind(p)
        }
        fn list(&self, d: &Path) -> Vec<(std::ffi::OsString, Kind)> {
            self.try_list(d).unwrap_or_default()
        }
        fn try_list(&self, d: &Path) -> Option<Vec<(std::ffi::OsString, Kind)>> {
            (d != self.1).then(|| self.0.list(d))
        }
        fn read(&self, p: &Path, limit: usize) -> Option<Vec<u8>> {
            self.0.read(p, limit)
        }
        fn stamp(&self, p: &Path) -> Option<(u64, u64, i64, i64)> {
            self.0.stamp(p)
        }
    }
    let (root, ws, pattern) = glob_tree("unlistable");
    let records = root.join("state/globs");
    let roots = [(ws.clone(), true)];
    let host = Unlistable(Clocked { shift: 60, coarse: false, lists: std::cell::Cell::new(0) }, ws.join("a"));
    for _ in 0..2 {
        let got = expand_glob(&pattern, &roots, &host, Some(&records)).unwrap();
        assert_eq!(got, [ws.join(".env"), ws.join("a")]);
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// On a file system with coarse change times, a name added in the same second as the last
/// listing leaves the directory's time as it was: such a directory is never trusted.
#[cfg(unix)]
#[test]
fn a_directory_changed_as_it_was_listed_is_listed_again() {
    let (root, ws, pattern) = glob_tree("racy");
    let records = root.join("state/globs");
    let roots = [(ws.clone(), true)];
    let host = Clocked { shift: 0, coarse: true, lists: std::cell::Cell::new(0) };
    for i in 0..20 {
        expand_glob(&pattern, &roots, &host, Some(&records)).unwrap();
        // Right after: the same coarse second, most of the time.
        std::fs::write(ws.join(format!("c/.env{i}")), "").unwrap();
        std::fs::create_dir(ws.join(format!("d/{i}"))).unwrap();
        std::fs::write(ws.join(format!("d/{i}/.env")), "").unwrap();
        let got = expand_glob(&pattern, &roots, &host, Some(&records)).unwrap();
        assert!(got.contains(&ws.join(format!("d/{i}/.env"))), "round {i}: {got:?}");
    }
    let _ = std::fs::remove_dir_all(&root);
}
