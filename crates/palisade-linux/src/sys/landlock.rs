//! The Landlock layer: an inode-based allowlist over the same view the mounts built, so a
//! mistake in the mount layer does not open the host. Applied in the command's process,
//! after `pivot_root`, before `execve`.

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, RestrictionStatus,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

use crate::plan::LandlockPlan;

/// The newest ABI Palisade asks for; older kernels get what they support, reported.
pub const TARGET_ABI: ABI = ABI::V7;

/// The oldest ABI `run` accepts without `--allow-degraded`: truncation control (v3).
pub const MINIMUM_ABI: i32 = 3;

/// Restricts the calling thread (and what it executes) to the plan.
pub fn restrict(plan: &LandlockPlan) -> Result<RestrictionStatus, String> {
    let abi = TARGET_ABI;
    let all = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi);
    let err = |what: &str, e: &dyn std::fmt::Display| format!("landlock: {what}: {e}");
    let mut rules: Vec<(String, BitFlags<AccessFs>)> = Vec::new();
    let path = |p: &std::path::PathBuf| p.to_string_lossy().into_owned();
    rules.extend(plan.read.iter().map(|p| (path(p), read)));
    rules.extend(plan.write.iter().map(|p| (path(p), all)));
    rules.extend(plan.list.iter().map(|p| (path(p), AccessFs::ReadDir.into())));
    rules.extend(plan.proc.iter().map(|p| (path(p), AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::WriteFile)));
    let device = AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::WriteFile | AccessFs::IoctlDev;
    rules.extend(plan.devices.iter().map(|p| (path(p), device)));
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .map_err(|e| err("handled access", &e))?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(|e| err("scopes", &e))?;
    if plan.deny_tcp {
        // Handled with no rule granting any port: every TCP bind and connect is refused.
        ruleset = ruleset.handle_access(AccessNet::from_all(abi)).map_err(|e| err("network access", &e))?;
    }
    let mut rs = ruleset.create().map_err(|e| err("create ruleset", &e))?;
    for (path, access) in rules {
        let fd = PathFd::new(&path).map_err(|e| err(&format!("open {path}"), &e))?;
        rs = rs.add_rule(PathBeneath::new(fd, access)).map_err(|e| err(&format!("rule for {path}"), &e))?;
    }
    let status =
        rs.log_new_exec(true).map_err(|e| err("audit flags", &e))?.restrict_self().map_err(|e| err("restrict", &e))?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err("landlock: the kernel did not enforce the ruleset".into());
    }
    Ok(status)
}

/// The Landlock ABI of the running kernel (0 when Landlock is unavailable).
pub fn kernel_abi() -> i32 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attribute is the documented query.
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
    if v < 0 { 0 } else { v as i32 }
}
