//! Canonicalisation through the real file system, on a temporary tree.

use std::path::{Path, PathBuf};

use palisade_policy::load::FsResolver;
use palisade_policy::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("palisade-policy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(std::fs::canonicalize(&p).unwrap())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn layer_for(root: &Path, text: &str) -> Layer {
    let vars = Vars::with_defaults(&root.join("home"), &root.join("ws"));
    parse_layer(text, "t.toml", LayerKind::User, &vars, &FsResolver::default()).unwrap()
}

#[test]
fn symlinks_are_resolved_when_the_policy_is_resolved() {
    let t = TempDir::new("symlink");
    let root = &t.0;
    std::fs::create_dir_all(root.join("real/secrets")).unwrap();
    std::fs::create_dir_all(root.join("home")).unwrap();
    std::os::unix::fs::symlink(root.join("real/secrets"), root.join("home/.ssh")).unwrap();
    let l = layer_for(root, "[filesystem]\nread = [\"~\", \"../real\"]\ndeny = [\"~/.ssh\"]\n");
    let p = resolve(&root.join("ws"), &root.join("home"), vec![l], ResolveOptions::default()).unwrap();
    // The target of the denied link is denied, and so is the link's own path.
    assert_eq!(p.decide_path(&root.join("real/secrets/id_rsa")).access, Access::None);
    assert_eq!(p.decide_path(&root.join("home/.ssh/id_rsa")).access, Access::None);
    assert_eq!(p.decide_path(&root.join("real/other")).access, Access::Read);
}

#[test]
fn paths_that_do_not_exist_yet_are_covered() {
    let t = TempDir::new("missing");
    let root = &t.0;
    std::fs::create_dir_all(root.join("ws")).unwrap();
    // A dangling link inside the workspace pointing at a denied place.
    std::os::unix::fs::symlink(root.join("vault/new-key"), root.join("ws/innocent")).unwrap();
    let l = layer_for(
        root,
        "[filesystem]\nwrite = [\"${workspace}\"]\ndeny = [\"../vault\", \"${workspace}/innocent\"]\nprotect = [\".git/hooks\"]\n",
    );
    let p = resolve(&root.join("ws"), &root.join("home"), vec![l], ResolveOptions::default()).unwrap();
    assert_eq!(p.decide_path(&root.join("vault/new-key")).access, Access::None);
    assert_eq!(p.decide_path(&root.join("ws/innocent")).access, Access::None);
    assert_eq!(p.decide_path(&root.join("ws/.git/hooks/pre-commit")).access, Access::Read);
    assert_eq!(FsResolver::default().resolve(&root.join("ws/innocent")), root.join("vault/new-key"));
    assert_eq!(FsResolver::default().resolve(&root.join("ws/a/../b/c")), root.join("ws/b/c"));
}

#[test]
fn symlink_loops_terminate() {
    let t = TempDir::new("loop");
    let root = &t.0;
    std::os::unix::fs::symlink(root.join("b"), root.join("a")).unwrap();
    std::os::unix::fs::symlink(root.join("a"), root.join("b")).unwrap();
    let _ = FsResolver::default().resolve(&root.join("a/x"));
}

#[test]
fn a_listed_directory_answers_like_lstat() {
    use palisade_policy::hostfs::{HostFs, Kind};
    use std::os::unix::fs::PermissionsExt;
    let t = TempDir::new("listing");
    let d = t.0.join("d");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("file"), "x").unwrap();
    std::os::unix::fs::symlink("file", d.join("link")).unwrap();
    // A socket of mode 000 is a placeholder: absent, listed or not.
    let sock = std::os::unix::net::UnixListener::bind(d.join(".vscode")).unwrap();
    std::fs::set_permissions(d.join(".vscode"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let fs = FsResolver::default();
    // Enough lookups that the directory is listed, then every kind again.
    for i in 0..palisade_policy::load::LIST_AFTER {
        assert_eq!(fs.kind(&d.join(format!("missing-{i}"))), None);
    }
    assert_eq!(fs.kind(&d.join("missing-late")), None);
    assert_eq!(fs.kind(&d.join("file")), Some(Kind::File));
    assert_eq!(fs.kind(&d.join("sub")), Some(Kind::Dir));
    assert_eq!(fs.kind(&d.join("link")), Some(Kind::Symlink));
    assert_eq!(fs.kind(&d.join(".vscode")), None);
    assert_eq!(fs.resolve(&d.join("link")), d.join("file"));
    drop(sock);
}
