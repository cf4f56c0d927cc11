//! The real host file system, as planning sees it.

/// Answers [`crate::plan::HostView`] questions with `lstat`, `readdir` and `open`; Palisade's
/// own placeholders read as absent.
pub use palisade_policy::load::RealFs as RealHost;
