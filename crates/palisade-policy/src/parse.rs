//! From text to a [`Layer`]: TOML files and command-line flags go through the same checks.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{PolicyError, Site};
use crate::host::{HostName, NetPattern};
use crate::model::*;
use crate::monitor::{Action, Condition};
use crate::pathrule::{PathPattern, is_glob, literal_prefix};
use crate::units::{parse_duration, parse_size};
use crate::vars::{PathResolver, Vars, normalize_lexically};

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Option<S<i64>>,
    filesystem: Option<RawFs>,
    network: Option<RawNet>,
    process: Option<RawProcess>,
    monitor: Option<RawMonitor>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFs {
    #[serde(default)]
    read: Vec<S<String>>,
    #[serde(default)]
    write: Vec<S<String>>,
    #[serde(default)]
    deny: Vec<S<String>>,
    #[serde(default)]
    protect: Vec<S<String>>,
    protect_git: Option<S<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNet {
    mode: Option<S<String>>,
    #[serde(default)]
    allow: Vec<S<String>>,
    #[serde(default)]
    deny: Vec<S<String>>,
    #[serde(default)]
    hosts: BTreeMap<S<String>, S<String>>,
    max_connections: Option<S<u64>>,
    handshake_timeout: Option<S<String>>,
    idle_timeout: Option<S<String>>,
    max_upload: Option<S<String>>,
    max_download: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    env: Option<RawEnv>,
    memory: Option<S<String>>,
    pids: Option<S<u64>>,
    cpu_time: Option<S<String>>,
    wall_time: Option<S<String>>,
    file_size: Option<S<String>>,
    open_files: Option<S<u64>>,
    tmp_size: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnv {
    #[serde(default)]
    pass: Vec<S<String>>,
    #[serde(default)]
    deny: Vec<S<String>>,
    #[serde(default)]
    set: BTreeMap<S<String>, S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonitor {
    audit: Option<S<String>>,
    #[serde(default)]
    tripwires: Vec<S<String>>,
    #[serde(default)]
    rules: Vec<S<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<S<String>>,
    when: S<String>,
    action: S<String>,
}

/// The text of a policy source and its name, to turn byte spans into sites.
struct SourceText<'a> {
    name: &'a str,
    text: &'a str,
    /// Byte offset of the start of each line, to turn a span into a line in O(log n).
    line_starts: Vec<usize>,
}

impl<'a> SourceText<'a> {
    fn new(name: &'a str, text: &'a str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        SourceText { name, text, line_starts }
    }

    fn site(&self, span: Range<usize>, key: &str) -> Site {
        let start = span.start.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= start);
        let line_start = self.line_starts[line - 1];
        let column = self.text[line_start..start].chars().count() + 1;
        Site { source: self.name.to_owned(), line, column, key: key.to_owned() }
    }

    /// The dotted key whose key or value contains byte `pos` (best effort, for serde errors).
    fn key_at(&self, pos: usize) -> String {
        fn in_value(v: &DeValue<'_>, pos: usize) -> Option<Vec<String>> {
            match v {
                DeValue::Table(t) => in_table(t, pos),
                DeValue::Array(a) => a.iter().enumerate().find_map(|(i, item)| {
                    let inner = in_value(item.get_ref(), pos);
                    let hit = inner.is_some() || item.span().contains(&pos);
                    hit.then(|| {
                        let mut p = vec![format!("[{i}]")];
                        p.extend(inner.unwrap_or_default());
                        p
                    })
                }),
                _ => None,
            }
        }
        fn in_table(t: &DeTable<'_>, pos: usize) -> Option<Vec<String>> {
            t.iter().find_map(|(k, v)| {
                let inner = in_value(v.get_ref(), pos);
                let hit = inner.is_some() || k.span().contains(&pos) || v.span().contains(&pos);
                hit.then(|| {
                    let mut p = vec![k.get_ref().to_string()];
                    p.extend(inner.unwrap_or_default());
                    p
                })
            })
        }
        let parts = DeTable::parse(self.text).ok().and_then(|doc| in_table(doc.get_ref(), pos));
        match parts {
            Some(parts) => parts.iter().fold(String::new(), |mut acc, p| {
                if !acc.is_empty() && !p.starts_with('[') {
                    acc.push('.');
                }
                acc.push_str(p);
                acc
            }),
            // The document does not parse (a syntax error, a duplicate key): take the key
            // written on the line of the error, if there is one.
            None => {
                let start = self.text[..pos.min(self.text.len())].rfind('\n').map_or(0, |i| i + 1);
                let line = self.text[start..].lines().next().unwrap_or("");
                match line.split_once('=') {
                    Some((k, _)) if !k.trim().is_empty() => k.trim().trim_matches('"').to_owned(),
                    _ => "(top level)".to_owned(),
                }
            }
        }
    }
}

/// Builds rules for one layer, checking each value and recording where it came from.
/// Shared by the TOML parser and the command-line flags.
/// The value that lifts a limit.
pub const UNLIMITED: &str = "unlimited";

/// The prefix of a `deny`/`protect` entry that applies under every writable root.
pub const WRITABLE: &str = "${writable}";

pub struct LayerBuilder<'a> {
    kind: LayerKind,
    vars: &'a Vars,
    resolver: &'a dyn PathResolver,
    /// Relative paths are taken relative to this directory.
    base: PathBuf,
    rules: Rules,
}

impl std::fmt::Debug for LayerBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerBuilder").field("kind", &self.kind).field("base", &self.base).finish()
    }
}

impl<'a> LayerBuilder<'a> {
    pub fn new(kind: LayerKind, vars: &'a Vars, resolver: &'a dyn PathResolver, base: &Path) -> Self {
        LayerBuilder { kind, vars, resolver, base: base.to_path_buf(), rules: Rules::default() }
    }

    fn origin(&self, site: Site, text: &str) -> Origin {
        Origin { layer: self.kind.clone(), site, text: text.to_owned() }
    }

    fn path(&self, text: &str, site: &Site) -> Result<PathBuf, PolicyError> {
        // `**/NAME` means NAME anywhere, not only under the workspace.
        let base = if text.starts_with("**") { Path::new("/") } else { &self.base };
        let p = self.vars.expand(text, base).map_err(|m| PolicyError::invalid(site.clone(), m))?;
        Ok(normalize_lexically(&p))
    }

    /// Sets `filesystem.protect_git`.
    pub fn protect_git(&mut self, value: bool, site: Site) {
        self.rules.protect_git = Some(Setting { value, origin: self.origin(site, &value.to_string()) });
    }

    /// Adds a `read`, `write`, `deny` or `protect` entry.
    pub fn path_rule(&mut self, kind: PathKind, text: &str, site: Site) -> Result<(), PolicyError> {
        if let Some(rest) = text.strip_prefix(WRITABLE) {
            return self.root_rule(kind, text, rest, site);
        }
        let lexical = self.path(text, &site)?;
        let glob = is_glob(&lexical.to_string_lossy());
        if glob && matches!(kind, PathKind::Read | PathKind::Write) {
            return Err(PolicyError::invalid(
                site,
                format!("`{text}`: globs are only allowed in `deny` and `protect`; grant concrete paths"),
            ));
        }
        if lexical == Path::new("/") && kind != PathKind::Read {
            return Err(PolicyError::invalid(
                site,
                format!("`{text}` names the root directory; {} it is never what you want", kind.key()),
            ));
        }
        // Canonicalise the literal part; the glob tail, if any, is kept as written.
        let canonical = if glob {
            let prefix = literal_prefix(&lexical);
            let tail = lexical.strip_prefix(&prefix).unwrap_or(&lexical).to_path_buf();
            self.resolver.resolve(&prefix).join(tail)
        } else {
            self.resolver.resolve(&lexical)
        };
        let narrowing = matches!(kind, PathKind::Deny | PathKind::Protect);
        let mut targets = vec![canonical.clone()];
        // A deny or protect on a symlink covers the link's own path as well as its target.
        if narrowing && lexical != canonical {
            targets.push(lexical.clone());
        }
        let via_link = (!narrowing && lexical != canonical).then_some(lexical);
        for t in targets {
            let pattern = PathPattern::new(t).map_err(|m| PolicyError::invalid(site.clone(), m))?;
            let origin = self.origin(site.clone(), text);
            self.rules.paths.push(PathRule {
                kind,
                pattern,
                via_link: via_link.clone(),
                private_copy: false,
                placeholder: Placeholder::Absent,
                origin,
            });
        }
        Ok(())
    }

    /// `${writable}/REL` in `deny` or `protect`: REL under every writable root.
    fn root_rule(&mut self, kind: PathKind, text: &str, rest: &str, site: Site) -> Result<(), PolicyError> {
        let bad = |why: &str| Err(PolicyError::invalid(site.clone(), format!("`{text}`: {why}")));
        if !matches!(kind, PathKind::Deny | PathKind::Protect) {
            return bad("`${writable}` names paths under every writable root; use it in `deny` and `protect` only");
        }
        let Some(rel) = rest.strip_prefix('/').filter(|r| !r.is_empty()) else {
            return bad("write `${writable}/NAME`: a path below each writable root");
        };
        if rel.contains('\0') {
            return bad("path contains a NUL byte");
        }
        if is_glob(rel) || rel.contains('$') || rel.starts_with('~') {
            return bad("after `${writable}/` give a plain relative path (no globs or variables)");
        }
        let raw = Path::new(rel);
        if raw.components().any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir)) {
            return bad("the path must stay below the root (no `..`)");
        }
        let rel = normalize_lexically(raw);
        if rel.as_os_str().is_empty() {
            return bad("write `${writable}/NAME`: a path below each writable root");
        }
        let origin = self.origin(site, text);
        self.rules.per_root.push(RootRule { kind, rel, origin });
        Ok(())
    }

    pub fn net_mode(&mut self, text: &str, site: Site) -> Result<(), PolicyError> {
        let value = match text {
            "none" => NetMode::None,
            "allowlist" => NetMode::Allowlist,
            other => {
                return Err(PolicyError::invalid(
                    site,
                    format!("unknown network mode `{other}` (expected none or allowlist)"),
                ));
            }
        };
        self.rules.net_mode = Some(Setting { value, origin: self.origin(site, text) });
        Ok(())
    }

    pub fn net_rule(&mut self, allow: bool, text: &str, site: Site) -> Result<(), PolicyError> {
        let pattern = NetPattern::parse(text).map_err(|m| PolicyError::invalid(site.clone(), m))?;
        let rule = NetRule { pattern, origin: self.origin(site, text) };
        if allow {
            self.rules.net_allow.push(rule)
        } else {
            self.rules.net_deny.push(rule)
        }
        Ok(())
    }

    pub fn host_mapping(&mut self, name: &str, addr: &str, site: Site) -> Result<(), PolicyError> {
        let host = HostName::parse(name).map_err(|m| PolicyError::invalid(site.clone(), m))?;
        let ip: std::net::IpAddr =
            addr.parse().map_err(|_| PolicyError::invalid(site.clone(), format!("`{addr}` is not an IP address")))?;
        let origin = self.origin(site, &format!("{name} = {addr}"));
        self.rules.hosts.retain(|h| h.name != host);
        self.rules.hosts.push(HostMapping { name: host, addr: ip.to_canonical(), origin });
        Ok(())
    }

    /// Adds an `env.pass` (`deny == false`) or `env.deny` entry.
    pub fn env_rule(&mut self, deny: bool, text: &str, site: Site) -> Result<(), PolicyError> {
        check_env_pattern(text).map_err(|m| PolicyError::invalid(site.clone(), m))?;
        let rule = EnvRule { pattern: text.to_owned(), origin: self.origin(site, text) };
        if deny {
            self.rules.env_deny.push(rule)
        } else {
            self.rules.env_pass.push(rule)
        }
        Ok(())
    }

    pub fn env_set(&mut self, name: &str, value: &str, site: Site) -> Result<(), PolicyError> {
        if name.contains('*') {
            return Err(PolicyError::invalid(site, format!("`{name}`: a variable to set needs a plain name")));
        }
        check_env_pattern(name).map_err(|m| PolicyError::invalid(site.clone(), m))?;
        if value.contains('\0') {
            return Err(PolicyError::invalid(site, format!("value of `{name}` contains a NUL byte")));
        }
        let origin = self.origin(site, &format!("{name}={value}"));
        self.rules.env_set.retain(|e| e.name != name);
        self.rules.env_set.push(EnvSet { name: name.to_owned(), value: value.to_owned(), origin });
        Ok(())
    }

    /// A size, or `unlimited` (lifts a lower layer's limit; a project may not).
    fn size(&self, text: &str, site: Site) -> Result<Setting<u64>, PolicyError> {
        let value = if text.trim() == UNLIMITED {
            u64::MAX
        } else {
            parse_size(text).map_err(|m| PolicyError::invalid(site.clone(), m))?
        };
        Ok(Setting { value, origin: self.origin(site, text) })
    }

    /// A timeout: a duration above zero, at most a day (`unlimited` is not one).
    fn timeout(&self, text: &str, site: Site) -> Result<Setting<std::time::Duration>, PolicyError> {
        let value = parse_duration(text).map_err(|m| PolicyError::invalid(site.clone(), m))?;
        if value.is_zero() || value > std::time::Duration::from_secs(86_400) {
            return Err(PolicyError::invalid(site, format!("`{text}` must be above zero and at most a day")));
        }
        Ok(Setting { value, origin: self.origin(site, text) })
    }

    /// A duration, or `unlimited`.
    fn duration(&self, text: &str, site: Site) -> Result<Setting<std::time::Duration>, PolicyError> {
        let value = if text.trim() == UNLIMITED {
            std::time::Duration::MAX
        } else {
            parse_duration(text).map_err(|m| PolicyError::invalid(site.clone(), m))?
        };
        Ok(Setting { value, origin: self.origin(site, text) })
    }

    /// A limit given as text (the command-line flags): `key` is the `[process]` key.
    pub(crate) fn limit_text(&mut self, key: &str, text: &str, site: Site) -> Result<(), PolicyError> {
        let count = |b: &Self, site: Site| -> Result<Setting<u64>, PolicyError> {
            if text.trim() == UNLIMITED {
                return Ok(Setting { value: u64::MAX, origin: b.origin(site, text) });
            }
            let n = text.trim().parse::<u64>().map_err(|_| {
                PolicyError::invalid(site.clone(), format!("`{text}` is not a whole number (or `unlimited`)"))
            })?;
            b.count(n, site)
        };
        match key {
            "memory" => self.rules.limits.memory = Some(self.size(text, site)?),
            "pids" => self.rules.limits.pids = Some(count(self, site)?),
            "cpu_time" => self.rules.limits.cpu_time = Some(self.duration(text, site)?),
            "wall_time" => self.rules.limits.wall_time = Some(self.duration(text, site)?),
            "file_size" => self.rules.limits.file_size = Some(self.size(text, site)?),
            "open_files" => self.rules.limits.open_files = Some(count(self, site)?),
            "tmp_size" => self.rules.limits.tmp_size = Some(self.size(text, site)?),
            other => return Err(PolicyError::invalid(site, format!("unknown limit `{other}`"))),
        }
        Ok(())
    }

    fn count(&self, value: u64, site: Site) -> Result<Setting<u64>, PolicyError> {
        if value == 0 {
            return Err(PolicyError::invalid(site, "must be at least 1"));
        }
        Ok(Setting { value, origin: self.origin(site, &value.to_string()) })
    }

    pub fn audit(&mut self, text: &str, site: Site) -> Result<(), PolicyError> {
        let value = self.path(text, &site)?;
        self.rules.audit = Some(Setting { value, origin: self.origin(site, text) });
        Ok(())
    }

    pub fn tripwire(&mut self, text: &str, site: Site) -> Result<(), PolicyError> {
        let value = self.path(text, &site)?;
        if is_glob(&value.to_string_lossy()) {
            return Err(PolicyError::invalid(site, format!("`{text}`: a tripwire is one concrete file, not a glob")));
        }
        self.rules.tripwires.push(Setting { value, origin: self.origin(site, text) });
        Ok(())
    }

    pub fn monitor_rule(
        &mut self,
        name: Option<&str>,
        when: (&str, Site),
        action: (&str, Site),
    ) -> Result<(), PolicyError> {
        let cond = Condition::parse(when.0).map_err(|m| PolicyError::invalid(when.1.clone(), m))?;
        let act = Action::parse(action.0).map_err(|m| PolicyError::invalid(action.1, m))?;
        let origin = self.origin(when.1, when.0);
        self.rules.monitor_rules.push(MonitorRule { name: name.map(str::to_owned), when: cond, action: act, origin });
        Ok(())
    }

    pub fn finish(self, source: &str) -> Layer {
        Layer { kind: self.kind, source: source.to_owned(), rules: self.rules }
    }
}

fn check_env_pattern(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("empty variable name".into());
    }
    if !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'*') {
        return Err(format!(
            "`{}` is not a variable name (letters, digits, `_`, and `*` in patterns)",
            text.escape_debug()
        ));
    }
    if text.bytes().all(|b| b == b'*') {
        return Err(format!("`{text}` matches every variable; list the names you need"));
    }
    Ok(())
}

/// Parses one policy file's text into a layer.
///
/// `name` is how errors refer to the source (a path, `<built-in>`); relative paths in the
/// file are taken relative to the workspace.
pub fn parse_layer(
    text: &str,
    name: &str,
    kind: LayerKind,
    vars: &Vars,
    resolver: &dyn PathResolver,
) -> Result<Layer, PolicyError> {
    let src = SourceText::new(name, text);
    let raw: RawPolicy = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let key = src.key_at(span.start);
        PolicyError::invalid(src.site(span, &key), e.message().trim().to_owned())
    })?;
    let mut b = LayerBuilder::new(kind, vars, resolver, &vars.workspace);
    let site = |span: Range<usize>, key: &str| src.site(span, key);

    if let Some(v) = raw.version {
        if *v.get_ref() != 1 {
            return Err(PolicyError::invalid(
                site(v.span(), "version"),
                format!("unsupported policy version {} (this Palisade reads version 1)", v.get_ref()),
            ));
        }
    }
    if let Some(fs) = raw.filesystem {
        for (kind, list) in [
            (PathKind::Read, fs.read),
            (PathKind::Write, fs.write),
            (PathKind::Deny, fs.deny),
            (PathKind::Protect, fs.protect),
        ] {
            for v in list {
                b.path_rule(kind, v.get_ref(), site(v.span(), &format!("filesystem.{}", kind.key())))?;
            }
        }
        if let Some(g) = fs.protect_git {
            b.protect_git(*g.get_ref(), site(g.span(), "filesystem.protect_git"));
        }
    }
    if let Some(net) = raw.network {
        if let Some(m) = net.mode {
            b.net_mode(m.get_ref(), site(m.span(), "network.mode"))?;
        }
        for v in net.allow {
            b.net_rule(true, v.get_ref(), site(v.span(), "network.allow"))?;
        }
        for v in net.deny {
            b.net_rule(false, v.get_ref(), site(v.span(), "network.deny"))?;
        }
        for (k, v) in net.hosts {
            b.host_mapping(k.get_ref(), v.get_ref(), site(k.span(), &format!("network.hosts.{}", k.get_ref())))?;
        }
        let nb = &mut b.rules.net_budgets;
        let mut budgets = std::mem::take(nb);
        if let Some(v) = net.max_connections {
            budgets.max_connections = Some(b.count(*v.get_ref(), site(v.span(), "network.max_connections"))?);
        }
        if let Some(v) = net.handshake_timeout {
            budgets.handshake_timeout = Some(b.timeout(v.get_ref(), site(v.span(), "network.handshake_timeout"))?);
        }
        if let Some(v) = net.idle_timeout {
            budgets.idle_timeout = Some(b.timeout(v.get_ref(), site(v.span(), "network.idle_timeout"))?);
        }
        if let Some(v) = net.max_upload {
            budgets.max_upload = Some(b.size(v.get_ref(), site(v.span(), "network.max_upload"))?);
        }
        if let Some(v) = net.max_download {
            budgets.max_download = Some(b.size(v.get_ref(), site(v.span(), "network.max_download"))?);
        }
        b.rules.net_budgets = budgets;
    }
    if let Some(p) = raw.process {
        if let Some(env) = p.env {
            for v in env.pass {
                b.env_rule(false, v.get_ref(), site(v.span(), "process.env.pass"))?;
            }
            for v in env.deny {
                b.env_rule(true, v.get_ref(), site(v.span(), "process.env.deny"))?;
            }
            for (k, v) in env.set {
                b.env_set(k.get_ref(), v.get_ref(), site(k.span(), &format!("process.env.set.{}", k.get_ref())))?;
            }
        }
        let mut limits = Limits::default();
        if let Some(v) = p.memory {
            limits.memory = Some(b.size(v.get_ref(), site(v.span(), "process.memory"))?);
        }
        if let Some(v) = p.pids {
            limits.pids = Some(b.count(*v.get_ref(), site(v.span(), "process.pids"))?);
        }
        if let Some(v) = p.cpu_time {
            limits.cpu_time = Some(b.duration(v.get_ref(), site(v.span(), "process.cpu_time"))?);
        }
        if let Some(v) = p.wall_time {
            limits.wall_time = Some(b.duration(v.get_ref(), site(v.span(), "process.wall_time"))?);
        }
        if let Some(v) = p.file_size {
            limits.file_size = Some(b.size(v.get_ref(), site(v.span(), "process.file_size"))?);
        }
        if let Some(v) = p.open_files {
            limits.open_files = Some(b.count(*v.get_ref(), site(v.span(), "process.open_files"))?);
        }
        if let Some(v) = p.tmp_size {
            limits.tmp_size = Some(b.size(v.get_ref(), site(v.span(), "process.tmp_size"))?);
        }
        b.rules.limits = limits;
    }
    if let Some(m) = raw.monitor {
        if let Some(a) = m.audit {
            b.audit(a.get_ref(), site(a.span(), "monitor.audit"))?;
        }
        for t in m.tripwires {
            b.tripwire(t.get_ref(), site(t.span(), "monitor.tripwires"))?;
        }
        for (i, r) in m.rules.into_iter().enumerate() {
            let r = r.into_inner();
            let key = format!("monitor.rules[{i}]");
            let name = r.name.as_ref().map(|n| n.get_ref().as_str());
            b.monitor_rule(
                name,
                (r.when.get_ref(), site(r.when.span(), &format!("{key}.when"))),
                (r.action.get_ref(), site(r.action.span(), &format!("{key}.action"))),
            )?;
        }
    }
    Ok(b.finish(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars::Lexical;

    fn vars() -> Vars {
        Vars::with_defaults(Path::new("/home/u"), Path::new("/w/proj"))
    }

    fn parse(text: &str) -> Result<Layer, PolicyError> {
        parse_layer(text, "test.toml", LayerKind::User, &vars(), &Lexical)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn full_file() {
        let l = parse(
            r#"
version = 1
[filesystem]
read = ["~/.cargo", "/usr"]
write = ["${workspace}", "build"]
deny = ["**/.env", "~/.ssh"]
protect = [".git/hooks"]
[network]
mode = "allowlist"
allow = ["api.openai.com:443", "*.github.com"]
deny = ["evil.github.com"]
hosts = { "git.internal" = "10.0.0.5" }
[process]
memory = "4GiB"
pids = 512
cpu_time = "30m"
wall_time = "2h"
file_size = "1GiB"
open_files = 1024
tmp_size = "2GiB"
[process.env]
pass = ["LC_*", "EDITOR"]
deny = ["*TOKEN*"]
set = { RUST_LOG = "info" }
[monitor]
audit = "${state}/palisade/audit.jsonl"
tripwires = ["~/.ssh/id_ed25519"]
[[monitor.rules]]
when = "tripwire"
action = "kill"
[[monitor.rules]]
name = "burst"
when = "denied_connections > 20 in 60s"
action = "alert"
"#,
        )
        .unwrap();
        let r = &l.rules;
        assert_eq!(r.paths.len(), 7);
        assert_eq!(r.paths[2].pattern.to_string(), "/w/proj");
        assert_eq!(r.paths[3].pattern.to_string(), "/w/proj/build");
        assert_eq!(r.paths[4].pattern.to_string(), "/**/.env");
        assert_eq!(r.paths[6].pattern.to_string(), "/w/proj/.git/hooks");
        assert_eq!(r.paths[6].origin.site.line, 7);
        assert_eq!(r.mode(), NetMode::Allowlist);
        assert_eq!(r.net_allow.len(), 2);
        assert_eq!(r.hosts[0].addr.to_string(), "10.0.0.5");
        assert_eq!(r.limits.memory.as_ref().unwrap().value, 4 << 30);
        assert_eq!(r.limits.pids.as_ref().unwrap().value, 512);
        assert_eq!(r.env_set[0].name, "RUST_LOG");
        assert_eq!(r.audit.as_ref().unwrap().value, Path::new("/home/u/.local/state/palisade/audit.jsonl"));
        assert_eq!(r.monitor_rules.len(), 2);
        assert_eq!(r.monitor_rules[1].name.as_deref(), Some("burst"));
    }

    #[test]
    fn unknown_keys_name_file_line_column_and_key() {
        assert_eq!(
            err("[filesystem]\nread = []\nwrtie = [\"/x\"]\n")
                .lines()
                .next()
                .unwrap()
                .split(": unknown field")
                .next()
                .unwrap(),
            "test.toml:3:1: filesystem.wrtie"
        );
        let e = err("[network]\nmode = \"none\"\n[network.extra]\n");
        assert!(e.starts_with("test.toml:3:"), "{e}");
        assert!(e.contains("unknown field `extra`"), "{e}");
        let e = err("[nope]\n");
        assert!(e.starts_with("test.toml:1:2: nope:"), "{e}");
        let e = err("[[monitor.rules]]\nwhen = \"tripwire\"\naction = \"kill\"\nwhy = 1\n");
        assert!(e.starts_with("test.toml:4:1: monitor.rules[0].why:"), "{e}");
    }

    #[test]
    fn bad_values_name_file_line_column_and_key() {
        assert_eq!(
            err("[network]\nallow = [\"ok.com\", \"*\"]\n").split(": `*`").next().unwrap(),
            "test.toml:2:20: network.allow"
        );
        assert!(
            err("[network]\nmode = \"open\"\n").starts_with("test.toml:2:8: network.mode: unknown network mode `open`")
        );
        assert!(
            err("[process]\nmemory = \"4 parsecs\"\n").starts_with("test.toml:2:10: process.memory: unknown size unit")
        );
        assert!(err("[process]\npids = 0\n").starts_with("test.toml:2:8: process.pids: must be at least 1"));
        assert!(err("[process]\npids = \"many\"\n").starts_with("test.toml:2:8: process.pids: invalid type"));
        assert!(err("[process]\nwall_time = \"soon\"\n").starts_with("test.toml:2:13: process.wall_time:"));
        assert!(
            err("[filesystem]\nread = [\"${nope}/x\"]\n")
                .starts_with("test.toml:2:9: filesystem.read: `${nope}/x`: unknown variable")
        );
        assert!(
            err("[filesystem]\nwrite = [\"/w/**/x\"]\n").contains("globs are only allowed in `deny` and `protect`")
        );
        assert!(err("[filesystem]\nwrite = [\"/\"]\n").contains("root directory"));
        assert!(
            err("[network.hosts]\n\"a.com\" = \"nope\"\n")
                .starts_with("test.toml:2:1: network.hosts.a.com: `nope` is not an IP address")
        );
        assert!(err("[process.env]\npass = [\"*\"]\n").contains("matches every variable"));
        assert!(err("[process.env]\npass = [\"A-B\"]\n").contains("not a variable name"));
        assert!(
            err("[[monitor.rules]]\nwhen = \"tripwire\"\naction = \"explode\"\n")
                .starts_with("test.toml:3:10: monitor.rules[0].action: unknown action")
        );
        assert!(
            err("[[monitor.rules]]\nwhen = \"sometimes\"\naction = \"log\"\n")
                .starts_with("test.toml:2:8: monitor.rules[0].when:")
        );
        assert!(err("[[monitor.rules]]\naction = \"log\"\n").contains("missing field `when`"));
        assert!(err("version = 2\n").starts_with("test.toml:1:11: version: unsupported policy version 2"));
        assert!(err("[filesystem\n").starts_with("test.toml:1:"));
        assert!(err("[filesystem]\nread = \"/usr\"\n").starts_with("test.toml:2:8: filesystem.read: invalid type"));
    }

    #[test]
    fn hostile_text_is_an_error_not_a_panic() {
        for text in [
            "\0",
            "a = \"\u{202e}\"",
            "[filesystem]\nread = [\"/a\\u0000b\"]",
            "[network]\nallow=[\"a\\nb.com\"]",
            "x=1\n\n\n[[y]]",
        ] {
            assert!(parse(text).is_err());
        }
    }
}
