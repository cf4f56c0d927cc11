//! The Linux backend of the portable run contract ([`palisade_sandbox::Backend`]).

use std::path::PathBuf;

use palisade_policy::ResolvedPolicy;
use palisade_policy::hostfs::HostFs;
use palisade_sandbox::view::{FsView, ViewError};
use palisade_sandbox::{Backend, Enforcement, Exit, Mechanism, Probe, Refusal, Request, RunError, Strength, Wiring};

use crate::plan::{self, Plan};
use crate::{cgroup, kaudit, probe};

/// Linux: namespaces, a fresh root built by mounts, Landlock, seccomp, an init process, a
/// cgroup when memory or pids are limited; degraded (`--allow-degraded`): Landlock and
/// seccomp over the host's own file system.
#[derive(Debug)]
pub struct Linux {
    /// The placeholder registry (see [`crate::placeholders`]): a directory the sandbox must
    /// not be able to write (`$XDG_STATE_HOME/palisade/placeholders`).
    registry: PathBuf,
    /// Chosen by [`Backend::prepare`] for the next spawn.
    cgroup: Option<cgroup::Layout>,
    denials: Option<std::os::fd::OwnedFd>,
    abi: i32,
}

impl Linux {
    /// A backend whose runs record their placeholders under `registry`.
    pub fn new(registry: PathBuf) -> Linux {
        Linux { registry, cgroup: None, denials: None, abi: 0 }
    }
}

impl Linux {
    /// The portable form of the kernel's report (`palisade check` prints both: this, and
    /// the Linux-only facts of the report).
    pub fn probe_of(r: &probe::Report) -> Probe {
        let m = |name: &str, f: &probe::Feature| Mechanism {
            name: name.into(),
            available: f.available,
            detail: f.detail.clone(),
        };
        Probe {
            platform: format!("linux {}", r.kernel),
            required: vec![
                m("user namespaces", &r.user_namespaces),
                m("Landlock", &r.landlock),
                m("seccomp", &r.seccomp),
            ],
            facts: vec![
                ("cgroups".into(), r.cgroups.clone()),
                ("limits".into(), r.limits.clone()),
                ("denials".into(), format!("Landlock's, from the kernel's audit log: {}", r.denials)),
            ],
        }
    }
}

impl Backend for Linux {
    type Plan = Plan;

    fn probe(&self) -> Probe {
        Linux::probe_of(&probe::probe())
    }

    fn preflight(&self) -> Result<(), Refusal> {
        // Landlock is needed at every strength (the degraded mode rests on it alone).
        if probe::landlock_abi_now() < probe::LANDLOCK_MINIMUM_ABI {
            let report = probe::probe();
            return Err(Refusal::new(
                format!("cannot enforce the policy: Landlock: {}", report.landlock.detail),
                Some("`palisade check` shows what this machine can enforce"),
            ));
        }
        Ok(())
    }

    fn plan(
        &self,
        policy: &ResolvedPolicy,
        host: &dyn HostFs,
        req: Request,
        strength: Strength,
    ) -> Result<Plan, ViewError> {
        plan::build(policy, host, req, strength)
    }

    fn view(plan: &Plan) -> &FsView {
        &plan.view
    }

    fn prepare(&mut self, plan: &Plan) -> Result<Enforcement, Refusal> {
        // The registry is where the supervisor removes files after a run: a sandbox that
        // could write there could have Palisade remove files of its choosing.
        let canonical =
            palisade_policy::PathResolver::resolve(&palisade_policy::load::FsResolver::default(), &self.registry);
        // A degraded run makes no placeholders, but the registry is what later runs trust.
        let degraded = matches!(plan.mode, plan::Mode::Degraded { .. });
        if plan.exposes_writable(&canonical) || plan.exposes_writable(&canonical.join("run-0")) {
            let hint = if degraded {
                "without namespaces the built-in deny of $XDG_STATE_HOME/palisade cannot hide it: set XDG_STATE_HOME to a directory outside every write grant"
            } else {
                "keep $XDG_STATE_HOME/palisade out of every write grant (the built-in policy denies it)"
            };
            return Err(Refusal::new(
                format!("the placeholder registry {} would be writable inside the sandbox", self.registry.display()),
                Some(hint),
            ));
        }
        self.abi = probe::landlock_abi_now();
        self.cgroup = if degraded { None } else { crate::cgroup_layout(&plan.limits) };
        // Subscribed before the sandbox exists, so that no denial is missed.
        let denials = match kaudit::open() {
            Ok(fd) => {
                self.denials = Some(fd);
                "recorded".to_owned()
            }
            Err(why) => why,
        };
        Ok(Enforcement {
            mode: if degraded { "degraded" } else { "namespaces" }.into(),
            landlock_abi: self.abi,
            missing: plan.missing().to_vec(),
            limits: self.cgroup.as_ref().map_or("rlimits", |l| l.label()).into(),
            denials,
        })
    }

    fn spawn(&mut self, plan: &Plan, wiring: Wiring) -> Result<Exit, RunError> {
        let kill = crate::KillSwitch::new()
            .map_err(|e| RunError::Step { step: "creating the monitor's kill switch".into(), source: e.into() })?;
        let armed = kill.clone();
        wiring.kill.arm(Box::new(move || armed.trigger()));
        let gateway = wiring.gateway.map(|serve| -> crate::Gateway {
            Box::new(move |s: crate::GatewaySockets| {
                serve(palisade_gateway::server::Listeners {
                    http: Some(s.http.into()),
                    socks: Some(s.socks.into()),
                    dns_udp: Some(s.dns_udp.into()),
                    dns_tcp: Some(s.dns_tcp.into()),
                    transparent: s.transparent.into_iter().map(Into::into).collect(),
                })
            })
        });
        let opts = crate::RunOptions {
            pty: wiring.pty,
            gateway,
            kill: Some(kill),
            events: Some(wiring.events),
            publish: wiring.publish,
            on_started: Some(wiring.on_started),
            on_ended: Some(wiring.on_ended),
            denials: self.denials.take(),
            cgroup: self.cgroup.take(),
            placeholders: Some(self.registry.clone()),
            serve: wiring.serve,
        };
        crate::run(plan, opts)
    }

    fn hint(&self, error: &RunError) -> Option<String> {
        error.to_string().contains("Permission denied").then(|| {
            "the sandbox's user namespace holds only your own user id: a path of another user that root reaches \
             through its capabilities, or a directory closed to your user, cannot be shown inside; grant paths \
             your user can read"
                .to_owned()
        })
    }

    fn move_aside(
        suspect: palisade_sandbox::quarantine::Suspect<'_>,
        since: (i64, i64),
    ) -> std::io::Result<Vec<palisade_sandbox::quarantine::Moved>> {
        crate::quarantine::quarantine(suspect, since)
    }
}
