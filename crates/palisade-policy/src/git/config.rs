//! A reader for git's configuration format (git-config(1), "CONFIGURATION FILE"), enough to
//! learn which other files git reads or runs because of a configuration file: `include.path`
//! and `includeIf.*.path`, `core.hooksPath`, `core.worktree` and `extensions.objectFormat`.
//!
//! Hand-written rather than taken from `gix-config`: these few keys need a hundred lines,
//! while that crate brings a dozen more crates into every build. The syntax followed is
//! git's own `config.c`: comments start with `#` or `;` outside quotes, section names are
//! case-insensitive and subsections (quoted) are not, a key without `=` is boolean true,
//! values may be quoted, escape `\"`, `\\`, `\n`, `\t`, `\b`, and continue after a
//! backslash at the end of a line.

/// One `section[.subsection].key [= value]` line. Section and key are lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The section's name, lower-cased: `core`, `include`, `includeif`.
    pub section: String,
    /// The subsection, as bytes: as written when quoted (`[includeIf "gitdir:~/w/"]`, case
    /// kept), lower-cased in the old `[section.sub]` form; `None` without one.
    pub subsection: Option<Vec<u8>>,
    /// The key's name, lower-cased: `hookspath` for `hooksPath`.
    pub key: String,
    /// `None` for a key written without `=` (boolean true).
    pub value: Option<Vec<u8>>,
}

impl Entry {
    /// Whether this is `section.key` (any subsection), both given in lower case.
    pub fn is(&self, section: &str, key: &str) -> bool {
        self.section == section && self.key == key
    }
}

/// Parses `text`. Malformed lines end the parse (git refuses the whole file then); what was
/// read before them is returned, with `false` as the second value.
pub fn parse(text: &[u8]) -> (Vec<Entry>, bool) {
    let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
    let mut p = Parser { s: text, i: 0 };
    let mut out = Vec::new();
    let mut section = String::new();
    let mut subsection: Option<Vec<u8>> = None;
    loop {
        p.skip_blank();
        let Some(c) = p.peek() else { return (out, true) };
        match c {
            b'\n' => p.i += 1,
            b'#' | b';' => p.skip_line(),
            b'[' => match p.section_header() {
                Some((s, sub)) => {
                    section = s;
                    subsection = sub;
                }
                None => return (out, false),
            },
            c if c.is_ascii_alphabetic() => {
                if section.is_empty() {
                    return (out, false);
                }
                let Some((key, value)) = p.key_value() else { return (out, false) };
                out.push(Entry { section: section.clone(), subsection: subsection.clone(), key, value });
            }
            _ => return (out, false),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_blank(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.i += 1;
        }
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.peek() {
            self.i += 1;
            if c == b'\n' {
                break;
            }
        }
    }

    /// `[name]`, `[name "sub"]` or the old `[name.sub]`; the cursor is on `[`.
    fn section_header(&mut self) -> Option<(String, Option<Vec<u8>>)> {
        self.i += 1;
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'-' || c == b'.') {
            self.i += 1;
        }
        let name = std::str::from_utf8(&self.s[start..self.i]).ok()?.to_ascii_lowercase();
        if name.is_empty() {
            return None;
        }
        match self.peek()? {
            b']' => {
                self.i += 1;
                // The deprecated `[section.sub]` form: the subsection is lower-cased too.
                Some(match name.split_once('.') {
                    Some((s, sub)) => (s.to_owned(), Some(sub.as_bytes().to_vec())),
                    None => (name, None),
                })
            }
            b' ' | b'\t' => {
                self.skip_blank();
                if self.peek()? != b'"' {
                    return None;
                }
                self.i += 1;
                let mut sub = Vec::new();
                loop {
                    match self.peek()? {
                        b'\n' => return None,
                        b'"' => {
                            self.i += 1;
                            break;
                        }
                        b'\\' => {
                            self.i += 1;
                            let c = self.peek()?;
                            if c == b'\n' {
                                return None;
                            }
                            sub.push(c);
                            self.i += 1;
                        }
                        c => {
                            sub.push(c);
                            self.i += 1;
                        }
                    }
                }
                (self.peek()? == b']').then(|| {
                    self.i += 1;
                    (name, Some(sub))
                })
            }
            _ => None,
        }
    }

    /// `key`, `key = value`; the cursor is on the key's first letter.
    fn key_value(&mut self) -> Option<(String, Option<Vec<u8>>)> {
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'-') {
            self.i += 1;
        }
        let key = std::str::from_utf8(&self.s[start..self.i]).ok()?.to_ascii_lowercase();
        self.skip_blank();
        match self.peek() {
            None | Some(b'\n') => return Some((key, None)),
            Some(b'#' | b';') => {
                self.skip_line();
                return Some((key, None));
            }
            Some(b'=') => self.i += 1,
            Some(_) => return None,
        }
        self.skip_blank();
        let mut value = Vec::new();
        // Whitespace outside quotes is kept only when something follows it.
        let mut pending_space = 0usize;
        let mut quoted = false;
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'\n' if !quoted => break,
                b'\n' => return None,
                b' ' | b'\t' | b'\r' if !quoted => pending_space += 1,
                b'#' | b';' if !quoted => {
                    self.skip_line();
                    break;
                }
                b'"' => quoted = !quoted,
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    let decoded = match e {
                        b'\n' => continue,
                        b'\r' if self.peek() == Some(b'\n') => {
                            self.i += 1;
                            continue;
                        }
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'b' => 8,
                        b'"' | b'\\' => e,
                        _ => return None,
                    };
                    value.extend(std::iter::repeat_n(b' ', std::mem::take(&mut pending_space)));
                    value.push(decoded);
                }
                c => {
                    value.extend(std::iter::repeat_n(b' ', std::mem::take(&mut pending_space)));
                    value.push(c);
                }
            }
        }
        if quoted {
            return None;
        }
        Some((key, Some(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Vec<(String, Option<String>, String, Option<String>)> {
        let (e, ok) = parse(text.as_bytes());
        assert!(ok, "{text:?}");
        e.into_iter()
            .map(|e| {
                (
                    e.section,
                    e.subsection.map(|s| String::from_utf8(s).unwrap()),
                    e.key,
                    e.value.map(|v| String::from_utf8(v).unwrap()),
                )
            })
            .collect()
    }

    #[test]
    fn sections_keys_and_values() {
        let e = one(
            "# comment\n[core]\n\trepositoryformatversion = 0\n\tBare\n[Include]\n  PATH = ../shared.gitconfig ; note\n[includeIf \"gitdir:~/w/\"]\n\tpath = \"~/a b.inc\"\n[remote.Origin]\n\turl = x\n",
        );
        assert_eq!(e[0], ("core".into(), None, "repositoryformatversion".into(), Some("0".into())));
        assert_eq!(e[1], ("core".into(), None, "bare".into(), None));
        assert_eq!(e[2], ("include".into(), None, "path".into(), Some("../shared.gitconfig".into())));
        assert_eq!(e[3], ("includeif".into(), Some("gitdir:~/w/".into()), "path".into(), Some("~/a b.inc".into())));
        // The old `[section.sub]` form is case-insensitive: git lower-cases all of it.
        assert_eq!(e[4], ("remote".into(), Some("origin".into()), "url".into(), Some("x".into())));
    }

    #[test]
    fn quoting_escapes_comments_and_continuations() {
        let e = one("[core]\nhooksPath = \"a;b\"#c\nx = a  b  \ny = \"q\\\"uote\" \\\n   tail\nz = a\\tb\n");
        assert_eq!(e[0].3.as_deref(), Some("a;b"));
        assert_eq!(e[1].3.as_deref(), Some("a  b"));
        // Whitespace on both sides of a continuation is kept, as git keeps it.
        assert_eq!(e[2].3.as_deref(), Some("q\"uote    tail"));
        assert_eq!(e[3].3.as_deref(), Some("a\tb"));
        let e = one("[sub \"a\\\"b\\\\c\"]\nk=v\n");
        assert_eq!(e[0].1.as_deref(), Some("a\"b\\c"));
    }

    #[test]
    fn malformed_input_stops_without_panicking() {
        for text in
            ["[core\nx=1", "x = 1", "[core]\nx = \"open", "[core]\n=1", "[a \"b\nc\"]", "[core]\nx = \\q", "\u{0}"]
        {
            let (_, ok) = parse(text.as_bytes());
            assert!(!ok, "{text:?}");
        }
        let (e, ok) = parse(b"[core]\nhookspath = a\n[bad\n");
        assert!(!ok);
        assert_eq!(e.len(), 1, "what came before the error is kept");
    }
}
