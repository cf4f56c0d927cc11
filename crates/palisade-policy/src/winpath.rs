//! Windows paths as the policy compares them, by pure code (so the Windows backend's
//! decisions are tested on every OS).
//!
//! Windows names one file many ways. A policy rule and the path a program asks for must meet
//! at one canonical form, or a rule is walked around by spelling (`C:\Users\Me\.SSH`,
//! `c:/users/me/.ssh`, `\\?\C:\Users\me\.ssh\.`, `…\id_rsa::$DATA`). [`WinPath::parse`]
//! gives that form, lexically:
//!
//! - separators: `/` and `\` alike, repeated ones collapsed;
//! - prefixes: `C:\…`, `\\?\C:\…` and `\\.\C:\…` are the same drive path; `\\server\share\…` and
//!   `\\?\UNC\server\share\…` the same share (Naming Files, Paths, and Namespaces, Win32
//!   docs: "File path formats on Windows systems");
//! - `.` and `..` resolved lexically, never above the root (`C:\..` is `C:\`);
//! - each component's trailing dots and spaces removed, as the Win32 layer removes them
//!   (`secret.txt.` and `secret.txt ` open `secret.txt`), except in `\\?\` paths, which
//!   Windows passes on verbatim;
//! - an alternate data stream suffix (`file:stream`, `file::$DATA`) removed: the rule for a
//!   file covers its streams;
//! - comparison without regard to case ([`WinPath::key`]; NTFS compares names by its upcase
//!   table, which upper-cases each UTF-16 unit; `char::to_uppercase` on one-to-one mappings
//!   is the same for every name a policy writes).
//!
//! What needs the file system is left to the backend and flagged here: a component that may
//! be an 8.3 short name (`PROGRA~1`, [`WinPath::may_be_short_name`]) is expanded with
//! `GetLongPathNameW`, and junctions and symbolic links are resolved with
//! `GetFinalPathNameByHandleW` on a handle opened without following a link the sandbox
//! could have planted.
//!
//! Environment variables (`%USERPROFILE%\.ssh`) are expanded from a map the caller gives
//! ([`WinPath::parse_with`]); an unknown one is an error, never left in the path.

use std::fmt;

/// The start of a canonical Windows path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Root {
    /// A drive letter, upper case (`C`).
    Drive(char),
    /// A share: server and share name, as written (compared without regard to case).
    Unc {
        /// The server (`fileserver`).
        server: String,
        /// The share (`projects`).
        share: String,
    },
}

/// A canonical, absolute Windows path; see the module.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WinPath {
    root: Root,
    /// Components, as written (case kept for display), each cleaned.
    parts: Vec<String>,
}

/// Characters no Windows file name may hold (besides `\` and `/`, which separate).
const FORBIDDEN: &[char] = &['<', '>', '"', '|', '?', '*'];

impl WinPath {
    /// Parses an absolute path with no environment variables (see [`WinPath::parse_with`]).
    ///
    /// # Errors
    /// A relative path (`a\b`, `C:a`, `\a`: relative to a current drive or directory), a
    /// device path (`\\.\pipe\x`, `\\.\PhysicalDrive0`), a `%VAR%` reference, an empty
    /// component of a share, a control character or one of `<>"|?*` in a name.
    pub fn parse(input: &str) -> Result<WinPath, String> {
        WinPath::parse_with(input, &|_| None)
    }

    /// Parses `input`, expanding each `%NAME%` with `env(NAME)` (names without regard to
    /// case, as Windows looks them up); `%%` is a literal `%`.
    ///
    /// # Errors
    /// As [`WinPath::parse`], and an unknown or unterminated `%NAME%`.
    pub fn parse_with(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<WinPath, String> {
        let expanded = expand(input, env)?;
        let (root, rest, verbatim) = split_root(&expanded)?;
        let mut parts: Vec<String> = Vec::new();
        let comps: Vec<&str> = rest.split(['\\', '/']).filter(|c| !c.is_empty()).collect();
        let last = comps.len().saturating_sub(1);
        for (i, comp) in comps.into_iter().enumerate() {
            if let Some(c) = comp.chars().find(|c| c.is_control() || FORBIDDEN.contains(c)) {
                return Err(format!(
                    "`{}` has a character Windows file names cannot hold ({c:?})",
                    input.escape_debug()
                ));
            }
            match comp {
                "." => continue,
                ".." => {
                    parts.pop();
                    continue;
                }
                _ => {}
            }
            // A stream is named after a colon: only the file's own name counts. (A colon
            // anywhere but the last component is no stream and no valid name.)
            let name = match comp.split_once(':') {
                Some((file, _)) if i == last => file,
                Some(_) => return Err(format!("`{}`: a `:` in a directory name", input.escape_debug())),
                None => comp,
            };
            let name = if verbatim { name } else { name.trim_end_matches(['.', ' ']) };
            if name.is_empty() {
                continue;
            }
            parts.push(name.to_owned());
        }
        Ok(WinPath { root, parts })
    }

    /// The comparison key: the whole path in upper case, `\` separated, no trailing
    /// separator (`C:\USERS\ME\.SSH`; `\\SERVER\SHARE\X`).
    pub fn key(&self) -> String {
        self.to_string().chars().flat_map(upper).collect()
    }

    /// Whether `self` is `ancestor` or lies beneath it (without regard to case).
    pub fn is_within(&self, ancestor: &WinPath) -> bool {
        let same = |a: &str, b: &str| a.chars().flat_map(upper).eq(b.chars().flat_map(upper));
        let roots = match (&self.root, &ancestor.root) {
            (Root::Drive(a), Root::Drive(b)) => a == b,
            (Root::Unc { server: s1, share: h1 }, Root::Unc { server: s2, share: h2 }) => same(s1, s2) && same(h1, h2),
            _ => false,
        };
        roots
            && self.parts.len() >= ancestor.parts.len()
            && self.parts.iter().zip(&ancestor.parts).all(|(a, b)| same(a, b))
    }

    /// The components that may be 8.3 short names (`PROGRA~1`, `ID_RSA~1.PUB`): a `~` and
    /// digits at the end of a name of at most eight characters (before an extension of at
    /// most three). The backend expands these with `GetLongPathNameW` before deciding.
    pub fn may_be_short_name(&self) -> bool {
        self.parts.iter().any(|p| {
            let (stem, ext) = p.rsplit_once('.').unwrap_or((p, ""));
            let tilde = stem.rfind('~');
            stem.len() <= 8
                && ext.len() <= 3
                && tilde.is_some_and(|t| t + 1 < stem.len() && stem[t + 1..].chars().all(|c| c.is_ascii_digit()))
        })
    }

    /// The folder above, or `None` at the root.
    pub fn parent(&self) -> Option<WinPath> {
        let (_, rest) = self.parts.split_last()?;
        Some(WinPath { root: self.root.clone(), parts: rest.to_vec() })
    }

    /// The path's root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The components below the root.
    pub fn parts(&self) -> &[String] {
        &self.parts
    }
}

impl fmt::Display for WinPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.root {
            Root::Drive(d) => write!(f, "{d}:\\")?,
            Root::Unc { server, share } => write!(f, "\\\\{server}\\{share}\\")?,
        }
        write!(f, "{}", self.parts.join("\\"))
    }
}

impl serde::Serialize for WinPath {
    /// As its display form (`C:\Users\me`).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A character in upper case, as NTFS's upcase table maps it (one to one; a character whose
/// upper case is several is kept).
fn upper(c: char) -> impl Iterator<Item = char> {
    let mut u = c.to_uppercase();
    let one = match (u.next(), u.next()) {
        (Some(x), None) => x,
        _ => c,
    };
    std::iter::once(if one == '/' { '\\' } else { one })
}

/// `%NAME%` expanded; `%%` is `%`.
fn expand(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = input;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('%') else {
            return Err(format!("`{}`: a `%` with no closing `%`", input.escape_debug()));
        };
        let name = &after[..j];
        if name.is_empty() {
            out.push('%');
        } else {
            let value = env(name).ok_or_else(|| format!("`{}`: %{name}% is not set", input.escape_debug()))?;
            out.push_str(&value);
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_sep(c: char) -> bool {
    c == '\\' || c == '/'
}

/// `C:` or `C:\…` at the start of `s`: the drive, upper case, and the rest. (`C:a` is
/// relative to the drive's current directory: `None`.)
fn drive(s: &str) -> Option<(char, &str)> {
    let mut cs = s.chars();
    let (d, colon) = (cs.next()?, cs.next()?);
    if d.is_ascii_alphabetic() && colon == ':' {
        let rest = &s[2..];
        if rest.is_empty() || rest.starts_with(is_sep) {
            return Some((d.to_ascii_uppercase(), rest));
        }
    }
    None
}

/// `server\share\rest`: the share root and the rest.
fn unc<'a>(s: &'a str, whole: &str) -> Result<(Root, &'a str), String> {
    let mut it = s.splitn(3, is_sep);
    let (server, share) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
    if server.is_empty() || share.is_empty() {
        return Err(format!("`{}`: a share path names a server and a share", whole.escape_debug()));
    }
    Ok((Root::Unc { server: server.to_owned(), share: share.to_owned() }, it.next().unwrap_or("")))
}

/// The root, the rest, and whether the path is verbatim (`\\?\`).
fn split_root(p: &str) -> Result<(Root, &str, bool), String> {
    let two_seps = p.len() >= 2 && p[..2].chars().all(is_sep);
    if two_seps {
        let rest = &p[2..];
        // `\\?\` (verbatim) and `\\.\` (device namespace).
        if let Some(tail) = rest.strip_prefix(['?', '.']).filter(|t| t.starts_with(is_sep)) {
            let verbatim = rest.starts_with('?');
            let tail = &tail[1..];
            if let Some((d, r)) = drive(tail) {
                return Ok((Root::Drive(d), r, verbatim));
            }
            if tail.get(..4).is_some_and(|h| h[..3].eq_ignore_ascii_case("UNC") && h.ends_with(is_sep)) {
                let (root, r) = unc(&tail[4..], p)?;
                return Ok((root, r, verbatim));
            }
            return Err(format!(
                "`{}` is a device path (\\\\.\\ or \\\\?\\ without a drive or UNC), which a policy cannot name",
                p.escape_debug()
            ));
        }
        let (root, r) = unc(rest, p)?;
        return Ok((root, r, false));
    }
    drive(p).map(|(d, r)| (Root::Drive(d), r, false)).ok_or_else(|| {
        format!("`{}` is not an absolute Windows path (C:\\… or \\\\server\\share\\…)", p.escape_debug())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str) -> String {
        WinPath::parse(p).unwrap().key()
    }

    #[test]
    fn every_spelling_of_one_file_has_one_key() {
        let want = "C:\\USERS\\ME\\.SSH\\ID_RSA";
        for p in [
            r"C:\Users\me\.ssh\id_rsa",
            r"c:\users\ME\.SSH\ID_RSA",
            "c:/Users/me/.ssh/id_rsa",
            r"C:\\Users\\me\.ssh\\id_rsa",
            r"C:\Users\me\.\.ssh\x\..\id_rsa",
            r"\\?\C:\Users\me\.ssh\id_rsa",
            r"\\.\C:\Users\me\.ssh\id_rsa",
            r"C:\Users\me\.ssh\id_rsa.",
            r"C:\Users\me\.ssh\id_rsa . .",
            r"C:\Users\me\.ssh.\id_rsa",
            r"C:\Users\me\.ssh\id_rsa::$DATA",
            r"C:\Users\me\.ssh\id_rsa:hidden",
            r"C:\Users\me\.ssh\id_rsa\",
        ] {
            assert_eq!(key(p), want, "{p}");
        }
        // `..` never climbs above the root.
        assert_eq!(key(r"C:\..\..\Windows"), "C:\\WINDOWS");
        // Verbatim paths keep trailing dots: Windows passes them on as they are.
        assert_eq!(key(r"\\?\C:\a\b."), "C:\\A\\B.");
    }

    #[test]
    fn shares_drives_and_relative_paths() {
        assert_eq!(key(r"\\Server\Share\dir\f"), key(r"\\?\UNC\server\SHARE\dir\f"));
        assert_eq!(key(r"\\server\share"), "\\\\SERVER\\SHARE\\");
        assert!(WinPath::parse(r"\\server\share\a").unwrap().is_within(&WinPath::parse(r"\\SERVER\share").unwrap()));
        assert!(!WinPath::parse(r"D:\a").unwrap().is_within(&WinPath::parse(r"C:\").unwrap()));
        assert_eq!(key("C:"), "C:\\");
        for bad in
            [r"a\b", r"C:a\b", r"\a\b", "", r"\\server", r"\\.\pipe\x", r"\\?\Volume{x}\a", r"C:\a<b", "C:\\a\u{1}"]
        {
            assert!(WinPath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(WinPath::parse(r"C:\a:b\c").is_err(), "a colon in a directory name");
    }

    #[test]
    fn within_is_by_component_and_without_regard_to_case() {
        let ssh = WinPath::parse(r"C:\Users\Me\.ssh").unwrap();
        assert!(WinPath::parse(r"c:\users\me\.SSH\id_rsa").unwrap().is_within(&ssh));
        assert!(WinPath::parse(r"C:\Users\Me\.ssh").unwrap().is_within(&ssh));
        assert!(!WinPath::parse(r"C:\Users\Me\.ssh2\x").unwrap().is_within(&ssh));
        assert!(!WinPath::parse(r"C:\Users\Me").unwrap().is_within(&ssh));
        // Non-ASCII names compare as NTFS compares them.
        let docs = WinPath::parse(r"C:\Users\Zoë\Données").unwrap();
        assert!(WinPath::parse(r"c:\users\ZOË\DONNÉES\x").unwrap().is_within(&docs));
    }

    #[test]
    fn environment_variables_expand_and_unknown_ones_are_refused() {
        let env = |n: &str| match n.to_ascii_uppercase().as_str() {
            "USERPROFILE" => Some(r"C:\Users\me".to_owned()),
            "APPDATA" => Some(r"C:\Users\me\AppData\Roaming".to_owned()),
            _ => None,
        };
        assert_eq!(WinPath::parse_with(r"%UserProfile%\.ssh", &env).unwrap().key(), "C:\\USERS\\ME\\.SSH");
        assert_eq!(
            WinPath::parse_with(r"%APPDATA%\gh\hosts.yml", &env).unwrap().key(),
            "C:\\USERS\\ME\\APPDATA\\ROAMING\\GH\\HOSTS.YML"
        );
        assert_eq!(WinPath::parse_with(r"C:\100%%\x", &env).unwrap().key(), "C:\\100%\\X");
        assert!(WinPath::parse_with(r"%NOPE%\x", &env).unwrap_err().contains("%NOPE% is not set"));
        assert!(WinPath::parse_with(r"%USERPROFILE\x", &env).is_err());
        assert!(WinPath::parse(r"%USERPROFILE%\x").is_err(), "no variables without an environment");
    }

    #[test]
    fn short_names_are_flagged_for_the_backend() {
        for p in [r"C:\PROGRA~1\x", r"C:\Users\me\.ssh\ID_RSA~1.PUB", r"C:\Users\ME~1\.ssh"] {
            assert!(WinPath::parse(p).unwrap().may_be_short_name(), "{p}");
        }
        for p in [r"C:\Program Files\x", r"C:\a~b\c", r"C:\averylongname~1\x", r"C:\x~\y"] {
            assert!(!WinPath::parse(p).unwrap().may_be_short_name(), "{p}");
        }
    }
}
