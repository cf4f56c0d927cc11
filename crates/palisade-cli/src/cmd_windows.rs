//! `palisade forget WORKSPACE` and `palisade repair` (Windows): what Palisade changed on the
//! host, undone from its journal (`%LOCALAPPDATA%\palisade\journal.jsonl`); `palisade setup`
//! and the broker service's entry point.

use std::path::Path;

use crate::{Failure, Outcome};

fn backend() -> Result<palisade_windows::Windows, Failure> {
    let env = palisade_policy::load::Environment::from_process()
        .map_err(|e| Failure { message: e.to_string(), hint: None })?;
    Ok(palisade_windows::Windows::new(env.state_home.join("palisade")))
}

fn report(undone: &palisade_windows::journal::Undone) {
    for e in &undone.revoked {
        println!("revoked: {} {} {:#x} for {}", e.path, e.kind, e.mask, e.sid);
    }
    for p in &undone.removed {
        println!("removed: {p}");
    }
    if undone.revoked.is_empty() && undone.removed.is_empty() {
        println!("nothing to undo");
    }
}

pub fn forget(workspace: &Path) -> Outcome {
    let ws = std::path::absolute(workspace)
        .map_err(|e| Failure { message: format!("{}: {e}", workspace.display()), hint: None })?;
    let undone = backend()?.forget(&ws).map_err(|m| Failure { message: m, hint: None })?;
    report(&undone);
    Ok(0)
}

pub fn repair() -> Outcome {
    let undone = backend()?.repair().map_err(|m| Failure { message: m, hint: None })?;
    report(&undone);
    Ok(0)
}

pub fn setup(remove: bool) -> Outcome {
    let hint = Some("run it from a terminal opened as an administrator".to_owned());
    let said = if remove {
        palisade_windows::remove_broker()
    } else {
        let exe = std::env::current_exe()
            .map_err(|e| Failure { message: format!("finding palisade.exe: {e}"), hint: None })?;
        palisade_windows::install_broker(&exe)
    }
    .map_err(|m| Failure { message: m, hint: hint.clone() })?;
    for line in &said {
        println!("{line}");
    }
    if said.is_empty() {
        println!("nothing was installed");
    }
    Ok(0)
}

pub fn broker_service() -> Outcome {
    palisade_windows::run_broker_service().map_err(|m| Failure { message: m, hint: None })?;
    Ok(0)
}
