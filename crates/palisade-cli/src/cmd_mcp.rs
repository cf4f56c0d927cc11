//! `palisade mcp`: the Model Context Protocol server (`palisade-mcp`) for this workspace's
//! policy, recording into a session log of its own.

use crate::cli::McpArgs;
use crate::cmd_policy::load_policy_on;
use crate::{Failure, Outcome};

pub fn run(args: McpArgs) -> Outcome {
    let host = palisade_policy::load::FsResolver::default();
    let (env, policy) = load_policy_on(&args.policy, &host)?;
    // `run_command` starts `palisade run` with the same policy flags as given here.
    let flags: Vec<String> = std::env::args().skip_while(|a| a != "mcp").skip(1).collect();
    let exe = std::env::current_exe()
        .map_err(|e| Failure { message: format!("cannot find palisade itself: {e}"), hint: None })?;
    // The sandbox's `${tmp}` is a private directory inside: its grant never serves the host's.
    let tmp = palisade_policy::PathResolver::resolve(&host, &env.tmp);
    // Never a log the sandbox (a command, or the file tools) could write, as for `run`.
    let req = palisade_sandbox::Request {
        argv: vec!["true".into()],
        cwd: env.cwd.clone(),
        env: Vec::new(),
        tmp: tmp.clone(),
        trace_exec: false,
        copies: None,
        session: false,
    };
    let view = palisade_sandbox::view::build(&policy, &host, &req)
        .map_err(|e| Failure { message: e.to_string(), hint: None })?;
    let (log, _) = palisade_sandbox::open_audit(None, &env, &policy, &view)
        .map_err(|r| Failure { message: r.message, hint: r.hint })?;
    palisade_monitor::Sink::record(
        log.as_ref(),
        &palisade_monitor::Event::SessionStart {
            argv: ["palisade", "mcp"].iter().map(|s| (*s).to_owned()).chain(flags.iter().cloned()).collect(),
            workspace: policy.workspace.to_string_lossy().into_owned(),
            mode: "mcp".into(),
            landlock_abi: 0,
            network: policy.mode().to_string(),
            layers: policy.layers.iter().map(|(k, s)| format!("{k} ({s})")).collect(),
            missing: Vec::new(),
            limits: String::new(),
            denials: String::new(),
            session: None,
        },
    );
    let workspace = policy.workspace.clone();
    let files = palisade_mcp::files::Files { policy, private: vec![tmp] };
    let started = std::time::Instant::now();
    let served = palisade_mcp::serve(palisade_mcp::Config {
        files,
        workspace,
        log: log.clone(),
        run: (exe, flags),
        started_in: env.cwd.clone(),
    });
    palisade_monitor::Sink::record(
        log.as_ref(),
        &palisade_monitor::Event::SessionEnd {
            exit_code: Some(i32::from(served.is_err())),
            signal: None,
            duration_ms: started.elapsed().as_millis() as u64,
            totals: log.totals(),
        },
    );
    served.map(|()| 0).map_err(|message| Failure { message, hint: None })
}
