//! Variables in policy paths: `~`, `${home}`, `${workspace}`, `${tmp}`, `${config}`,
//! `${state}`, `${cache}`.

use std::path::{Path, PathBuf};

/// The values that variables expand to. Built once by the caller (see `load::Vars::from_env`
/// for the real environment); the policy core never reads the environment itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vars {
    /// The invoking user's home directory (`$HOME`).
    pub home: PathBuf,
    /// The workspace: the project the agent works on.
    pub workspace: PathBuf,
    /// The temporary directory (`$TMPDIR` or `/tmp`); the sandbox gets a private one here.
    pub tmp: PathBuf,
    /// `$XDG_CONFIG_HOME` or `~/.config`.
    pub config: PathBuf,
    /// `$XDG_STATE_HOME` or `~/.local/state`.
    pub state: PathBuf,
    /// `$XDG_CACHE_HOME` or `~/.cache`.
    pub cache: PathBuf,
}

impl Vars {
    /// Variables for a home and workspace with XDG defaults under the home.
    pub fn with_defaults(home: &Path, workspace: &Path) -> Vars {
        Vars {
            home: home.to_path_buf(),
            workspace: workspace.to_path_buf(),
            tmp: PathBuf::from("/tmp"),
            config: home.join(".config"),
            state: home.join(".local/state"),
            cache: home.join(".cache"),
        }
    }

    fn lookup(&self, name: &str) -> Option<&Path> {
        Some(match name {
            "home" => &self.home,
            "workspace" => &self.workspace,
            "tmp" => &self.tmp,
            "config" => &self.config,
            "state" => &self.state,
            "cache" => &self.cache,
            _ => return None,
        })
    }

    /// Expands variables in `text` and makes the result absolute: a relative path is taken
    /// relative to `base` (the workspace for policy files, the current directory for flags).
    pub fn expand(&self, text: &str, base: &Path) -> Result<PathBuf, String> {
        if text.is_empty() {
            return Err("empty path".into());
        }
        if text.contains('\0') {
            return Err("path contains a NUL byte".into());
        }
        let mut out = String::new();
        let rest = if text == "~" || text.starts_with("~/") {
            out.push_str(&self.home.to_string_lossy());
            &text[1..]
        } else if text.starts_with('~') {
            return Err(format!("`{text}`: `~user` is not supported; write the full path"));
        } else {
            text
        };
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '$' && rest[i..].starts_with("${") {
                let end = rest[i..].find('}').ok_or_else(|| format!("`{text}`: unclosed `${{`"))?;
                let name = &rest[i + 2..i + end];
                let value = self.lookup(name).ok_or_else(|| {
                    format!(
                        "`{text}`: unknown variable `${{{name}}}` (known: home, workspace, tmp, config, state, cache)"
                    )
                })?;
                out.push_str(&value.to_string_lossy());
                while chars.peek().is_some_and(|&(j, _)| j <= i + end) {
                    chars.next();
                }
            } else {
                out.push(c);
            }
        }
        let path = PathBuf::from(out);
        let path = if path.is_absolute() { path } else { base.join(path) };
        // Windows: one spelling of each path (separators, trailing dots and spaces, streams),
        // as the backend compares them (`winpath`).
        #[cfg(windows)]
        let path = crate::winpath::WinPath::parse(&path.to_string_lossy())
            .map(|w| PathBuf::from(w.to_string()))
            .map_err(|e| format!("`{text}`: {e}"))?;
        Ok(path)
    }
}

/// Removes `.` and resolves `..` lexically; the result is absolute when `p` is.
pub fn normalize_lexically(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Turns an absolute path into its canonical form. The policy core asks this; the caller
/// decides whether that touches the file system ([`crate::load::FsResolver`]) or not
/// ([`Lexical`], for tests and pure tools).
pub trait PathResolver {
    /// `path` is absolute. The result is absolute and normalised; a path that does not exist
    /// yet is still resolved (its existing prefix canonicalised, the rest appended).
    fn resolve(&self, path: &Path) -> PathBuf;

    /// `path` (absolute) resolved as the kernel resolves a path it is given: each link
    /// followed where it stands, and `..` taken after it, from the directory the link led
    /// to (`a/link/../x` is `x` beside the link's target, not `a/x`), as git's paths are
    /// (`.git` files, `commondir`, includes: path_resolution(7)). By default, [`resolve`]
    /// (for resolvers that do not look at a file system).
    ///
    /// [`resolve`]: PathResolver::resolve
    fn resolve_physically(&self, path: &Path) -> PathBuf {
        self.resolve(path)
    }
}

/// Resolves `.` and `..` only, never touching the file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lexical;

impl PathResolver for Lexical {
    fn resolve(&self, path: &Path) -> PathBuf {
        normalize_lexically(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::with_defaults(Path::new("/home/u"), Path::new("/w/proj"))
    }

    #[test]
    fn expansion() {
        let v = vars();
        let base = Path::new("/w/proj");
        assert_eq!(v.expand("~", base).unwrap(), Path::new("/home/u"));
        assert_eq!(v.expand("~/.ssh", base).unwrap(), Path::new("/home/u/.ssh"));
        assert_eq!(v.expand("${home}/.aws", base).unwrap(), Path::new("/home/u/.aws"));
        assert_eq!(v.expand("${workspace}/.git/hooks", base).unwrap(), Path::new("/w/proj/.git/hooks"));
        assert_eq!(v.expand("${config}/palisade", base).unwrap(), Path::new("/home/u/.config/palisade"));
        assert_eq!(v.expand(".vscode", base).unwrap(), Path::new("/w/proj/.vscode"));
        assert_eq!(v.expand("/a/$b", base).unwrap(), Path::new("/a/$b"));
        assert!(v.expand("${nope}/x", base).unwrap_err().contains("unknown variable"));
        assert!(v.expand("${home", base).unwrap_err().contains("unclosed"));
        assert!(v.expand("~root/x", base).is_err());
        assert!(v.expand("", base).is_err());
        assert!(v.expand("a\0b", base).is_err());
    }

    #[test]
    fn lexical() {
        assert_eq!(normalize_lexically(Path::new("/a/./b/../c")), Path::new("/a/c"));
        assert_eq!(normalize_lexically(Path::new("/../..")), Path::new("/"));
    }
}
