//! The terminal: a pty served by the supervisor when stdin is a terminal; no way to push
//! input into the user's terminal (THREATS D-01).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// A pty pair made by the test: the "user's terminal".
struct Pty {
    master: std::fs::File,
    slave: OwnedFd,
}

fn pty(rows: u16, cols: u16) -> Pty {
    let (mut m, mut s) = (0, 0);
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty with valid out-pointers and a winsize.
    let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
    assert_eq!(r, 0);
    // SAFETY: both descriptors were just returned by openpty and are owned here.
    unsafe { Pty { master: std::fs::File::from_raw_fd(m), slave: OwnedFd::from_raw_fd(s) } }
}

fn stdio(fd: &OwnedFd) -> Stdio {
    Stdio::from(fd.try_clone().unwrap())
}

fn spawn(s: &Sandbox, t: &Pty, stdin_tty: bool, cmd: &[&str]) -> Child {
    let bin = bin_dir();
    let mut args = vec!["run", "--allow-read", &bin, "--"];
    args.extend_from_slice(cmd);
    spawn_args(s, t, stdin_tty, &args)
}

/// `palisade ARGS` on the test's terminal.
fn spawn_args(s: &Sandbox, t: &Pty, stdin_tty: bool, args: &[&str]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_palisade"));
    c.args(args)
        .current_dir(s.ws())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", s.home())
        .env("TERM", "xterm")
        .stdout(stdio(&t.slave))
        .stderr(stdio(&t.slave));
    c.stdin(if stdin_tty { stdio(&t.slave) } else { Stdio::null() });
    c.spawn().unwrap()
}

/// Reads from the master until `want` appears or the deadline passes.
fn read_until(master: &mut std::fs::File, want: &str, secs: u64) -> String {
    let fd = master.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK) };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !String::from_utf8_lossy(&out).contains(want) {
        match master.read(&mut buf) {
            Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn wait_timeout(child: &mut Child, secs: u64) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_terminal_gets_its_own_pty_with_the_window_size() {
    let s = Sandbox::new("tty-size");
    let mut t = pty(33, 77);
    let mut child = spawn(&s, &t, true, &["/bin/sh", "-c", "tty; stty size; echo END"]);
    let out = read_until(&mut t.master, "END", 10);
    assert_eq!(wait_timeout(&mut child, 10), Some(0), "{out}");
    assert!(out.contains("/dev/pts/"), "no pty inside: {out}");
    assert!(out.contains("33 77"), "window size not passed: {out}");
}

#[test]
fn interactive_input_reaches_the_command() {
    let s = Sandbox::new("tty-input");
    let mut t = pty(24, 80);
    let mut child = spawn(&s, &t, true, &["/bin/sh", "-c", "echo READY; read line; echo got:$line"]);
    read_until(&mut t.master, "READY", 10);
    t.master.write_all(b"hello sandbox\r").unwrap();
    let out = read_until(&mut t.master, "got:hello sandbox", 10);
    assert_eq!(wait_timeout(&mut child, 10), Some(0), "{out}");
    assert!(out.contains("got:hello sandbox"), "{out}");
}

#[test]
fn ctrl_c_interrupts_the_command() {
    let s = Sandbox::new("tty-ctrlc");
    let mut t = pty(24, 80);
    let mut child = spawn(&s, &t, true, &["/bin/sh", "-c", "echo READY; exec sleep 30"]);
    read_until(&mut t.master, "READY", 10);
    std::thread::sleep(Duration::from_millis(100));
    t.master.write_all(b"\x03").unwrap();
    assert_eq!(wait_timeout(&mut child, 10), Some(130), "Ctrl-C did not interrupt the command");
}

#[test]
fn tiocsti_cannot_push_input_into_the_users_terminal() {
    let s = Sandbox::new("d01-tiocsti");
    let mut t = pty(24, 80);
    // stdout is the user's terminal, stdin is not: no pty in between.
    let mut child = spawn(&s, &t, false, &[probe_bin(), "tiocsti", "1"]);
    let out = read_until(&mut t.master, "\n", 10);
    assert_eq!(wait_timeout(&mut child, 10), Some(0));
    assert!(out.contains("EPERM"), "TIOCSTI was not refused: {out}");
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD on the terminal's slave side reports queued input.
    unsafe { libc::ioctl(t.slave.as_raw_fd(), libc::FIONREAD, &mut pending) };
    assert_eq!(pending, 0, "input was injected into the user's terminal");
    let mut child = spawn(&s, &t, false, &[probe_bin(), "tioclinux", "1"]);
    let out = read_until(&mut t.master, "\n", 10);
    assert_eq!(wait_timeout(&mut child, 10), Some(0));
    assert!(out.contains("EPERM"), "TIOCLINUX was not refused: {out}");
}

#[test]
fn tiocsti_inside_the_sandbox_pty_is_refused_too() {
    let s = Sandbox::new("d01-tiocsti-pty");
    let mut t = pty(24, 80);
    let mut child = spawn(&s, &t, true, &[probe_bin(), "tiocsti", "0"]);
    let out = read_until(&mut t.master, "\n", 10);
    assert_eq!(wait_timeout(&mut child, 10), Some(0));
    assert!(out.contains("EPERM"), "{out}");
}

#[test]
fn a_warm_sessions_command_gets_a_pty_of_its_own_input_and_ctrl_c() {
    let s = Sandbox::new("tty-session");
    let bin = bin_dir();
    let me = std::process::id().to_string();
    let o = s.palisade(&["session", "start", "--name", "tty", "--owner", &me, "--allow-read", &bin]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut t = pty(33, 77);
    let run = |t: &Pty, cmd: &[&str], stdin_tty: bool| {
        let mut args = vec!["run", "--session", "tty", "--"];
        args.extend_from_slice(cmd);
        spawn_args(&s, t, stdin_tty, &args)
    };
    let mut child = run(&t, &["/bin/sh", "-c", "tty; stty size; echo READY; read line; echo got:$line"], true);
    let out = read_until(&mut t.master, "READY", 10);
    assert!(out.contains("/dev/pts/") && out.contains("33 77"), "no pty of its own, or no window size: {out}");
    t.master.write_all(b"hello session\r").unwrap();
    let out = read_until(&mut t.master, "got:hello session", 10);
    assert_eq!(wait_timeout(&mut child, 10), Some(0), "{out}");

    let mut child = run(&t, &["/bin/sh", "-c", "echo READY; exec sleep 30"], true);
    read_until(&mut t.master, "READY", 10);
    std::thread::sleep(Duration::from_millis(100));
    t.master.write_all(b"\x03").unwrap();
    assert_eq!(wait_timeout(&mut child, 10), Some(130), "Ctrl-C did not interrupt the command");

    // stdout the user's terminal, stdin not: the terminal itself is passed, and TIOCSTI on it
    // is refused as in a cold run.
    let mut child = run(&t, &[probe_bin(), "tiocsti", "1"], false);
    let out = read_until(&mut t.master, "\n", 10);
    assert_eq!(wait_timeout(&mut child, 10), Some(0));
    assert!(out.contains("EPERM"), "TIOCSTI was not refused: {out}");
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD on the terminal's slave side reports queued input.
    unsafe { libc::ioctl(t.slave.as_raw_fd(), libc::FIONREAD, &mut pending) };
    assert_eq!(pending, 0, "input was injected into the user's terminal");
    let o = s.palisade(&["session", "stop", "tty"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
