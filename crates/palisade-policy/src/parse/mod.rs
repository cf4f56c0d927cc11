//! From text to a [`Layer`]: TOML files and command-line flags go through the same checks.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{PolicyError, Site};
use crate::host::{HostName, NetPattern};
use crate::model::*;
use crate::monitor::{Action, Condition};
use crate::pathrule::{PathPattern, is_glob, literal_prefix};
use crate::units::{parse_duration, parse_size};
use crate::vars::{PathResolver, Vars, normalize_lexically};

mod builder;
mod raw;
mod source;

pub use builder::LayerBuilder;

use raw::*;
use source::SourceText;

/// The value that lifts a limit.
pub const UNLIMITED: &str = "unlimited";

/// The prefix of a `deny`/`protect` entry that applies under every writable root.
pub const WRITABLE: &str = "${writable}";

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

    if let Some(v) = raw.version
        && *v.get_ref() != 1
    {
        return Err(PolicyError::invalid(
            site(v.span(), "version"),
            format!("unsupported policy version {} (this Palisade reads version 1)", v.get_ref()),
        ));
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
        // `state`: a write grant on a directory that `run` makes on the host when it is
        // missing, so that what a tool keeps there (an agent's login, history) persists.
        for v in fs.state {
            let before = b.rules.paths.len();
            b.path_rule(PathKind::Write, v.get_ref(), site(v.span(), "filesystem.state"))?;
            for r in &mut b.rules.paths[before..] {
                r.state = true;
            }
        }
        // `own_copy`: protected files (an agent's configuration) of which the sandbox keeps
        // a writable copy of its own, per workspace.
        for v in fs.own_copy {
            if crate::pathrule::is_glob(v.get_ref()) {
                return Err(PolicyError::invalid(
                    site(v.span(), "filesystem.own_copy"),
                    format!("`{}`: own_copy takes files, not globs", v.get_ref()),
                ));
            }
            let before = b.rules.paths.len();
            b.path_rule(PathKind::Protect, v.get_ref(), site(v.span(), "filesystem.own_copy"))?;
            // The copy is of the canonical file; when the written path went through a link,
            // that path is kept (so `run` can tell whether the sandbox could have made the
            // link), and stays protected as a link.
            let lexical = b.rules.paths.get(before + 1).map(|r| r.pattern.base());
            b.rules.paths[before].own_copy = true;
            b.rules.paths[before].via_link = lexical;
        }
        // `cache`: toolchain caches (a package registry's downloads): the host's directory,
        // read-only, with a private writable layer over it kept for the workspace.
        for v in fs.cache {
            if crate::pathrule::is_glob(v.get_ref()) {
                return Err(PolicyError::invalid(
                    site(v.span(), "filesystem.cache"),
                    format!("`{}`: cache takes directories, not globs", v.get_ref()),
                ));
            }
            let before = b.rules.paths.len();
            b.path_rule(PathKind::Read, v.get_ref(), site(v.span(), "filesystem.cache"))?;
            b.rules.paths[before].cache = true;
        }
        // `programs`: commands (names, as on a command line) whose install location is
        // made readable, found on PATH at load.
        for v in fs.programs {
            let name = v.get_ref();
            if name.is_empty() || name.contains('/') || name.contains('\0') || name == "." || name == ".." {
                return Err(PolicyError::invalid(
                    site(v.span(), "filesystem.programs"),
                    format!("`{}`: programs takes command names (`codex`), not paths", name.escape_debug()),
                ));
            }
            let s = site(v.span(), "filesystem.programs");
            let origin = b.origin(s, name);
            b.rules.programs.push(Setting { value: name.clone(), origin });
        }
        if let Some(g) = fs.protect_git {
            b.protect_git(*g.get_ref(), site(g.span(), "filesystem.protect_git"));
        }
    }
    if let Some(w) = raw.windows
        && let Some(t) = w.tier
    {
        b.windows_tier(t.get_ref(), site(t.span(), "windows.tier"))?;
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
        for v in net.quiet {
            b.quiet_rule(v.get_ref(), site(v.span(), "network.quiet"))?;
        }
        for v in net.publish {
            b.publish(v.get_ref(), site(v.span(), "network.publish"))?;
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
        if let Some(r) = m.retention {
            let s = b.duration(r.get_ref(), site(r.span(), "monitor.retention"))?;
            b.rules.retention = Some(s);
        }
        if let Some(k) = m.keep {
            let s = b.count(*k.get_ref(), site(k.span(), "monitor.keep"))?;
            b.rules.keep = Some(s);
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
