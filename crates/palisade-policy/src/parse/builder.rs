//! `LayerBuilder`: one checked rule at a time, with its origin; what a policy file and the
//! command-line flags both go through.

use super::*;

/// Builds rules for one layer, checking each value and recording where it came from.
/// Shared by the TOML parser and the command-line flags.
pub struct LayerBuilder<'a> {
    kind: LayerKind,
    vars: &'a Vars,
    resolver: &'a dyn PathResolver,
    /// Relative paths are taken relative to this directory.
    base: PathBuf,
    pub(super) rules: Rules,
}

impl std::fmt::Debug for LayerBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerBuilder").field("kind", &self.kind).field("base", &self.base).finish()
    }
}

impl<'a> LayerBuilder<'a> {
    /// A builder for a layer of `kind`. Relative paths are taken relative to `base` (the
    /// workspace for policy files, the current directory for flags).
    pub fn new(kind: LayerKind, vars: &'a Vars, resolver: &'a dyn PathResolver, base: &Path) -> Self {
        LayerBuilder { kind, vars, resolver, base: base.to_path_buf(), rules: Rules::default() }
    }

    pub(super) fn origin(&self, site: Site, text: &str) -> Origin {
        Origin { layer: self.kind.clone(), site, text: text.to_owned() }
    }

    pub(super) fn path(&self, text: &str, site: &Site) -> Result<PathBuf, PolicyError> {
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
                state: false,
                own_copy: false,
                cache: false,
                origin,
            });
        }
        Ok(())
    }

    /// `${writable}/REL` in `deny` or `protect`: REL under every writable root.
    pub(super) fn root_rule(&mut self, kind: PathKind, text: &str, rest: &str, site: Site) -> Result<(), PolicyError> {
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

    /// Sets `network.mode`: `none` or `allowlist`; anything else is
    /// [`PolicyError::Invalid`].
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

    /// Sets `windows.tier` (`app_container` or `restricted_token`).
    pub fn windows_tier(&mut self, text: &str, site: Site) -> Result<(), PolicyError> {
        let value = match text {
            "app_container" => crate::model::WindowsTier::AppContainer,
            "restricted_token" => crate::model::WindowsTier::RestrictedToken,
            other => {
                return Err(PolicyError::invalid(
                    site,
                    format!("unknown Windows tier `{other}` (expected app_container or restricted_token)"),
                ));
            }
        };
        self.rules.windows_tier = Some(Setting { value, origin: self.origin(site, text) });
        Ok(())
    }

    /// Adds a `network.allow` (`allow == true`) or `network.deny` entry, such as
    /// `github.com:443`; a pattern that does not parse is [`PolicyError::Invalid`].
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

    /// Adds a `network.quiet` entry: a destination an agent contacts routinely (telemetry,
    /// update checks) whose refusal is recorded but counts for no monitor rule.
    pub fn quiet_rule(&mut self, text: &str, site: Site) -> Result<(), PolicyError> {
        let pattern = NetPattern::parse(text).map_err(|m| PolicyError::invalid(site.clone(), m))?;
        self.rules.net_quiet.push(NetRule { pattern, origin: self.origin(site, text) });
        Ok(())
    }

    /// Adds a published port (`network.publish`, `--publish`): `PORT`, or `HOST_PORT:PORT`.
    pub fn publish(&mut self, text: &str, site: Site) -> Result<(), PolicyError> {
        let port = |p: &str| {
            p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                PolicyError::invalid(
                    site.clone(),
                    format!("`{text}`: expected PORT or HOST_PORT:PORT, each from 1 to 65535 (e.g. 3000 or 8080:3000)"),
                )
            })
        };
        let (host_port, port) = match text.split_once(':') {
            Some((h, p)) => (port(h)?, port(p)?),
            None => (port(text)?, port(text)?),
        };
        if let Some(earlier) = self.rules.publish.iter().find(|p| p.value.host_port == host_port) {
            return Err(PolicyError::invalid(
                site,
                format!(
                    "`{text}`: the host port {host_port} is already published ({}); each host port carries one sandbox port",
                    earlier.origin.text
                ),
            ));
        }
        let origin = self.origin(site, text);
        self.rules.publish.push(Setting { value: Publish { host_port, port }, origin });
        Ok(())
    }

    /// Maps the host name `name` to the IP address `addr` (`network.hosts`), replacing this
    /// layer's earlier mapping of the name.
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

    /// Sets the variable `name` to `value` (`process.env.set`, `--env NAME=VALUE`), replacing
    /// this layer's earlier setting of it. `name` must be a plain name; `value` has no NUL.
    pub fn env_set(&mut self, name: &str, value: &str, site: Site) -> Result<(), PolicyError> {
        if name.contains('*') {
            return Err(PolicyError::invalid(site, format!("`{name}`: a variable to set needs a plain name")));
        }
        check_env_pattern(name).map_err(|m| PolicyError::invalid(site.clone(), m))?;
        if value.contains('\0') {
            return Err(PolicyError::invalid(site, format!("value of `{name}` contains a NUL byte")));
        }
        let origin = self.origin(site, &format!("{name}={value}"));
        // A leading `~/` is the home directory, as in a shell's `NAME=~/dir`.
        let value = match value.strip_prefix("~/") {
            Some(rest) => self.vars.home.join(rest).to_string_lossy().into_owned(),
            None => value.to_owned(),
        };
        self.rules.env_set.retain(|e| e.name != name);
        self.rules.env_set.push(EnvSet { name: name.to_owned(), value, origin });
        Ok(())
    }

    /// A size, or `unlimited` (lifts a lower layer's limit; a project may not).
    pub(super) fn size(&self, text: &str, site: Site) -> Result<Setting<u64>, PolicyError> {
        let value = if text.trim() == UNLIMITED {
            u64::MAX
        } else {
            parse_size(text).map_err(|m| PolicyError::invalid(site.clone(), m))?
        };
        Ok(Setting { value, origin: self.origin(site, text) })
    }

    /// A timeout: a duration above zero, at most a day (`unlimited` is not one).
    pub(super) fn timeout(&self, text: &str, site: Site) -> Result<Setting<std::time::Duration>, PolicyError> {
        let value = parse_duration(text).map_err(|m| PolicyError::invalid(site.clone(), m))?;
        if value.is_zero() || value > std::time::Duration::from_secs(86_400) {
            return Err(PolicyError::invalid(site, format!("`{text}` must be above zero and at most a day")));
        }
        Ok(Setting { value, origin: self.origin(site, text) })
    }

    /// A duration, or `unlimited`.
    pub(super) fn duration(&self, text: &str, site: Site) -> Result<Setting<std::time::Duration>, PolicyError> {
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

    pub(super) fn count(&self, value: u64, site: Site) -> Result<Setting<u64>, PolicyError> {
        if value == 0 {
            return Err(PolicyError::invalid(site, "must be at least 1"));
        }
        Ok(Setting { value, origin: self.origin(site, &value.to_string()) })
    }

    /// Sets `monitor.audit`, the directory where each run's audit log is written (variables
    /// expanded, absolute).
    pub fn audit(&mut self, text: &str, site: Site) -> Result<(), PolicyError> {
        let value = self.path(text, &site)?;
        self.rules.audit = Some(Setting { value, origin: self.origin(site, text) });
        Ok(())
    }

    /// Adds a `monitor.tripwires` entry: one concrete file, never a glob.
    pub fn tripwire(&mut self, text: &str, site: Site) -> Result<(), PolicyError> {
        let value = self.path(text, &site)?;
        if is_glob(&value.to_string_lossy()) {
            return Err(PolicyError::invalid(site, format!("`{text}`: a tripwire is one concrete file, not a glob")));
        }
        self.rules.tripwires.push(Setting { value, origin: self.origin(site, text) });
        Ok(())
    }

    /// Adds a `[[monitor.rules]]` entry: its optional `name`, and its `when` and `action`
    /// texts, each with its site.
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

    /// The layer built, with `source` as where it was read from (a path, `<built-in>`,
    /// `command line`).
    pub fn finish(self, source: &str) -> Layer {
        Layer { kind: self.kind, source: source.to_owned(), rules: self.rules }
    }
}

pub(super) fn check_env_pattern(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("empty variable name".into());
    }
    // Windows names a few standard variables with parentheses (`ProgramFiles(x86)`).
    if !text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'*' | b'(' | b')')) {
        return Err(format!(
            "`{}` is not a variable name (letters, digits, `_`, `(`, `)`, and `*` in patterns)",
            text.escape_debug()
        ));
    }
    if text.bytes().all(|b| b == b'*') {
        return Err(format!("`{text}` matches every variable; list the names you need"));
    }
    Ok(())
}
