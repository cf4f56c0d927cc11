//! A warm session's command as the supervisor hands it to init: written into a memfd (no
//! size limit of a socket message), read by init before it forks. The layout: which
//! streams get the pty (one byte: bit 3 set when there is a pty, bits 0-2 stdin, stdout,
//! stderr), the number of arguments and of variables (4 bytes each, little-endian), then
//! each argument, each `NAME=VALUE` and the working directory, every one ended by a NUL.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use palisade_sandbox::PtyUse;

/// One command of a warm session, ready for `execve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnRequest {
    pub pty: Option<PtyUse>,
    pub argv: Vec<CString>,
    /// `NAME=VALUE` each.
    pub envp: Vec<CString>,
    pub cwd: PathBuf,
}

/// The longest request init reads: argv and environment together.
pub const MAX_REQUEST: usize = 16 << 20;

impl SpawnRequest {
    /// The request from the command's parts.
    ///
    /// # Errors
    /// An argument, variable or directory holding a NUL byte, or no command.
    pub fn new(
        pty: Option<PtyUse>,
        argv: &[OsString],
        env: &[(String, String)],
        cwd: PathBuf,
    ) -> Result<SpawnRequest, String> {
        let c = |b: Vec<u8>| CString::new(b).map_err(|_| "an argument or variable contains a NUL byte".to_owned());
        if argv.is_empty() {
            return Err("no command given".into());
        }
        Ok(SpawnRequest {
            pty,
            argv: argv.iter().map(|a| c(a.as_bytes().to_vec())).collect::<Result<_, _>>()?,
            envp: env.iter().map(|(k, v)| c(format!("{k}={v}").into_bytes())).collect::<Result<_, _>>()?,
            cwd: {
                c(cwd.as_os_str().as_bytes().to_vec())?;
                cwd
            },
        })
    }

    /// The `PATH` the command is looked up in.
    pub fn path_env(&self) -> Option<String> {
        self.envp.iter().find_map(|e| e.to_str().ok()?.strip_prefix("PATH=").map(str::to_owned))
    }

    /// The bytes init reads.
    pub fn encode(&self) -> Vec<u8> {
        let bits = self.pty.map_or(0u8, |p| 8 | u8::from(p.stdin) | u8::from(p.stdout) << 1 | u8::from(p.stderr) << 2);
        let mut b = vec![bits];
        b.extend_from_slice(&(self.argv.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.envp.len() as u32).to_le_bytes());
        for s in self.argv.iter().chain(&self.envp) {
            b.extend_from_slice(s.as_bytes_with_nul());
        }
        b.extend_from_slice(self.cwd.as_os_str().as_bytes());
        b.push(0);
        b
    }

    /// The request from its bytes; `None` for bytes that are none.
    pub fn decode(b: &[u8]) -> Option<SpawnRequest> {
        let bits = *b.first()?;
        let argc = u32::from_le_bytes(b.get(1..5)?.try_into().ok()?) as usize;
        let envc = u32::from_le_bytes(b.get(5..9)?.try_into().ok()?) as usize;
        let mut parts = b.get(9..)?.split(|&c| c == 0);
        let mut take = |n: usize| -> Option<Vec<CString>> {
            (0..n).map(|_| parts.next().and_then(|p| CString::new(p).ok())).collect()
        };
        if argc == 0 || argc.saturating_add(envc) > b.len() {
            return None;
        }
        let argv = take(argc)?;
        let envp = take(envc)?;
        let cwd = PathBuf::from(OsStr::from_bytes(parts.next()?));
        let pty =
            (bits & 8 != 0).then_some(PtyUse { stdin: bits & 1 != 0, stdout: bits & 2 != 0, stderr: bits & 4 != 0 });
        Some(SpawnRequest { pty, argv, envp, cwd })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_garbage_is_refused() {
        let r = SpawnRequest::new(
            Some(PtyUse { stdin: true, stdout: true, stderr: false }),
            &[OsStr::from_bytes(b"sh\xff").to_owned(), "-c".into(), "".into()],
            &[("PATH".into(), "/bin".into()), ("E".into(), "".into())],
            "/w/\u{1}x".into(),
        )
        .unwrap();
        assert_eq!(SpawnRequest::decode(&r.encode()), Some(r.clone()));
        assert_eq!(r.path_env().as_deref(), Some("/bin"));
        assert!(SpawnRequest::new(None, &["a\0b".into()], &[], "/".into()).is_err());
        assert!(SpawnRequest::new(None, &[], &[], "/".into()).is_err());
        let bytes = r.encode();
        for cut in 0..bytes.len() - 1 {
            let _ = SpawnRequest::decode(&bytes[..cut]);
        }
        assert_eq!(SpawnRequest::decode(&[8, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]), None);
        assert_eq!(SpawnRequest::decode(&[0, 0, 0, 0, 0, 0, 0, 0, 0, b'/', 0]), None, "no command");
    }
}
