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
