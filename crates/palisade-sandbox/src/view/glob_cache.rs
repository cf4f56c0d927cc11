//! A `deny`/`protect` glob's last walk, kept between runs so that the next run lists only
//! the directories that changed.
//!
//! Expanding `**/.env` lists every directory of the writable trees: 0.2 s a run on a
//! 50,000-file repository. What a directory holds changes only with its change time
//! (`st_ctime`: a name added, removed or renamed in it changes it, and unlike the
//! modification time no one can set it back), so a walk records, per directory, its change
//! time (with its device and inode numbers: a directory renamed or mounted over in its
//! place is another one), the names that matched and its subdirectories; the next walk asks
//! each recorded directory's and reuses the record when they are the same, and lists it
//! again when not. The result is always the one a full walk would give:
//!
//! - a directory changed within [`RACY`] of the moment it was listed is never trusted (a
//!   file system keeps coarse change times, so a name added in the same tick would leave
//!   the time as it was: git's "racily clean" entries, the same answer);
//! - a directory whose change time cannot be read is listed;
//! - a record file that cannot be read or parsed is ignored (a full walk), and it is
//!   replaced atomically (a new file renamed over it), so concurrent runs never read half
//!   of one.
//!
//! A directory that cannot be listed is hidden whole by the walk and never recorded.
//!
//! Records live in the workspace's state (`$XDG_STATE_HOME/palisade/copies/WORKSPACE-KEY/globs`,
//! beside its kept copies), which the built-in policy hides from the sandbox: a sandbox
//! cannot make a later run hide less. Unix only (names are kept as bytes); elsewhere every
//! run walks.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// How close to its listing a directory's change time must be for the record to be
/// distrusted: 2 s, well above any file system's timestamp granularity (FAT's is 2 s).
pub const RACY: i64 = 2;

/// What one directory held when it was listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DirRecord {
    /// Its device and inode numbers and change time (seconds, nanoseconds), read just
    /// before it was listed (`HostFs::stamp`).
    pub stamp: (u64, u64, i64, i64),
    /// Whether that time was within [`RACY`] of the listing: then the record is never reused.
    pub racy: bool,
    /// How many entries it had (the walk's budget counts them, reused or not).
    pub entries: usize,
    /// The names that matched the pattern.
    pub matches: Vec<OsString>,
    /// Its subdirectories, walked in turn.
    pub subdirs: Vec<OsString>,
}

/// A walk's records, by directory (its path's bytes: paths here are normalised, so equal
/// bytes are the same path, and byte order is much cheaper than `Path`'s).
pub(super) type Records = BTreeMap<OsString, DirRecord>;

/// Where a glob's records are kept for these starting directories, and the key the file
/// must hold: a file named after a hash of both, in `dir`. The name alone could collide (a
/// 64-bit FNV-1a hash, which a project's own glob could be chosen to match), so the file
/// holds the whole key and [`load`] ignores one that holds another.
pub(super) fn file_for(dir: &Path, pattern: &str, starts: &[PathBuf]) -> (PathBuf, Vec<u8>) {
    let mut key = pattern.as_bytes().to_vec();
    for s in starts {
        key.push(0);
        key.extend_from_slice(s.as_os_str().as_encoded_bytes());
    }
    (dir.join(format!("{:016x}.walk", crate::view::fnv1a(&key))), key)
}

#[cfg(unix)]
mod text {
    //! The record file: one line per item, fields separated by tabs, names as bytes with
    //! `\`, tab and newline escaped. The first line, `K KEY`, names what was walked (see
    //! `file_for`); `D DEV INO SECONDS NANOS RACY ENTRIES PATH` starts a directory,
    //! `M NAME` and `S NAME` are its matches and subdirectories.
    use super::*;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};

    fn escape(b: &[u8], out: &mut Vec<u8>) {
        for &c in b {
            match c {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'\n' => out.extend_from_slice(b"\\n"),
                c => out.push(c),
            }
        }
    }

    fn unescape(b: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(b.len());
        let mut it = b.iter();
        while let Some(&c) = it.next() {
            if c == b'\\' {
                out.push(match it.next()? {
                    b'\\' => b'\\',
                    b't' => b'\t',
                    b'n' => b'\n',
                    _ => return None,
                });
            } else {
                out.push(c);
            }
        }
        Some(out)
    }

    pub fn write(key: &[u8], records: &Records) -> Vec<u8> {
        let mut out = b"K\t".to_vec();
        escape(key, &mut out);
        out.push(b'\n');
        for (dir, r) in records {
            let (dev, ino, s, ns) = r.stamp;
            let head = format!("D\t{dev}\t{ino}\t{s}\t{ns}\t{}\t{}\t", u8::from(r.racy), r.entries);
            out.extend_from_slice(head.as_bytes());
            escape(dir.as_bytes(), &mut out);
            out.push(b'\n');
            for (tag, names) in [(b'M', &r.matches), (b'S', &r.subdirs)] {
                for n in names {
                    out.extend_from_slice(&[tag, b'\t']);
                    escape(n.as_bytes(), &mut out);
                    out.push(b'\n');
                }
            }
        }
        out
    }

    pub fn read(key: &[u8], data: &[u8]) -> Option<Records> {
        let mut records = Records::new();
        let mut current: Option<(OsString, DirRecord)> = None;
        let mut lines = data.split(|&c| c == b'\n').filter(|l| !l.is_empty());
        let mut expected = b"K\t".to_vec();
        escape(key, &mut expected);
        if lines.next()? != expected.as_slice() {
            return None;
        }
        for line in lines {
            let mut f = line.split(|&c| c == b'\t');
            match f.next()? {
                b"D" => {
                    if let Some((d, r)) = current.take() {
                        records.insert(d, r);
                    }
                    let num = |b: Option<&[u8]>| std::str::from_utf8(b?).ok()?.parse::<i64>().ok();
                    let id = |b: Option<&[u8]>| std::str::from_utf8(b?).ok()?.parse::<u64>().ok();
                    let (dev, ino) = (id(f.next())?, id(f.next())?);
                    let (s, ns, racy, entries) = (num(f.next())?, num(f.next())?, num(f.next())?, num(f.next())?);
                    let path = OsString::from_vec(unescape(f.next()?)?);
                    let r = DirRecord {
                        stamp: (dev, ino, s, ns),
                        racy: racy != 0,
                        entries: usize::try_from(entries).ok()?,
                        matches: Vec::new(),
                        subdirs: Vec::new(),
                    };
                    current = Some((path, r));
                }
                tag @ (b"M" | b"S") => {
                    let name = OsString::from_vec(unescape(f.next()?)?);
                    let (_, r) = current.as_mut()?;
                    if tag == b"M" { &mut r.matches } else { &mut r.subdirs }.push(name);
                }
                _ => return None,
            }
            if f.next().is_some() {
                return None;
            }
        }
        if let Some((d, r)) = current {
            records.insert(d, r);
        }
        Some(records)
    }
}

/// The records kept in `file` for `key`; none when it is missing, unreadable, malformed
/// or another key's.
pub(super) fn load(file: &Path, key: &[u8]) -> Records {
    #[cfg(unix)]
    {
        std::fs::read(file).ok().and_then(|d| text::read(key, &d)).unwrap_or_default()
    }
    #[cfg(not(unix))]
    {
        let _ = (file, key);
        Records::new()
    }
}

/// Replaces `file` with `records` for `key` (a new file renamed over it); failures are
/// ignored: the next run then walks again.
pub(super) fn save(file: &Path, key: &[u8], records: &Records) {
    #[cfg(unix)]
    {
        let Some(dir) = file.parent() else { return };
        if crate::copies::make_private_dirs(dir).is_err() {
            return;
        }
        let tmp = file.with_extension(format!("tmp-{}", std::process::id()));
        if std::fs::write(&tmp, text::write(key, records)).is_err() || std::fs::rename(&tmp, file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, key, records);
    }
}

/// Whether a change time read at `now` (seconds since the epoch) is too recent to trust.
pub(super) fn racy(stamp: (u64, u64, i64, i64), now: i64) -> bool {
    now - stamp.2 < RACY
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn records_survive_hostile_names() {
        use std::os::unix::ffi::OsStringExt;
        let mut records = Records::new();
        let odd = OsString::from_vec(b"a\tb\nc\\d\xff".to_vec());
        records.insert(
            OsString::from_vec(b"/w/\n\t\\x".to_vec()),
            DirRecord {
                stamp: (66306, 1 << 40, 1_700_000_000, 999_999_999),
                racy: true,
                entries: 7,
                matches: vec![odd.clone(), ".env".into()],
                subdirs: vec![odd],
            },
        );
        records.insert(
            "/w".into(),
            DirRecord { stamp: (0, 2, -1, 0), racy: false, entries: 0, matches: vec![], subdirs: vec![] },
        );
        assert_eq!(text::read(b"k\0/w", &text::write(b"k\0/w", &records)), Some(records.clone()));
        assert_eq!(text::read(b"other", &text::write(b"k\0/w", &records)), None, "another key's records");
        for bad in [
            &b"X\t1\n"[..],
            b"D\t1\t2\t3\t4\t0\t3\n",
            b"M\tname\n",
            b"D\t1\t2\t3\t4\t0\t3\t/p\\q\n",
            b"D\t1\t2\t3\t4\t0\t3\t/p\tmore\n",
            b"D\t-1\t2\t3\t4\t0\t3\t/p\n",
        ] {
            let data = [&b"K\tk\n"[..], bad].concat();
            assert_eq!(text::read(b"k", &data), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
