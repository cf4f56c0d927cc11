//! Where Palisade never places an ACL entry, whatever the policy says.
//!
//! Peers that grant broadly on Windows have left inheritable entries on `C:\`, the whole user
//! profile, OneDrive and `NTUSER.DAT`, and re-applied them recursively over `%TEMP%` on every
//! command. An entry on such a root reaches far more than the rule meant (every file beneath
//! inherits it), takes minutes to propagate and is hard to take back. So a grant there is
//! refused with the reason, and the user names narrower directories.

use serde::Serialize;

use palisade_policy::winpath::WinPath;

/// The host's folders the guard and the plan need, canonical (see [`WinPath`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    /// `%SystemRoot%` (`C:\Windows`).
    pub system_root: WinPath,
    /// `%ProgramFiles%`, `%ProgramFiles(x86)%`, `%ProgramData%`: readable by every
    /// AppContainer already (their default ACLs grant `ALL APPLICATION PACKAGES`).
    pub program_dirs: Vec<WinPath>,
    /// `%USERPROFILE%`.
    pub profile: WinPath,
    /// The user's `%TEMP%`.
    pub temp: WinPath,
    /// OneDrive roots (`%OneDrive%`, `%OneDriveConsumer%`, `%OneDriveCommercial%`).
    pub onedrive: Vec<WinPath>,
    /// Palisade's state folder for this workspace
    /// (`%LOCALAPPDATA%\palisade\workspaces\TAG`): the private TEMP folders and the journal.
    pub state: WinPath,
}

/// What a grant at a path amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// An ACL entry is placed there.
    Grant,
    /// Readable by every AppContainer already (`ALL APPLICATION PACKAGES`): no entry; the
    /// probe checks it.
    AlreadyReadable,
}

/// Whether a grant (`write` or read) at `path` may be made, and how.
///
/// # Errors
/// The reason, when `path` is a drive or share root, the profile folder or one of its
/// ancestors, `%TEMP%` or one of its ancestors, a OneDrive root, a registry hive
/// (`NTUSER.DAT*`, `UsrClass.dat*`), or (for writes) inside the Windows or program folders.
pub fn check(path: &WinPath, write: bool, facts: &HostFacts) -> Result<Site, String> {
    let above = |root: &WinPath| root.is_within(path);
    if path.parts().is_empty() {
        return Err("a drive or share root: every file on it would inherit the entry".into());
    }
    if above(&facts.profile) {
        return Err(format!("{} is the profile folder or above it", path));
    }
    if above(&facts.temp) {
        return Err(format!("{} is %TEMP% or above it (each run gets a private TEMP instead)", path));
    }
    if let Some(od) = facts.onedrive.iter().find(|od| above(od)) {
        return Err(format!("{} holds the OneDrive folder {od}", path));
    }
    if path.parts().iter().any(|p| {
        let u = p.to_ascii_uppercase();
        u.starts_with("NTUSER.DAT") || u.starts_with("USRCLASS.DAT")
    }) {
        return Err(format!("{} is a registry hive", path));
    }
    let system = path.is_within(&facts.system_root) || facts.program_dirs.iter().any(|d| path.is_within(d));
    let holds_system = facts.system_root.is_within(path) || facts.program_dirs.iter().any(|d| d.is_within(path));
    match (write, system || holds_system) {
        (true, true) => Err(format!("{} is Windows' or the installed programs' folder", path)),
        (false, true) if system => Ok(Site::AlreadyReadable),
        (false, true) => Err(format!("{} holds Windows' or the installed programs' folder", path)),
        (_, false) => Ok(Site::Grant),
    }
}
