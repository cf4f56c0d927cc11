//! Access masks and ACE flags, as winnt.h defines them ("File Security and Access Rights",
//! "ACE_HEADER", Win32 docs). Named here so the plan reads as what it grants.

use serde::Serialize;

/// `FILE_GENERIC_READ | FILE_GENERIC_EXECUTE`: read data, attributes and extended attributes,
/// list a directory, traverse, run (`0x1200A9`). What "Read & execute" grants in Explorer.
pub const READ_EXECUTE: u32 = 0x0012_00A9;
/// `FILE_GENERIC_READ | FILE_GENERIC_WRITE | FILE_GENERIC_EXECUTE | DELETE` (`0x1301BF`):
/// Explorer's "Modify". It leaves out `FILE_DELETE_CHILD`, `WRITE_DAC` and `WRITE_OWNER`, so a
/// child whose own ACL denies `DELETE` (a placeholder, a pinned link) cannot be removed
/// through its parent, and no grant can be widened from inside.
pub const MODIFY: u32 = 0x0013_01BF;
/// Every right that changes an object or its name: `FILE_WRITE_DATA`/`FILE_ADD_FILE`,
/// `FILE_APPEND_DATA`/`FILE_ADD_SUBDIRECTORY`, `FILE_WRITE_EA`, `FILE_DELETE_CHILD`,
/// `FILE_WRITE_ATTRIBUTES`, `DELETE`, `WRITE_DAC`, `WRITE_OWNER` (`0xD0156`). Denied on
/// protected paths, so they can be read but not changed, replaced, renamed or removed.
pub const WRITE_ANY: u32 = 0x000D_0156;
/// `DELETE` (`0x10000`): denied, on the folder alone, on every folder between a writable
/// grant and a protected path, so none can be renamed away with the protected path inside.
pub const DELETE: u32 = 0x0001_0000;
/// `FILE_ALL_ACCESS` (`0x1F01FF`): denied on hidden paths beneath a grant.
pub const ALL: u32 = 0x001F_01FF;

/// Whether an ACE allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AceKind {
    /// `ACCESS_ALLOWED_ACE_TYPE`.
    Allow,
    /// `ACCESS_DENIED_ACE_TYPE`: placed before every allow entry (canonical order), so it
    /// wins over what a parent's entry would let children inherit.
    Deny,
}

/// How an ACE reaches beneath the object it is set on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Inherit {
    /// This object only (a file, a link, a placeholder).
    None,
    /// `OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE`: the directory and everything beneath.
    Subtree,
}

impl Inherit {
    /// The ACE flags (`OBJECT_INHERIT_ACE` 0x1 | `CONTAINER_INHERIT_ACE` 0x2).
    pub fn flags(self) -> u32 {
        match self {
            Inherit::None => 0,
            Inherit::Subtree => 0x3,
        }
    }
}

/// The mask's name as `icacls` would say it, for plans and journals read by people.
pub fn name(mask: u32) -> &'static str {
    match mask {
        READ_EXECUTE => "read_execute",
        MODIFY => "modify",
        WRITE_ANY => "write_any",
        ALL => "all",
        DELETE => "delete",
        _ => "custom",
    }
}
