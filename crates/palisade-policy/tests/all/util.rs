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

pub fn resolve_layers(layers: Vec<Layer>, trust: bool) -> Result<ResolvedPolicy, PolicyError> {
    resolve(Path::new(WS), Path::new(HOME), layers, ResolveOptions { trust_project: trust })
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
