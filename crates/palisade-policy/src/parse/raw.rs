//! The policy file as TOML sees it: `serde` types with spans, unknown keys refused. Checked
//! and turned into rules by the parent module.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(super) type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) version: Option<S<i64>>,
    pub(super) filesystem: Option<RawFs>,
    pub(super) network: Option<RawNet>,
    pub(super) process: Option<RawProcess>,
    pub(super) monitor: Option<RawMonitor>,
    pub(super) windows: Option<RawWindows>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindows {
    pub(super) tier: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFs {
    #[serde(default)]
    pub(super) read: Vec<S<String>>,
    #[serde(default)]
    pub(super) write: Vec<S<String>>,
    #[serde(default)]
    pub(super) deny: Vec<S<String>>,
    #[serde(default)]
    pub(super) protect: Vec<S<String>>,
    #[serde(default)]
    pub(super) state: Vec<S<String>>,
    #[serde(default)]
    pub(super) own_copy: Vec<S<String>>,
    #[serde(default)]
    pub(super) cache: Vec<S<String>>,
    #[serde(default)]
    pub(super) programs: Vec<S<String>>,
    pub(super) protect_git: Option<S<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNet {
    pub(super) mode: Option<S<String>>,
    #[serde(default)]
    pub(super) allow: Vec<S<String>>,
    #[serde(default)]
    pub(super) deny: Vec<S<String>>,
    #[serde(default)]
    pub(super) quiet: Vec<S<String>>,
    #[serde(default)]
    pub(super) publish: Vec<S<String>>,
    #[serde(default)]
    pub(super) hosts: BTreeMap<S<String>, S<String>>,
    pub(super) max_connections: Option<S<u64>>,
    pub(super) handshake_timeout: Option<S<String>>,
    pub(super) idle_timeout: Option<S<String>>,
    pub(super) max_upload: Option<S<String>>,
    pub(super) max_download: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProcess {
    pub(super) env: Option<RawEnv>,
    pub(super) memory: Option<S<String>>,
    pub(super) pids: Option<S<u64>>,
    pub(super) cpu_time: Option<S<String>>,
    pub(super) wall_time: Option<S<String>>,
    pub(super) file_size: Option<S<String>>,
    pub(super) open_files: Option<S<u64>>,
    pub(super) tmp_size: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnv {
    #[serde(default)]
    pub(super) pass: Vec<S<String>>,
    #[serde(default)]
    pub(super) deny: Vec<S<String>>,
    #[serde(default)]
    pub(super) set: BTreeMap<S<String>, S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMonitor {
    pub(super) audit: Option<S<String>>,
    pub(super) retention: Option<S<String>>,
    pub(super) keep: Option<S<u64>>,
    #[serde(default)]
    pub(super) tripwires: Vec<S<String>>,
    #[serde(default)]
    pub(super) rules: Vec<S<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) name: Option<S<String>>,
    pub(super) when: S<String>,
    pub(super) action: S<String>,
}
