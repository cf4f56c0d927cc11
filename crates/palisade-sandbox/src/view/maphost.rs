//! An in-memory host file system for tests of planning, on any OS.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{HostFs, Kind};

/// A host file system held in memory: each path with its [`Kind`]; every ancestor of a path
/// given is a directory. No file can be read (`read` gives `None`). For tests of [`super::build`] and of every
/// backend's planning (`MapHost::with(&[("/w/proj/.git/config", Kind::File)])`).
#[derive(Debug, Default, Clone)]
pub struct MapHost(BTreeMap<PathBuf, Kind>);

impl MapHost {
    /// A host with these absolute paths (and their ancestors, as directories).
    pub fn with(entries: &[(&str, Kind)]) -> MapHost {
        let mut h = MapHost::default();
        for (p, k) in entries {
            let p = PathBuf::from(p);
            for a in p.ancestors().skip(1) {
                h.0.entry(a.to_path_buf()).or_insert(Kind::Dir);
            }
            h.0.insert(p, *k);
        }
        h
    }
}

impl HostFs for MapHost {
    fn kind(&self, path: &Path) -> Option<Kind> {
        self.0.get(path).copied()
    }
    fn list(&self, dir: &Path) -> Vec<(OsString, Kind)> {
        self.0
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .filter_map(|(p, k)| Some((p.file_name()?.to_os_string(), *k)))
            .collect()
    }
    fn read(&self, _: &Path, _: usize) -> Option<Vec<u8>> {
        None
    }
}
