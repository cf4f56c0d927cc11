//! Path patterns and how specifically they match a path.

use std::fmt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use serde::{Serialize, Serializer};

/// A path rule's match: an exact path (and everything beneath it) or a glob.
#[derive(Debug, Clone)]
pub enum PathPattern {
    /// This path and everything beneath it, compared component by component.
    Exact(PathBuf, usize),
    /// Any path whose own name or an ancestor's matches the glob.
    Glob(Glob),
}

/// A compiled absolute glob such as `/**/.env` or `/home/u/.cargo/credentials*`.
#[derive(Debug, Clone)]
pub struct Glob {
    text: String,
    matcher: GlobMatcher,
}

impl Glob {
    /// The glob as compiled: absolute, variables expanded (`/**/.env`).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// True when `text` uses glob syntax.
pub fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '[', '{'])
}

impl PathPattern {
    /// Compiles an absolute, already expanded path or glob.
    pub fn new(path: PathBuf) -> Result<PathPattern, String> {
        let text = path.to_str().ok_or("path is not valid UTF-8")?.to_owned();
        if !is_glob(&text) {
            let depth = path.components().count();
            return Ok(PathPattern::Exact(path, depth));
        }
        let glob = GlobBuilder::new(&text)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("invalid glob `{text}`: {}", e.kind()))?;
        Ok(PathPattern::Glob(Glob { text, matcher: glob.compile_matcher() }))
    }

    /// How specifically this pattern covers `path` (absolute, normalised): the number of
    /// components of the deepest covered ancestor-or-self, or `None` when it does not.
    pub fn specificity(&self, path: &Path) -> Option<usize> {
        match self {
            PathPattern::Exact(p, depth) => is_within(path, p).then_some(*depth),
            PathPattern::Glob(g) => path.ancestors().find(|a| g.matcher.is_match(a)).map(|a| a.components().count()),
        }
    }

    /// The directory below which all matches lie (the literal prefix of a glob).
    pub fn base(&self) -> PathBuf {
        match self {
            PathPattern::Exact(p, _) => p.clone(),
            PathPattern::Glob(g) => literal_prefix(Path::new(&g.text)),
        }
    }

    /// Whether this is a [`PathPattern::Glob`].
    pub fn is_glob(&self) -> bool {
        matches!(self, PathPattern::Glob(_))
    }
}

/// `path` is `dir` or lies beneath it, comparing whole components. Both are normalised
/// absolute paths (no `.`, `..`, or doubled or trailing separators), so a byte prefix that
/// ends at a separator is a component prefix; this is the hot path of every decision.
#[cfg(not(windows))]
pub fn is_within(path: &Path, dir: &Path) -> bool {
    let (p, d) = (path.as_os_str().as_encoded_bytes(), dir.as_os_str().as_encoded_bytes());
    p.starts_with(d) && (p.len() == d.len() || d.ends_with(b"/") || p[d.len()] == b'/')
}

/// Windows: the same, comparing as Windows names files ([`crate::winpath`]): `/` and `\`
/// alike, without regard to case (ASCII at once; other text through [`WinPath::is_within`]).
///
/// [`WinPath::is_within`]: crate::winpath::WinPath::is_within
#[cfg(windows)]
pub fn is_within(path: &Path, dir: &Path) -> bool {
    let (p, d) = (path.as_os_str().as_encoded_bytes(), dir.as_os_str().as_encoded_bytes());
    if p.is_ascii() && d.is_ascii() {
        let fold = |b: u8| if b == b'/' { b'\\' } else { b.to_ascii_uppercase() };
        let sep = |b: u8| b == b'/' || b == b'\\';
        return p.len() >= d.len()
            && p.iter().zip(d).all(|(a, b)| fold(*a) == fold(*b))
            && (p.len() == d.len() || d.last().is_some_and(|b| sep(*b)) || sep(p[d.len()]));
    }
    use crate::winpath::WinPath;
    match (WinPath::parse(&path.to_string_lossy()), WinPath::parse(&dir.to_string_lossy())) {
        (Ok(p), Ok(d)) => p.is_within(&d),
        _ => false,
    }
}

/// The leading components of `p` that contain no glob syntax.
pub fn literal_prefix(p: &Path) -> PathBuf {
    p.components().take_while(|c| !is_glob(&c.as_os_str().to_string_lossy())).collect()
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathPattern::Exact(p, _) => write!(f, "{}", p.display()),
            PathPattern::Glob(g) => f.write_str(&g.text),
        }
    }
}

impl Serialize for PathPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> PathPattern {
        PathPattern::new(PathBuf::from(s)).unwrap()
    }

    #[test]
    fn exact_is_component_wise() {
        let p = pat("/w/proj");
        assert_eq!(p.specificity(Path::new("/w/proj")), Some(3));
        assert_eq!(p.specificity(Path::new("/w/proj/src/a.rs")), Some(3));
        assert_eq!(p.specificity(Path::new("/w/proj-evil")), None);
        assert_eq!(p.specificity(Path::new("/w/pro")), None);
        assert_eq!(p.specificity(Path::new("/w")), None);
    }

    #[test]
    fn globs_match_self_or_ancestor() {
        let p = pat("/**/.env");
        assert_eq!(p.specificity(Path::new("/w/proj/.env")), Some(4));
        assert_eq!(p.specificity(Path::new("/w/proj/.env/inner")), Some(4));
        assert_eq!(p.specificity(Path::new("/w/proj/.envrc")), None);
        assert_eq!(p.specificity(Path::new("/.env")), Some(2));
        let c = pat("/home/u/.cargo/credentials*");
        assert_eq!(c.specificity(Path::new("/home/u/.cargo/credentials.toml")), Some(5));
        assert_eq!(c.specificity(Path::new("/home/u/.cargo/bin")), None);
        // `*` does not cross a separator.
        assert_eq!(pat("/home/*/x").specificity(Path::new("/home/a/b/x")), None);
        assert_eq!(c.base(), Path::new("/home/u/.cargo"));
    }

    #[test]
    fn is_within_agrees_with_component_prefix() {
        let paths = ["/", "/w", "/w/proj", "/w/proj-evil", "/w/proj/a", "/w/pro", "/wx", "/w/proj/a/b"];
        for a in paths {
            for b in paths {
                assert_eq!(is_within(Path::new(a), Path::new(b)), Path::new(a).starts_with(b), "{a} within {b}");
            }
        }
    }

    #[test]
    fn bad_glob() {
        assert!(PathPattern::new(PathBuf::from("/a/[b")).is_err());
    }
}

#[cfg(all(test, windows))]
mod windows_tests {
    use std::path::Path;

    use super::is_within;

    #[test]
    fn windows_paths_compare_without_regard_to_case_or_separator() {
        let within = |p: &str, d: &str| is_within(Path::new(p), Path::new(d));
        assert!(within(r"C:\Users\Me\.SSH\id_rsa", r"c:\users\me\.ssh"));
        assert!(within(r"C:/Users/me/.ssh", r"C:\Users\me\.ssh"));
        assert!(within(r"C:\Users\me", r"C:\"));
        assert!(!within(r"C:\Users\me\.sshx", r"C:\Users\me\.ssh"), "a prefix of a name is not a parent");
        assert!(!within(r"D:\Users\me", r"C:\Users"));
        assert!(within(r"C:\Ünïcode\ÄB\c", r"c:\ünïcode\äb"), "beyond ASCII, through winpath");
    }
}
