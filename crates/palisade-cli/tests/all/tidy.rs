//! Guards that keep the code and its map together: every source file is named in
//! ARCHITECTURE.md, and `unsafe` is allowed in one module only.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn library_sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for c in std::fs::read_dir(root().join("crates")).unwrap() {
        let src = c.unwrap().path().join("src");
        if src.is_dir() {
            sources(&src, &mut files);
        }
    }
    files.sort();
    files
}

/// The part of ARCHITECTURE.md about one crate: from its `### `crates/NAME`` heading to the
/// next heading of that level.
fn section<'a>(map: &'a str, krate: &str) -> &'a str {
    let head = format!("### `crates/{krate}`");
    let Some(start) = map.find(&head) else { return "" };
    let rest = &map[start + head.len()..];
    &rest[..rest.find("\n### ").or_else(|| rest.find("\n## ")).unwrap_or(rest.len())]
}

#[test]
fn every_source_file_is_named_in_the_architecture_document() {
    let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let files = library_sources();
    let missing: Vec<String> = files
        .iter()
        .filter(|p| {
            let rel = p.strip_prefix(root().join("crates")).unwrap();
            let krate = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
            let text = section(&map, &krate);
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let dir = p.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
            // Two files of one crate with the same name are told apart by their directory.
            let shared = files
                .iter()
                .filter(|q| {
                    *q != *p && q.starts_with(root().join("crates").join(&krate)) && q.file_name() == p.file_name()
                })
                .count()
                > 0;
            match name.as_str() {
                // A module directory is named by its directory (`view/`).
                "mod.rs" => !text.contains(&format!("`{dir}/`")),
                "lib.rs" | "main.rs" => false,
                _ if shared => !text.contains(&format!("{dir}/{name}")),
                _ => !text.contains(&format!("`{name}`")) && !text.contains(&format!("{dir}/{name}")),
            }
        })
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "not named in their crate's part of ARCHITECTURE.md (add them to the code map): {missing:?}"
    );
}

#[test]
fn unsafe_code_is_allowed_only_in_the_backends_system_modules() {
    let allowed: Vec<String> = library_sources()
        .iter()
        .filter(|p| std::fs::read_to_string(p).unwrap().contains("allow(unsafe_code)"))
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    // `unsafe_code = "deny"` is a workspace lint; only `mod sys;` lifts it, and the test
    // probe, which exists to make raw system calls inside sandboxes.
    assert_eq!(
        allowed,
        [
            "crates/palisade-cli/src/bin/palisade-probe.rs",
            "crates/palisade-linux/src/lib.rs",
            "crates/palisade-windows/src/lib.rs"
        ]
    );
    for backend in ["linux", "windows"] {
        let lib = std::fs::read_to_string(root().join(format!("crates/palisade-{backend}/src/lib.rs"))).unwrap();
        assert!(lib.contains("#[allow(unsafe_code)]\nmod sys;"), "the allowance must be on `mod sys` alone");
        assert_eq!(lib.matches("allow(unsafe_code)").count(), 1, "palisade-{backend}");
    }
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(manifest.contains("unsafe_code = \"deny\""));
}
