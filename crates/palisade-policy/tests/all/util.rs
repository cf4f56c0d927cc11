use std::path::Path;

use palisade_policy::load::{Flags, flags_layer};
use palisade_policy::*;

pub const HOME: &str = "/home/u";
pub const WS: &str = "/w/proj";

pub fn vars() -> Vars {
    Vars::with_defaults(Path::new(HOME), Path::new(WS))
}

pub fn layer(kind: LayerKind, text: &str) -> Layer {
    parse_layer(text, &format!("{kind}.toml"), kind, &vars(), &Lexical).unwrap_or_else(|e| panic!("{e}"))
}

pub fn builtin() -> Layer {
    parse_layer(builtin::DEFAULT_POLICY, "<built-in>", LayerKind::Builtin, &vars(), &Lexical).unwrap()
}

pub fn flags(f: Flags) -> Layer {
    flags_layer(&f, &vars(), &Lexical, Path::new(WS)).unwrap_or_else(|e| panic!("{e}"))
}

/// The host the tests' policies are derived on: the workspace is a git repository with a
/// submodule; the home has `~/.cargo`.
pub fn host() -> hostfs::MemFs {
    hostfs::MemFs::new()
        .git_dir(&format!("{WS}/.git"))
        .git_dir(&format!("{WS}/.git/modules/sub"))
        .with(&format!("{HOME}/.cargo"), Kind::Dir)
        .with("/tmp", Kind::Dir)
}

pub fn resolve_layers(layers: Vec<Layer>, trust: bool) -> Result<ResolvedPolicy, PolicyError> {
    resolve_on(&host(), layers, trust)
}

/// Resolves `layers` and derives the host-dependent rules on `fs`, as `load` does.
pub fn resolve_on(fs: &dyn HostFs, layers: Vec<Layer>, trust: bool) -> Result<ResolvedPolicy, PolicyError> {
    let mut p = resolve(Path::new(WS), Path::new(HOME), layers, ResolveOptions { trust_project: trust })?;
    let private = [std::path::PathBuf::from("/tmp")];
    let host = derive::Host { fs, resolver: &Lexical, private: &private, git_configs: &[], path_var: &[] };
    p.derive(&host, trust)?;
    Ok(p)
}

pub fn policy(layers: Vec<Layer>) -> ResolvedPolicy {
    resolve_layers(layers, false).unwrap_or_else(|e| panic!("{e}"))
}

pub fn access(p: &ResolvedPolicy, path: &str) -> Access {
    p.decide_path(Path::new(path)).access
}

pub fn allowed(p: &ResolvedPolicy, target: &str) -> bool {
    p.decide_net(&Target::parse(target, 443).unwrap()).allowed
}
