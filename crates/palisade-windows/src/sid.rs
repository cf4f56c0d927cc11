//! Security identifiers Palisade derives from names, by pure code: the same name gives the
//! same SID on every machine and every run, so an ACL entry granted once for a workspace is
//! found again (and revoked exactly) by the next run, `palisade forget` and `palisade repair`.
//!
//! Two derivations, both hashes of the name (SHA-256) laid out as little-endian 32-bit
//! sub-authorities:
//!
//! - **Capability SIDs** (`S-1-15-3-1024-h0-…-h7`): what `DeriveCapabilitySidsFromName`
//!   (advapi32; `RtlDeriveCapabilitySidsFromName` in ntdll) returns for a capability name that
//!   is not one of the twelve legacy ones: the hash of the name upper-cased, in UTF-16LE, under
//!   `SECURITY_APP_PACKAGE_AUTHORITY` (15), `SECURITY_CAPABILITY_BASE_RID` (3) and
//!   `SECURITY_CAPABILITY_APP_RID` (1024). Documented: learn.microsoft.com,
//!   "DeriveCapabilitySidsFromName"; the layout: NtDoc, `RtlDeriveCapabilitySidsFromName`.
//! - **AppContainer SIDs** (`S-1-15-2-h0-…-h6`): what `DeriveAppContainerSidFromAppContainerName`
//!   (userenv) returns: the first 28 bytes of the hash of the name lower-cased, in UTF-16LE,
//!   under `SECURITY_APP_PACKAGE_AUTHORITY` and `SECURITY_APP_PACKAGE_BASE_RID` (2).
//!
//! On Windows the backend asks the system's own functions and refuses to run when they
//! disagree with these (a layout changed in a Windows release would otherwise leave grants
//! nobody can find); the Windows workflow checks both on a real machine
//! (`.github/workflows/windows.yml`). On other systems these are what `run --dry-run` shows.

use sha2::{Digest, Sha256};

/// `SECURITY_APP_PACKAGE_AUTHORITY`.
const APP_PACKAGE_AUTHORITY: u64 = 15;
/// `SECURITY_APP_PACKAGE_BASE_RID`.
const APP_PACKAGE_BASE_RID: u32 = 2;
/// `SECURITY_CAPABILITY_BASE_RID`.
const CAPABILITY_BASE_RID: u32 = 3;
/// `SECURITY_CAPABILITY_APP_RID`.
const CAPABILITY_APP_RID: u32 = 1024;

/// A SID in its string form (`S-1-15-3-1024-…`), as `ConvertSidToStringSidW` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Sid(pub String);

impl std::fmt::Display for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The hash-based capability SID of `name` (see the module). The twelve legacy capability
/// names (`internetClient`, …) have short SIDs instead and are never passed here.
pub fn capability_sid(name: &str) -> Sid {
    let upper: String = name.chars().flat_map(char::to_uppercase).collect();
    let mut rids = vec![CAPABILITY_BASE_RID, CAPABILITY_APP_RID];
    rids.extend(hash_rids(&upper, 8));
    format_sid(APP_PACKAGE_AUTHORITY, &rids)
}

/// The AppContainer (package) SID of the profile `name` (see the module).
pub fn app_container_sid(name: &str) -> Sid {
    let lower: String = name.chars().flat_map(char::to_lowercase).collect();
    let mut rids = vec![APP_PACKAGE_BASE_RID];
    rids.extend(hash_rids(&lower, 7));
    format_sid(APP_PACKAGE_AUTHORITY, &rids)
}

/// The first `n` little-endian 32-bit words of SHA-256 over `text` in UTF-16LE.
fn hash_rids(text: &str, n: usize) -> Vec<u32> {
    let bytes: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let digest = Sha256::digest(&bytes);
    digest.chunks_exact(4).take(n).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn format_sid(authority: u64, rids: &[u32]) -> Sid {
    let mut s = format!("S-1-{authority}");
    for r in rids {
        s.push('-');
        s.push_str(&r.to_string());
    }
    Sid(s)
}

/// A short, stable tag for a canonical path key: the first 16 bytes of its SHA-256, in hex
/// (32 characters). Names of per-workspace objects (the AppContainer profile, the capability)
/// carry it, so they stay within Windows' 64-character profile names whatever the path.
pub fn path_tag(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_sids_have_the_documented_shape_and_ignore_case() {
        let sid = capability_sid("palisade.workspace.0123");
        let parts: Vec<&str> = sid.0.split('-').collect();
        // S, 1, authority 15, then 3, 1024 and eight hash words: ten sub-authorities.
        assert_eq!(&parts[..5], ["S", "1", "15", "3", "1024"]);
        assert_eq!(parts.len(), 3 + 10);
        assert_eq!(sid, capability_sid("PALISADE.Workspace.0123"), "the name is upper-cased before hashing");
        assert_ne!(sid, capability_sid("palisade.workspace.0124"));
    }

    #[test]
    fn app_container_sids_have_the_documented_shape_and_ignore_case() {
        let sid = app_container_sid("palisade.ws.abc");
        let parts: Vec<&str> = sid.0.split('-').collect();
        assert_eq!(&parts[..4], ["S", "1", "15", "2"]);
        assert_eq!(parts.len(), 3 + 8, "base RID and seven hash words");
        assert_eq!(sid, app_container_sid("Palisade.WS.ABC"));
    }

    #[test]
    fn the_hash_is_sha256_of_utf16le() {
        // SHA-256 of "A\0" (UTF-16LE of "a" upper-cased), first word little-endian, computed
        // independently: sha256(b"A\x00") = 0x9a8b…; recompute here from the bytes.
        let d = Sha256::digest([b'A', 0]);
        let first = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        assert_eq!(capability_sid("a").0.split('-').nth(5), Some(first.to_string().as_str()));
    }

    #[test]
    fn path_tags_are_stable_and_short() {
        assert_eq!(path_tag("C:\\USERS\\ME\\REPO"), path_tag("C:\\USERS\\ME\\REPO"));
        assert_eq!(path_tag("x").len(), 32);
    }
}
