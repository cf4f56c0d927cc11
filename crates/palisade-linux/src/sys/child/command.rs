//! The command's process, forked from init: a new session, stdio only, `no_new_privs`,
//! Landlock, no capabilities, seccomp last, then `execve` (or a report of why not).

use super::init::forwarded_signals;
use super::*;

/// The command's process: from here to `execve`, restrictions only tighten.
pub fn command_main(a: &CommandArgs<'_>, slave: Option<RawFd>) -> ! {
    let sock = a.sock;
    // SAFETY: resetting the signal mask and dispositions inherited from init.
    unsafe {
        for s in forwarded_signals() {
            libc::signal(s, libc::SIG_DFL);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::setsid();
    }
    if let (Some(s), Some(p)) = (slave, a.pty) {
        // SAFETY: TIOCSCTTY on the pty slave we own, then dup2 onto stdio.
        unsafe {
            libc::ioctl(s, libc::TIOCSCTTY, 0);
            if p.stdin {
                libc::dup2(s, 0);
            }
            if p.stdout {
                libc::dup2(s, 1);
            }
            if p.stderr {
                libc::dup2(s, 2);
            }
        }
    }
    // The control socket becomes fd 3 (close-on-exec); everything else above 2 closes.
    // SAFETY: dup3 onto fd 3 with O_CLOEXEC.
    let r = unsafe { libc::dup3(sock, 3, libc::O_CLOEXEC) };
    let sock = if sock == 3 || r == 3 { 3 } else { die(sock, "moving the control socket") };
    close_other_fds(&[3]);

    if let Err(e) = std::env::set_current_dir(a.cwd) {
        die(sock, &format!("entering {}: {e}", a.cwd.display()));
    }
    let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid rlimit struct.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    for &(resource, value) in &a.rlimits {
        let (cur, max) = if resource == libc::RLIMIT_CPU {
            // SIGXCPU at the limit, SIGKILL a second later.
            (value, value.saturating_add(1))
        } else {
            (value, value)
        };
        let l = libc::rlimit { rlim_cur: cur, rlim_max: max };
        // SAFETY: valid rlimit struct. Lowering a limit never needs a privilege.
        if unsafe { libc::setrlimit(resource, &l) } != 0 {
            die(sock, &format!("setting resource limit {resource}: {}", std::io::Error::last_os_error()));
        }
    }
    // SAFETY: prctl with documented arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        die(sock, &format!("no_new_privs: {}", std::io::Error::last_os_error()));
    }
    if let Err(e) = landlock::restrict(a.landlock) {
        die(sock, &e);
    }
    if let Err(e) = super::super::caps::drop_all() {
        die(sock, &format!("dropping capabilities: {e}"));
    }
    if a.trace_exec {
        // Init made itself non-dumpable and this process inherited that until `execve`; the
        // tracer, unprivileged, could not then read this first exec's arguments. Nothing else
        // runs in the sandbox yet, and the memory is about to be replaced.
        // SAFETY: prctl with documented arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    }
    match super::super::exectrace::install(a.filter, a.trace_exec) {
        Ok(Some(listener)) => {
            if let Err(e) = control::send(sock, &Msg::ExecTracer, &[listener.as_raw_fd()]) {
                die(sock, &format!("passing the exec tracer out: {e}"));
            }
        }
        Ok(None) => {}
        Err(e) => die(sock, &format!("installing the seccomp filter: {e}")),
    }
    exec(sock, a)
}

fn exec(sock: RawFd, a: &CommandArgs<'_>) -> ! {
    let mut argv: Vec<*const libc::c_char> = a.argv.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = a.envp.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let name = a.argv[0].to_bytes();
    let try_exec = |path: &CString| -> i32 {
        // SAFETY: null-terminated arrays of valid C strings that outlive the call.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
    };
    let shown = String::from_utf8_lossy(name).into_owned();
    if name.contains(&b'/') {
        let e = try_exec(&a.argv[0]);
        fail_exec(sock, &shown, e, e == libc::ENOENT);
    }
    let path = a.path_env.clone().unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut denied = None;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let Ok(full) =
            CString::new(Path::new(dir).join(std::ffi::OsStr::new(&*shown)).into_os_string().into_encoded_bytes())
        else {
            continue;
        };
        // Only a file that exists is tried, so a traced run records one exec, not one
        // attempt per directory of PATH.
        if !Path::new(std::ffi::OsStr::from_bytes(full.as_bytes())).is_file() {
            continue;
        }
        match try_exec(&full) {
            libc::ENOENT | libc::ENOTDIR => continue,
            libc::EACCES => denied = Some(libc::EACCES),
            e => fail_exec(sock, &shown, e, false),
        }
    }
    match denied {
        Some(e) => fail_exec(sock, &shown, e, false),
        None => fail_exec(sock, &shown, libc::ENOENT, true),
    }
}

fn fail_exec(sock: RawFd, name: &str, errno: i32, not_found: bool) -> ! {
    let err = std::io::Error::from_raw_os_error(errno);
    if not_found {
        report(sock, ErrorKind::NotFound, &format!("{name}: command not found in the sandbox ({err})"));
        // SAFETY: see `die`.
        unsafe { libc::_exit(127) }
    }
    report(sock, ErrorKind::CannotExecute, &format!("{name}: cannot execute: {err}"));
    // SAFETY: see `die`.
    unsafe { libc::_exit(126) }
}
