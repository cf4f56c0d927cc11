//! The wall, proved from inside before each run: a probe started exactly as the command will
//! be (the same AppContainer or token, desktop, mitigations), with System32's `cmd.exe` and
//! `curl.exe` (readable by every AppContainer), attempts three things, and the results are
//! read from outside:
//!
//! - **a file outside every grant is unreadable**: a canary with a fresh secret in
//!   Palisade's state folder (`%LOCALAPPDATA%\palisade`, never granted), which the probe
//!   prints to a pipe only the supervisor holds, after a fresh nonce (which proves the probe
//!   ran); the secret must not arrive;
//! - **a granted folder is writable**: the probe writes a file under a fresh name in the
//!   run's private TEMP; it must be there, a plain file (else the grants did not take effect
//!   and nothing would work);
//! - **a loopback port that is not the gateway's is unreachable**: a listener of the
//!   supervisor's own; the probe's `curl.exe` must not reach it, and must end with "could not
//!   connect" or "timed out" (otherwise, or where System32 has no `curl.exe`, the check is
//!   skipped, and the run says so on standard error).
//!
//! Any failure refuses the run, naming what held and what did not. The restricted-token tier
//! confines neither reads nor the network (each run says so): only the write check applies.
//! Cost: two short processes per run.

use std::path::Path;

use super::handle::random_u128;
use super::job::Job;
use super::launch::{Spec, start};
use crate::plan::JobPlan;

/// How the probe is started: as the command will be.
pub struct Probe<'a> {
    /// The AppContainer (`None`: the restricted token, or the plumbing tests).
    pub security: Option<&'a windows_sys::Win32::Security::SECURITY_CAPABILITIES>,
    /// The restricted token, in that tier.
    pub token: Option<windows_sys::Win32::Foundation::HANDLE>,
    /// The run's desktop.
    pub desktop: Option<&'a str>,
    /// The plan's mitigations.
    pub mitigations: u64,
    /// `DESKTOP_APP_BREAKAWAY_DISABLE_PROCESS_TREE`, as the plan asks for the command.
    pub desktop_app_breakaway_disabled: bool,
    /// Whether reads and the network are confined (the AppContainer tier).
    pub confined: bool,
}

/// Runs the probe; `temp` is the run's private TEMP (writable inside), `state` Palisade's
/// state folder (readable by nothing inside), `windows` the Windows folder. Returns what held,
/// in words.
///
/// # Errors
/// What did not hold (the run must not start), or why the probe could not run.
pub fn check(probe: &Probe<'_>, temp: &Path, state: &Path, windows: &str) -> Result<Vec<String>, String> {
    let secret = format!("palisade-wall-{:032x}", random_u128());
    let nonce = format!("palisade-probe-{:032x}", random_u128());
    let canary = state.join(format!("wall-canary-{}.txt", std::process::id()));
    std::fs::write(&canary, &secret)
        .map_err(|e| format!("writing the wall check's canary {}: {e}", canary.display()))?;
    // A name nobody inside can know beforehand: another run of the workspace shares the
    // TEMP folders' grant and could plant a file or link under a fixed name.
    let written = temp.join(format!("wall-{:032x}.txt", random_u128()));
    let text = |p: &Path| p.to_string_lossy().into_owned();
    for p in [&canary, &written] {
        let t = text(p);
        if t.contains('"') || t.contains('%') || t.contains('!') {
            let _ = std::fs::remove_file(&canary);
            return Err(format!("the wall check cannot name {t} to cmd.exe (it holds \", % or !)"));
        }
    }
    let cmd = format!(r"{windows}\System32\cmd.exe");
    // The nonce on standard output proves cmd.exe ran; what `type` prints there is read from
    // outside through a pipe only this process holds.
    let line = format!(
        r#""{cmd}" /d /v:off /s /c "echo {nonce}& type "{}" 2>nul & echo written 1>"{}"""#,
        text(&canary),
        text(&written)
    );
    let first = run(probe, &cmd, &line, temp);
    let _ = std::fs::remove_file(&canary);
    let (_, out) = first?;
    let mut held = Vec::new();
    let mut failed = Vec::new();
    if !out.contains(&nonce) {
        let _ = std::fs::remove_file(&written);
        return Err(format!("the wall check could not run cmd.exe in the sandbox (it printed {:?})", out.trim()));
    }
    if !probe.confined {
        held.push("reads: not confined in this tier (said in missing)".to_owned());
    } else if out.contains(&secret) {
        failed.push(format!("a file outside every grant ({}) was readable from inside", canary.display()));
    } else {
        held.push("a file outside every grant is unreadable".to_owned());
    }
    let plain = std::fs::symlink_metadata(&written).is_ok_and(|m| m.is_file());
    if plain && std::fs::read_to_string(&written).is_ok_and(|c| c.contains("written")) {
        held.push("the run's private TEMP is writable".to_owned());
    } else {
        failed.push(format!(
            "the run's private TEMP ({}) was not writable from inside: the grants did not take effect",
            temp.display()
        ));
    }
    let _ = std::fs::remove_file(&written);

    let curl = format!(r"{windows}\System32\curl.exe");
    if !probe.confined {
        held.push("network: not confined in this tier (said in missing)".to_owned());
    } else if !Path::new(&curl).is_file() {
        held.push(format!("loopback: not checked ({curl} is missing)"));
    } else {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listening for the wall check: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| format!("listening for the wall check: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let line = format!(r#""{curl}" -s --max-time 2 -o NUL http://127.0.0.1:{port}/"#);
        let (code, _) = run(probe, &curl, &line, temp)?;
        if listener.accept().is_ok() {
            failed
                .push(format!("a loopback port that is not the gateway's (127.0.0.1:{port}) was reached from inside"));
        } else if code == 7 || code == 28 {
            // curl's "could not connect" and "timed out": it ran and was refused.
            held.push("a loopback port that is not the gateway's is unreachable".to_owned());
        } else {
            held.push(format!(
                "loopback: not checked (curl.exe ended with {code} in the sandbox, not with a refused connection)"
            ));
        }
    }
    if failed.is_empty() {
        Ok(held)
    } else {
        Err(format!(
            "the sandbox's wall did not hold, checked from inside before the run: {}; (held: {})",
            failed.join("; "),
            held.join("; ")
        ))
    }
}

/// Starts one probe process in a job of its own (kill on close, 10 s at most), waits, and
/// gives its exit code and what it printed (standard output and error, at most 64 KiB).
fn run(probe: &Probe<'_>, application: &str, line: &str, cwd: &Path) -> Result<(u32, String), String> {
    let job = Job::new(&JobPlan {
        active_processes: Some(4),
        ui_restrictions: crate::plan::UI_RESTRICTIONS.iter().map(|(n, _)| *n).collect(),
        ..JobPlan::bare()
    })
    .map_err(|e| format!("making the wall check's job: {e}"))?;
    let launch = crate::cmdline::Launch { application: application.to_owned(), line: line.to_owned() };
    let argv = [application.to_owned()];
    let env: Vec<(String, String)> = ["SystemRoot", "SystemDrive", "ComSpec"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect();
    use std::io::Read;
    use std::os::windows::io::AsRawHandle;
    let nul = std::fs::File::open("NUL").map_err(|e| format!("opening NUL: {e}"))?;
    let (mut reader, writer) = std::io::pipe().map_err(|e| format!("making the wall check's pipe: {e}"))?;
    let raw = |h: std::os::windows::io::RawHandle| h as windows_sys::Win32::Foundation::HANDLE;
    let cwd = cwd.to_string_lossy().into_owned();
    let spec = Spec {
        argv: &argv,
        launch: Some(&launch),
        cwd: &cwd,
        env: &env,
        stdio: [Some(raw(nul.as_raw_handle())), Some(raw(writer.as_raw_handle())), Some(raw(writer.as_raw_handle()))],
        security: probe.security,
        mitigations: probe.mitigations,
        desktop_app_breakaway_disabled: probe.desktop_app_breakaway_disabled,
        desktop: probe.desktop,
        token: probe.token,
    };
    let started = start(&spec, &job).map_err(|e| format!("starting the wall check ({application}): {e}"))?;
    drop(writer);
    // SAFETY: a valid process handle.
    let waited = unsafe { windows_sys::Win32::System::Threading::WaitForSingleObject(started.process.0, 10_000) };
    if waited != windows_sys::Win32::Foundation::WAIT_OBJECT_0 {
        job.terminate(1);
        return Err(format!("the wall check ({application}) did not end within 10 s"));
    }
    // Whatever it left in the job goes, so the pipe's last writer is closed.
    job.terminate(1);
    let mut out = Vec::new();
    let _ = reader.by_ref().take(64 * 1024).read_to_end(&mut out);
    let mut code = 0u32;
    // SAFETY: a valid process handle and an out-pointer.
    unsafe { windows_sys::Win32::System::Threading::GetExitCodeProcess(started.process.0, &mut code) };
    Ok((code, String::from_utf8_lossy(&out).into_owned()))
}
