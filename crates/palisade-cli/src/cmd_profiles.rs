//! `palisade profiles`: the profiles `--profile NAME` can name, built-in and your own.

use crate::Outcome;

/// The first comment line of a profile file (its one-line description), without `# `.
fn described(text: &str) -> String {
    text.lines().find_map(|l| l.strip_prefix('#').map(|d| d.trim().to_owned())).unwrap_or_default()
}

pub fn run() -> Outcome {
    let env = palisade_policy::load::Environment::from_process()?;
    let dir = env.profile_dir();
    // Yours first in effect: a file of the same name replaces the built-in profile.
    let mut own: Vec<(String, String)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".toml")?.to_owned();
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            Some((name, described(&text)))
        })
        .collect();
    own.sort();
    for (name, text) in palisade_policy::builtin::PROFILES {
        let replaced = own.iter().any(|(n, _)| n == name);
        let note = if replaced { format!("  (replaced by yours in {})", dir.display()) } else { String::new() };
        println!("{name:<10} built-in  {}{note}", described(text));
    }
    for (name, d) in &own {
        println!("{name:<10} {}  {d}", dir.join(format!("{name}.toml")).display());
    }
    println!("\nWhat each grants: `palisade policy show --profile NAME`; how they were measured: docs/profiles.md");
    Ok(0)
}
