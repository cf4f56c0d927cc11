//! The real host file system as a [`HostView`].

use std::ffi::OsString;
use std::path::Path;

use crate::plan::{HostView, Kind};

/// Answers [`HostView`] questions with `lstat` and `readdir`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealHost;

fn kind_of(ft: std::fs::FileType) -> Kind {
    if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else {
        Kind::Other
    }
}

impl HostView for RealHost {
    fn kind(&self, path: &Path) -> Option<Kind> {
        std::fs::symlink_metadata(path).ok().map(|m| kind_of(m.file_type()))
    }

    fn list(&self, dir: &Path) -> Vec<(OsString, Kind)> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok()).filter_map(|e| Some((e.file_name(), kind_of(e.file_type().ok()?)))).collect()
    }
}
