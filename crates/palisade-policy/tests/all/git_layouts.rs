//! The git index reader and the discovery against layouts made by the real git, in every
//! index format git writes.

use std::path::{Path, PathBuf};
use std::process::Command;

use palisade_policy::git::index::gitlinks;
use palisade_policy::load::{FsResolver, RealFs};

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("palisade-gitlayout-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(std::fs::canonicalize(p).unwrap())
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "protocol.file.allow=always",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A work tree with a file, an embedded repository and a submodule, committed.
fn superproject(t: &Tmp, extra_init: &[&str]) -> PathBuf {
    let src = t.0.join("src");
    std::fs::create_dir_all(&src).unwrap();
    git(&src, &[&["init", "-q"][..], extra_init].concat());
    git(&src, &["commit", "-q", "--allow-empty", "-m", "s"]);
    let w = t.0.join("w");
    std::fs::create_dir_all(w.join("deep/er")).unwrap();
    git(&w, &[&["init", "-q"][..], extra_init].concat());
    std::fs::write(w.join("a.txt"), "a").unwrap();
    git(&w.join("deep/er"), &[&["init", "-q", "emb"][..], extra_init].concat());
    git(&w.join("deep/er/emb"), &["commit", "-q", "--allow-empty", "-m", "e"]);
    git(&w, &["add", "a.txt", "deep/er/emb"]);
    git(&w, &["submodule", "add", "-q", src.to_str().unwrap(), "libs/sub"]);
    git(&w, &["commit", "-q", "-m", "w"]);
    w
}

fn links(w: &Path, hash: usize) -> Vec<String> {
    let data = std::fs::read(w.join(".git/index")).unwrap();
    let mut l: Vec<String> =
        gitlinks(&data, hash).unwrap().paths.into_iter().map(|p| String::from_utf8(p).unwrap()).collect();
    l.sort();
    l
}

#[test]
fn gitlinks_in_every_index_format() {
    let t = Tmp::new("formats");
    let w = superproject(&t, &[]);
    assert_eq!(links(&w, 20), ["deep/er/emb", "libs/sub"]);
    // Version 3: an entry with extended flags.
    git(&w, &["update-index", "--skip-worktree", "a.txt"]);
    assert_eq!(std::fs::read(w.join(".git/index")).unwrap()[7], 3, "expected a version 3 index");
    assert_eq!(links(&w, 20), ["deep/er/emb", "libs/sub"]);
    // Version 4: prefix-compressed paths.
    git(&w, &["update-index", "--index-version", "4"]);
    assert_eq!(links(&w, 20), ["deep/er/emb", "libs/sub"]);
}

#[test]
fn gitlinks_of_a_split_index_include_the_shared_part() {
    let t = Tmp::new("split");
    let w = superproject(&t, &[]);
    git(&w, &["update-index", "--split-index"]);
    std::fs::write(w.join("b.txt"), "b").unwrap();
    git(&w, &["add", "b.txt"]);
    let data = std::fs::read(w.join(".git/index")).unwrap();
    let l = gitlinks(&data, 20).unwrap();
    let shared = l.shared_index.expect("a split index names its shared index");
    let shared = std::fs::read(w.join(format!(".git/sharedindex.{shared}"))).unwrap();
    let mut all: Vec<_> = l.paths.into_iter().chain(gitlinks(&shared, 20).unwrap().paths).collect();
    all.sort();
    all.dedup();
    assert_eq!(all, [b"deep/er/emb".to_vec(), b"libs/sub".to_vec()]);
    // Discovery reads both.
    let c =
        palisade_policy::git::discover(std::slice::from_ref(&w), &[], &t.0, &RealFs, &FsResolver::default()).controls;
    assert!(c.iter().any(|c| c.path == w.join("deep/er/emb/.git/config")), "{c:#?}");
}

#[test]
fn gitlinks_of_a_sha256_repository() {
    let t = Tmp::new("sha256");
    let w = superproject(&t, &["--object-format=sha256"]);
    assert_eq!(links(&w, 32), ["deep/er/emb", "libs/sub"]);
    let c =
        palisade_policy::git::discover(std::slice::from_ref(&w), &[], &t.0, &RealFs, &FsResolver::default()).controls;
    assert!(c.iter().any(|c| c.path == w.join("deep/er/emb/.git/hooks")), "{c:#?}");
    assert!(c.iter().any(|c| c.path == w.join("libs/sub/.git")), "{c:#?}");
    assert!(c.iter().any(|c| c.path == w.join(".git/modules/libs/sub/config")), "{c:#?}");
}

fn controls(w: &Path, home: &Path) -> Vec<PathBuf> {
    palisade_policy::git::discover(std::slice::from_ref(&w.to_path_buf()), &[], home, &RealFs, &FsResolver::default())
        .controls
        .into_iter()
        .map(|c| c.path)
        .collect()
}

#[test]
fn a_padded_index_hides_no_gitlink() {
    // An optional extension larger than anything read at first, before the trailing hash:
    // git accepts it ("ignoring Zpad extension"); the entries are all read.
    let t = Tmp::new("padded");
    let w = superproject(&t, &[]);
    let index = w.join(".git/index");
    let mut data = std::fs::read(&index).unwrap();
    data.truncate(data.len() - 20);
    data.extend_from_slice(b"Zpad");
    let pad = 8 << 20;
    data.extend_from_slice(&(pad as u32).to_be_bytes());
    data.resize(data.len() + pad, 0);
    // git checks the trailing SHA-1 of the whole file.
    let hash = Command::new("sha1sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&data)?;
            c.wait_with_output()
        });
    let hex = String::from_utf8(hash.unwrap().stdout).unwrap();
    let bytes: Vec<u8> = (0..20).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    data.extend_from_slice(&bytes);
    std::fs::write(&index, &data).unwrap();
    git(&w, &["status", "--porcelain"]);
    assert!(controls(&w, &t.0).contains(&w.join("deep/er/emb/.git/config")));
}

#[test]
fn objects_behind_a_link_still_make_a_repository() {
    // git's own test (`access()`) follows links; so does discovery, or the repository's
    // configuration would go unread and what it names unprotected.
    let t = Tmp::new("objlink");
    let w = superproject(&t, &[]);
    std::fs::rename(w.join(".git/objects"), w.join(".git/o2")).unwrap();
    std::os::unix::fs::symlink("o2", w.join(".git/objects")).unwrap();
    git(&w, &["config", "core.hooksPath", ".husky/_"]);
    let c = controls(&w, &t.0);
    assert!(c.contains(&w.join(".git/config")) && c.contains(&w.join(".husky/_")), "{c:#?}");
    assert!(c.contains(&w.join(".husky")), "husky runs the scripts beside its hooks directory: {c:#?}");
}

#[test]
fn indirections_of_hooks_includes_and_programs_are_followed() {
    let t = Tmp::new("indirect");
    let w = superproject(&t, &[]);
    std::fs::create_dir_all(w.join("scripts")).unwrap();
    std::fs::write(w.join("scripts/pre-commit"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("../../scripts/pre-commit", w.join(".git/hooks/pre-commit")).unwrap();
    git(&w, &["config", "filter.strip.clean", "./tools/clean.sh --strip"]);
    git(&w, &["config", "alias.fix", "!scripts/fix.sh"]);
    // An include through a link: git resolves the nested include next to the link.
    std::fs::create_dir_all(w.join("cfg")).unwrap();
    std::fs::create_dir_all(t.0.join("other")).unwrap();
    std::fs::write(t.0.join("other/real.inc"), "[include]\n\tpath = nested.inc\n").unwrap();
    std::os::unix::fs::symlink(t.0.join("other/real.inc"), w.join("cfg/main.inc")).unwrap();
    git(&w, &["config", "include.path", "../cfg/main.inc"]);
    let c = controls(&w, &t.0);
    // The linked hook is listed itself; derivation follows it to scripts/pre-commit.
    for want in [".git/hooks/pre-commit", "tools/clean.sh", "scripts/fix.sh", "cfg/main.inc", "cfg/nested.inc"] {
        assert!(c.iter().any(|p| p.ends_with(want)), "{want} missing: {c:#?}");
    }
    // The user's relative core.hooksPath applies in every work tree.
    let global = t.0.join("gitconfig");
    std::fs::write(&global, "[core]\n\thooksPath = .githooks\n").unwrap();
    let c = palisade_policy::git::discover(std::slice::from_ref(&w), &[global], &t.0, &RealFs, &FsResolver::default())
        .controls;
    assert!(c.iter().any(|c| c.path == w.join(".githooks")), "{c:#?}");
}
