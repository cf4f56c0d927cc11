//! The gitlinks (mode `160000`: submodules and embedded repositories) recorded in a git
//! index file, read from its documented binary format (gitformat-index(5), versions 2, 3
//! and 4). `git status` on the host descends into every populated gitlink and runs that
//! repository's configuration, so these are the nested repositories git itself will visit.
//!
//! Hand-written: only the entry headers and paths are needed, not `gix-index`'s full model.

/// The mode git records for a gitlink.
const GITLINK: u32 = 0o160000;

/// Why an index could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The data does not start with the signature `DIRC`.
    #[error("not a git index (no DIRC signature)")]
    Signature,
    /// The index's version, which is not 2, 3 or 4.
    #[error("unsupported index version {0}")]
    Version(u32),
    /// An entry does not parse (a bad varint, a version 4 path that drops more of the
    /// previous path than there was); from [`gitlinks`], also an index cut short.
    #[error("the index is truncated or malformed")]
    Malformed,
    /// The bytes given end before the entries do (read more of the file).
    #[error("the index's entries go beyond the bytes read")]
    Truncated,
}

/// What an index says: its gitlinks' paths (relative to the work tree, as bytes), and the
/// shared index it builds on (`core.splitIndex`), by hash in hexadecimal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gitlinks {
    /// The gitlinks' paths, relative to the work tree, as bytes (`libs/sub`).
    pub paths: Vec<Vec<u8>>,
    /// For a split index, the hash that names its shared index (`sharedindex.HASH`, beside
    /// it in the git directory).
    pub shared_index: Option<String>,
}

/// The gitlinks of an index's entries, and where its extensions begin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    /// The gitlinks' paths, relative to the work tree, as bytes, in index order.
    pub gitlinks: Vec<Vec<u8>>,
    /// Offset of the first extension (or of the trailing hash).
    pub end: usize,
}

/// Reads the entries of an index from its first bytes `data`: the gitlinks, and where the
/// extensions begin. `hash_len` is 20 (SHA-1) or 32 (SHA-256), from the repository's
/// `extensions.objectFormat`. [`IndexError::Truncated`] when `data` ends first.
pub fn entries(data: &[u8], hash_len: usize) -> Result<Entries, IndexError> {
    let short = |at: usize, n: usize| if at + n > data.len() { Err(IndexError::Truncated) } else { Ok(()) };
    let u32_at = |at: usize| -> Result<u32, IndexError> {
        short(at, 4)?;
        Ok(u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]))
    };
    if data.len() >= 4 && &data[..4] != b"DIRC" {
        return Err(IndexError::Signature);
    }
    let version = u32_at(4)?;
    if !(2..=4).contains(&version) {
        return Err(IndexError::Version(version));
    }
    let count = u32_at(8)? as usize;
    let mut out = Entries::default();
    let mut at = 12;
    let mut prev: Vec<u8> = Vec::new();
    for _ in 0..count {
        let start = at;
        // ctime, mtime (8 bytes each), dev, ino, mode, uid, gid, size (4 each), the hash and
        // 16 bits of flags.
        let mode = u32_at(start + 24)?;
        let flags_at = start + 40 + hash_len;
        short(flags_at, 2)?;
        let flags = u16::from_be_bytes([data[flags_at], data[flags_at + 1]]);
        at = flags_at + 2;
        if version >= 3 && flags & 0x4000 != 0 {
            at += 2;
        }
        let nul = |from: usize| -> Result<usize, IndexError> {
            short(from, 0)?;
            data[from..].iter().position(|&b| b == 0).map(|i| from + i).ok_or(IndexError::Truncated)
        };
        let path = if version == 4 {
            // A varint: how many bytes of the previous path to drop, then the rest of the
            // path up to a NUL.
            short(at, 1)?;
            let (strip, used) = varint(&data[at..])?;
            at += used;
            let end = nul(at)?;
            let keep = prev.len().checked_sub(strip as usize).ok_or(IndexError::Malformed)?;
            let mut p = prev[..keep].to_vec();
            p.extend_from_slice(&data[at..end]);
            at = end + 1;
            p
        } else {
            let end = nul(at)?;
            let p = data[at..end].to_vec();
            // Entries are padded with 1 to 8 NULs to a multiple of 8 bytes.
            at = start + (end - start + 8) / 8 * 8;
            p
        };
        if mode & 0o170000 == GITLINK {
            out.gitlinks.push(path.clone());
        }
        prev = path;
    }
    short(at, 0)?;
    out.end = at;
    Ok(out)
}

/// The hash of the shared index a split index builds on (`core.splitIndex`), from a `link`
/// extension's body, in hexadecimal; `None` for another extension or an all-zero hash.
pub fn shared_index(signature: &[u8], body: &[u8], hash_len: usize) -> Option<String> {
    if signature != b"link" || body.len() < hash_len {
        return None;
    }
    let hex: String = body[..hash_len].iter().map(|b| format!("{b:02x}")).collect();
    hex.bytes().any(|b| b != b'0').then_some(hex)
}

/// Reads the gitlinks of a whole index held in memory (entries and extensions).
pub fn gitlinks(data: &[u8], hash_len: usize) -> Result<Gitlinks, IndexError> {
    let e = entries(data, hash_len).map_err(|e| if e == IndexError::Truncated { IndexError::Malformed } else { e })?;
    let mut out = Gitlinks { paths: e.gitlinks, shared_index: None };
    // Extensions: a 4-byte signature and a 32-bit size each, until the trailing hash.
    let mut at = e.end;
    while at + 8 + hash_len <= data.len() {
        let size = u32::from_be_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]) as usize;
        let body = data.get(at + 8..(at + 8).saturating_add(size)).unwrap_or(&data[at + 8..]);
        if let Some(h) = shared_index(&data[at..at + 4], body, hash_len) {
            out.shared_index = Some(h);
        }
        at = at.saturating_add(8 + size);
    }
    Ok(out)
}

/// Git's offset varint (`varint.c`): 7 bits a byte, high bit "more", each continuation
/// adding one before shifting.
fn varint(b: &[u8]) -> Result<(u64, usize), IndexError> {
    let mut i = 0;
    let mut c = *b.first().ok_or(IndexError::Malformed)?;
    let mut val = u64::from(c & 0x7f);
    while c & 0x80 != 0 {
        i += 1;
        c = *b.get(i).ok_or(IndexError::Malformed)?;
        val = val.checked_add(1).and_then(|v| v.checked_mul(128)).ok_or(IndexError::Malformed)? | u64::from(c & 0x7f);
    }
    Ok((val, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 2 or 3 entry, padded as git pads it.
    fn entry(mode: u32, path: &str, hash_len: usize) -> Vec<u8> {
        let mut e = vec![0u8; 24];
        e.extend_from_slice(&mode.to_be_bytes());
        e.extend_from_slice(&[0u8; 12]);
        e.extend_from_slice(&vec![0xab; hash_len]);
        e.extend_from_slice(&(path.len() as u16).to_be_bytes());
        e.extend_from_slice(path.as_bytes());
        let len = e.len();
        e.resize((len + 8) / 8 * 8, 0);
        e
    }

    fn index(version: u32, entries: &[Vec<u8>]) -> Vec<u8> {
        let mut d = b"DIRC".to_vec();
        d.extend_from_slice(&version.to_be_bytes());
        d.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for e in entries {
            d.extend_from_slice(e);
        }
        d.extend_from_slice(&[0u8; 20]);
        d
    }

    #[test]
    fn gitlinks_of_a_version_2_index() {
        let d = index(2, &[entry(0o100644, "a.txt", 20), entry(0o160000, "libs/sub", 20), entry(0o120000, "l", 20)]);
        assert_eq!(gitlinks(&d, 20).unwrap().paths, [b"libs/sub".to_vec()]);
        let d = index(2, &[entry(0o160000, "x", 32)]);
        assert_eq!(gitlinks(&d, 32).unwrap().paths, [b"x".to_vec()]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(gitlinks(b"XXXX", 20), Err(IndexError::Signature));
        assert_eq!(entries(b"DIRC", 20), Err(IndexError::Truncated));
        assert_eq!(gitlinks(b"DIRC\0\0\0\x09\0\0\0\0", 20), Err(IndexError::Version(9)));
        let mut d = index(2, &[entry(0o160000, "sub", 20)]);
        d.truncate(40);
        assert_eq!(gitlinks(&d, 20), Err(IndexError::Malformed));
        let mut d = index(2, &[]);
        d[11] = 200;
        assert_eq!(gitlinks(&d, 20), Err(IndexError::Malformed));
        assert_eq!(entries(&d, 20), Err(IndexError::Truncated), "so the caller reads more");
        // A huge or broken extension after the entries loses no gitlink.
        let mut d = index(2, &[entry(0o160000, "sub", 20)]);
        let hash = d.split_off(d.len() - 20);
        d.extend_from_slice(b"Zpad\xff\xff\xff\xf0");
        d.extend_from_slice(&hash);
        assert_eq!(gitlinks(&d, 20).unwrap().paths, [b"sub".to_vec()]);
        for n in 0..64 {
            let mut d = index(4, &[entry(0o160000, "sub", 20)]);
            d.truncate(12 + n);
            let _ = gitlinks(&d, 20);
        }
    }

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x05]).unwrap(), (5, 1));
        assert_eq!(varint(&[0x80, 0x00]).unwrap(), (128, 2));
        assert!(varint(&[0x80]).is_err());
    }
}
