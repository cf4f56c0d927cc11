//! Any text given to the policy parser yields a layer or an error, never a panic; a layer
//! that parses also resolves and answers decisions.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use palisade_policy::*;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let vars = Vars::with_defaults(Path::new("/home/u"), Path::new("/w/proj"));
    for kind in [LayerKind::User, LayerKind::Project] {
        let Ok(layer) = parse_layer(text, "fuzz.toml", kind, &vars, &Lexical) else { continue };
        let Ok(p) = resolve(Path::new("/w/proj"), Path::new("/home/u"), vec![layer], ResolveOptions::default()) else {
            continue;
        };
        let _ = p.decide_path(Path::new("/home/u/.ssh/id_rsa"));
        let _ = p.decide_env("GITHUB_TOKEN");
        if let Ok(t) = Target::parse("api.example.com:443", 443) {
            let _ = p.decide_net(&t);
        }
    }
});
