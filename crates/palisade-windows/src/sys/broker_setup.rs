//! The broker as a Windows service (Mullvad's `windows-service` crate for the service
//! control manager), and `palisade setup`, the one step that needs an administrator:
//! install it (or reinstall it, idempotently), or remove it and everything it made.
//!
//! The service runs a copy of `palisade.exe` in `%ProgramFiles%\Palisade`, a folder only
//! administrators can change, as LocalSystem (adding WFP filters and exemptions needs it),
//! restarted by the service control manager when it fails (its start removes the exemptions
//! a dead instance left). `setup` records the copy's path and SHA-256 under the service's
//! registry key (never in `%ProgramData%`, where any user can create files first);
//! `--remove` stops the service, removes every exemption it recorded, deletes the service
//! (and its key) and the copy at its fixed path.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept, ServiceErrorControl,
    ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod, ServiceInfo, ServiceStartType, ServiceState,
    ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

/// The service's name.
pub const SERVICE_NAME: &str = "PalisadeBroker";

/// The argument the service control manager starts `palisade.exe` with.
pub const SERVICE_ARGUMENT: &str = "broker-service";

static STOP: AtomicBool = AtomicBool::new(false);
/// Set when `serve` has returned.
static SERVED: AtomicBool = AtomicBool::new(false);

define_windows_service!(ffi_service_main, service_main);

/// Runs as the service (called by `palisade broker-service`, which only the service control
/// manager starts).
///
/// # Errors
/// Not started by the service control manager.
pub fn run_service() -> Result<(), String> {
    service_dispatcher::start(SERVICE_NAME, ffi_service_main)
        .map_err(|e| format!("{SERVICE_ARGUMENT} runs only as the {SERVICE_NAME} service: {e}"))
}

fn service_main(_: Vec<OsString>) {
    let handler = service_control_handler::register(SERVICE_NAME, |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            STOP.store(true, Ordering::SeqCst);
            // Woken until it has returned: one connection can find every instance busy.
            let _ = std::thread::Builder::new().name("palisade-broker-stop".into()).spawn(|| {
                let until = Instant::now() + Duration::from_secs(10);
                while !SERVED.load(Ordering::SeqCst) && Instant::now() < until {
                    super::broker_service::wake();
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    });
    let Ok(handle) = handler else { return };
    let status = |state, code| ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: ServiceExitCode::Win32(code),
        checkpoint: 0,
        wait_hint: Duration::default(),
        process_id: None,
    };
    let _ = handle.set_service_status(status(ServiceState::Running, 0));
    let code = match super::broker_service::serve(&|| STOP.load(Ordering::SeqCst)) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().map_or(1, |c| c as u32),
    };
    SERVED.store(true, Ordering::SeqCst);
    let _ = handle.set_service_status(status(ServiceState::Stopped, code));
}

fn install_dir() -> PathBuf {
    let pf = std::env::var_os("ProgramW6432")
        .or_else(|| std::env::var_os("ProgramFiles"))
        .map_or_else(|| PathBuf::from(r"C:\Program Files"), PathBuf::from);
    pf.join("Palisade")
}

/// Installs (or reinstalls: a previous install is removed first, the copy cannot be replaced
/// while it runs) the broker service from `exe` (this `palisade.exe`) and starts it. Returns
/// what was done, in lines.
///
/// # Errors
/// Not an administrator (the service manager refuses), the copy or the service fails, with
/// the step.
pub fn install(exe: &Path) -> Result<Vec<String>, String> {
    let mut said = remove()?;
    let dir = install_dir();
    let target = dir.join("palisade.exe");
    std::fs::create_dir_all(&dir).map_err(|e| format!("making {}: {e}", dir.display()))?;
    std::fs::copy(exe, &target).map_err(|e| format!("copying {} to {}: {e}", exe.display(), target.display()))?;
    let bytes = std::fs::read(&target).map_err(|e| format!("reading {}: {e}", target.display()))?;
    let hash: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    said.push(format!("copied palisade.exe to {} (SHA-256 {hash})", target.display()));
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .map_err(|e| format!("opening the service control manager (run as an administrator): {e}"))?;
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: "Palisade network broker".into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: target.clone(),
        launch_arguments: vec![SERVICE_ARGUMENT.into()],
        dependencies: vec![],
        account_name: None,
        account_password: None,
    };
    let service = manager
        .create_service(&info, ServiceAccess::CHANGE_CONFIG | ServiceAccess::START)
        .map_err(|e| format!("creating the {SERVICE_NAME} service: {e}"))?;
    // Every step after the creation, or none: a half-configured broker (one that would not
    // be restarted, say) is removed again.
    let configured = (|| -> Result<(), String> {
        let _ = service.set_description(
            "Adds the Windows Filtering Platform filters that confine a Palisade run's network to its gateway",
        );
        // Restarted when it fails, also when it stops with an error (not only when it
        // crashes): its start removes what a dead instance left.
        let restart = ServiceAction { action_type: ServiceActionType::Restart, delay: Duration::from_secs(1) };
        service
            .update_failure_actions(ServiceFailureActions {
                reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
                reboot_msg: None,
                command: None,
                actions: Some(vec![restart.clone(), restart.clone(), restart]),
            })
            .and_then(|()| service.set_failure_actions_on_non_crash_failures(true))
            .map_err(|e| format!("setting the {SERVICE_NAME} service's restart on failure: {e}"))?;
        super::registry::write_text("Binary", &target.to_string_lossy())
            .and_then(|()| super::registry::write_text("BinarySha256", &hash))
            .map_err(|e| format!("recording the install: {e}"))?;
        service.start::<&str>(&[]).map_err(|e| format!("starting the {SERVICE_NAME} service: {e}"))
    })();
    if let Err(e) = configured {
        drop(service);
        let undone = remove().map_or_else(
            |r| format!("; removing it again failed too: {r}"),
            |_| "; nothing was left installed".to_owned(),
        );
        return Err(format!("{e}{undone}"));
    }
    said.push(format!("installed and started the {SERVICE_NAME} service (restarted when it fails)"));
    Ok(said)
}

/// Stops the service, removes every loopback exemption it recorded, deletes the service
/// (its registry key goes with it) and the copy at its fixed path. Returns what was done;
/// nothing when nothing is installed. Idempotent.
///
/// # Errors
/// Not an administrator, or a step fails, with the step.
pub fn remove() -> Result<Vec<String>, String> {
    let mut said = Vec::new();
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| format!("opening the service control manager (run as an administrator): {e}"))?;
    if let Ok(service) =
        manager.open_service(SERVICE_NAME, ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE)
    {
        let _ = service.stop();
        let until = Instant::now() + Duration::from_secs(20);
        while service.query_status().is_ok_and(|s| s.current_state != ServiceState::Stopped) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
        // What a dead or stopped instance left (the service's stop removes them too).
        let left = super::broker_service::undo_recorded_exemptions();
        if !left.is_empty() {
            return Err(format!(
                "the loopback exemptions of {} could not be removed; the service is kept so that its record stays: run `palisade setup --remove` again",
                left.join(", ")
            ));
        }
        service.delete().map_err(|e| format!("deleting the {SERVICE_NAME} service: {e}"))?;
        said.push(format!("stopped and deleted the {SERVICE_NAME} service and its record"));
    }
    let target = install_dir().join("palisade.exe");
    if target.exists() {
        std::fs::remove_file(&target).map_err(|e| format!("deleting {}: {e}", target.display()))?;
        said.push(format!("deleted {}", target.display()));
    }
    let _ = std::fs::remove_dir(install_dir());
    Ok(said)
}
