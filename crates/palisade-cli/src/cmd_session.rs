//! `palisade session start|stop|list` and `run --session`: warm sessions (see
//! [`palisade_sandbox::warm`]). `session start` starts the session's own process (`session
//! serve`, in a process group of its own, its output in `NAME.log` beside its socket), waits
//! until it can take commands or has failed, and prints its name.

use std::ffi::OsString;

use crate::cli::{SessionCommand, SessionStartArgs};
use crate::{Failure, Outcome};

pub fn run(cmd: SessionCommand) -> Outcome {
    match cmd {
        SessionCommand::Start(args) => imp::start(args),
        SessionCommand::Stop { name } => imp::stop(&name),
        SessionCommand::List => imp::list(),
        SessionCommand::Serve(args) => imp::serve(args),
    }
}

/// `run --session NAME -- CMD`.
pub fn run_in(name: &str, argv: Vec<OsString>) -> Outcome {
    imp::run_in(name, argv)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::ffi::OsString;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    use palisade_policy::load::Environment;
    use palisade_sandbox::warm;

    use super::*;
    use crate::cmd_policy::load_policy_on;

    fn env() -> Result<Environment, Failure> {
        Ok(Environment::from_process()?)
    }

    fn name_failure(e: String) -> Failure {
        Failure { message: e, hint: None }
    }

    pub fn run_in(name: &str, argv: Vec<OsString>) -> Outcome {
        let env = env()?;
        palisade_linux::attach::attach(&env.state_home, name, argv, &env.cwd)
            .map_err(|message| Failure { message, hint: None })
    }

    pub fn start(args: SessionStartArgs) -> Outcome {
        let env = env()?;
        let name = args.name.clone().unwrap_or_else(warm::fresh_name);
        warm::check_name(&name).map_err(name_failure)?;
        let dir = warm::sockets_dir(&env.state_home);
        if warm::client::connect(&env.state_home, &name).is_ok() {
            return Err(Failure {
                message: format!("a session named {name:?} is already running"),
                hint: Some("choose another --name, or `palisade session stop` it first".into()),
            });
        }
        make_private_dir(&dir)?;
        let owner = args.owner.unwrap_or_else(std::os::unix::process::parent_id);
        let Some(owner_start) = palisade_linux::owner::start_time(owner) else {
            return Err(Failure { message: format!("--owner {owner}: no such process"), hint: None });
        };
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Failure { message: format!("creating {}: {e}", log_path.display()), hint: None })?;
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("session").arg("serve").arg("--name").arg(&name);
        cmd.arg("--owner").arg(owner.to_string()).arg("--owner-start").arg(owner_start.to_string());
        if let Some(a) = &args.audit {
            cmd.arg("--audit").arg(env.cwd.join(a));
        }
        if args.no_exec_trace {
            cmd.arg("--no-exec-trace");
        }
        cmd.args(policy_args(&args.policy));
        cmd.current_dir(&env.cwd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log).process_group(0);
        let mut child =
            cmd.spawn().map_err(|e| Failure { message: format!("starting the session: {e}"), hint: None })?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        if line.trim() == name {
            println!("{name}");
            return Ok(0);
        }
        let status = child.wait().ok().and_then(|s| s.code()).unwrap_or(125);
        let said = std::fs::read_to_string(&log_path).unwrap_or_default();
        let _ = std::fs::remove_file(&log_path);
        eprint!("{said}");
        Ok(u8::try_from(status).unwrap_or(125).max(1))
    }

    /// Makes the sockets' directory, mode 0700, and refuses one another user could enter.
    fn make_private_dir(dir: &Path) -> Result<(), Failure> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let failure = |e: std::io::Error| Failure { message: format!("making {}: {e}", dir.display()), hint: None };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(failure)?;
        let meta = std::fs::symlink_metadata(dir).map_err(failure)?;
        if !meta.is_dir() || meta.uid() != own_uid() || meta.permissions().mode() & 0o077 != 0 {
            return Err(Failure {
                message: format!("{} must be a directory of yours that only you can enter (mode 0700)", dir.display()),
                hint: Some(format!("chmod 700 {}", dir.display())),
            });
        }
        Ok(())
    }

    /// This process's uid, as the kernel shows it (`/proc/self` is owned by it).
    fn own_uid() -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX)
    }

    /// The policy options again, for the session's own process.
    fn policy_args(p: &crate::cli::PolicyArgs) -> Vec<OsString> {
        let mut v: Vec<OsString> = Vec::new();
        let mut one = |flag: &str, value: Option<OsString>| {
            if let Some(value) = value {
                v.push(flag.into());
                v.push(value);
            }
        };
        one("--workspace", p.workspace.clone().map(Into::into));
        one("--profile", p.profile.clone().map(Into::into));
        for (k, value) in p.limits() {
            one(&format!("--{}", k.replace('_', "-")), Some(value.into()));
        }
        one("--net", p.net.clone().map(Into::into));
        let many: [(&str, Vec<OsString>); 9] = [
            ("--policy", p.policy_files.iter().map(Into::into).collect()),
            ("--allow-read", p.allow_read.iter().map(Into::into).collect()),
            ("--allow-write", p.allow_write.iter().map(Into::into).collect()),
            ("--deny", p.deny.iter().map(Into::into).collect()),
            ("--protect", p.protect.iter().map(Into::into).collect()),
            ("--allow-net", p.allow_net.iter().map(Into::into).collect()),
            ("--deny-net", p.deny_net.iter().map(Into::into).collect()),
            ("--publish", p.publish.iter().map(Into::into).collect()),
            ("--env", p.env.iter().map(Into::into).collect()),
        ];
        for (flag, values) in many {
            for value in values {
                v.push(flag.into());
                v.push(value);
            }
        }
        if p.trust_project {
            v.push("--trust-project".into());
        }
        v
    }

    /// The session's own process: binds its socket, runs the session, removes the socket.
    pub fn serve(args: SessionStartArgs) -> Outcome {
        let host = palisade_policy::load::FsResolver::default();
        let (env, policy) = load_policy_on(&args.policy, &host)?;
        let name = args.name.clone().unwrap_or_else(warm::fresh_name);
        warm::check_name(&name).map_err(name_failure)?;
        make_private_dir(&warm::sockets_dir(&env.state_home))?;
        let socket = warm::socket_path(&env.state_home, &name);
        if warm::client::connect(&env.state_home, &name).is_ok() {
            return Err(Failure { message: format!("a session named {name:?} is already running"), hint: None });
        }
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket)
            .map_err(|e| Failure { message: format!("binding {}: {e}", socket.display()), hint: None })?;
        let _remove = RemoveOnDrop(vec![socket.clone(), socket.with_extension("log")]);
        let announce = name.clone();
        let owner_gone = match (args.owner, args.owner_start) {
            (Some(pid), Some(start)) => Some(Box::new(move || palisade_linux::owner::wait_gone(pid, start)) as _),
            _ => None,
        };
        let session = palisade_sandbox::SessionSpec {
            name,
            listener,
            socket,
            on_ready: Box::new(move || {
                use std::io::Write;
                let mut out = std::io::stdout();
                let _ = writeln!(out, "{announce}");
                let _ = out.flush();
            }),
            owner_gone,
        };
        let mut backend = crate::cmd_run::backend(&env)?;
        let spec = palisade_sandbox::RunSpec {
            argv: Vec::new(),
            audit: args.audit,
            trace_exec: !args.no_exec_trace,
            quiet: true,
            session: Some(session),
            ..Default::default()
        };
        palisade_sandbox::run(&mut backend, spec, &env, &policy, &host)
            .map_err(|r| Failure { message: r.message, hint: r.hint })
    }

    /// Removes the session's socket and log when its process ends.
    struct RemoveOnDrop(Vec<PathBuf>);

    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    pub fn stop(name: &str) -> Outcome {
        let env = env()?;
        warm::client::stop(&env.state_home, name).map_err(name_failure)?;
        // Back once the session has ended and closed its audit log (its socket is removed
        // last), at most 10 s.
        let socket = warm::socket_path(&env.state_home, name);
        for _ in 0..1000 {
            if !socket.exists() {
                return Ok(0);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(Failure { message: format!("session {name:?} was asked to stop but has not ended after 10 s"), hint: None })
    }

    pub fn list() -> Outcome {
        let env = env()?;
        let dir = warm::sockets_dir(&env.state_home);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".sock").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        for n in names.iter().filter(|n| warm::client::connect(&env.state_home, n).is_ok()) {
            println!("{n}");
        }
        Ok(0)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    fn unsupported() -> Outcome {
        Err(Failure {
            message: "warm sessions are not available on this platform yet (Linux only)".into(),
            hint: Some("run each command with `palisade run`".into()),
        })
    }

    pub fn run_in(_: &str, _: Vec<OsString>) -> Outcome {
        unsupported()
    }
    pub fn start(_: SessionStartArgs) -> Outcome {
        unsupported()
    }
    pub fn stop(_: &str) -> Outcome {
        unsupported()
    }
    pub fn list() -> Outcome {
        unsupported()
    }
    pub fn serve(_: SessionStartArgs) -> Outcome {
        unsupported()
    }
}
