//! The embedded default policy and built-in profiles.

/// The built-in default policy, as TOML.
#[cfg(not(windows))]
pub const DEFAULT_POLICY: &str = include_str!("../defaults/default.toml");
/// The embedded default policy (`palisade policy default`): Windows' paths.
#[cfg(windows)]
pub const DEFAULT_POLICY: &str = WINDOWS_DEFAULT_POLICY;
/// Windows' default policy, on every OS (so its tests run everywhere).
pub const WINDOWS_DEFAULT_POLICY: &str = include_str!("../defaults/windows.toml");
/// The Linux (and macOS) default policy, on every OS.
pub const UNIX_DEFAULT_POLICY: &str = include_str!("../defaults/default.toml");

/// Built-in profiles: name and TOML.
pub const PROFILES: &[(&str, &str)] = &[
    ("aider", include_str!("../defaults/profiles/aider.toml")),
    ("claude", include_str!("../defaults/profiles/claude.toml")),
    ("codex", include_str!("../defaults/profiles/codex.toml")),
    ("gemini", include_str!("../defaults/profiles/gemini.toml")),
    ("generic", include_str!("../defaults/profiles/generic.toml")),
    ("opencode", include_str!("../defaults/profiles/opencode.toml")),
];

/// The built-in profile called `name`.
pub fn profile(name: &str) -> Option<&'static str> {
    PROFILES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}
