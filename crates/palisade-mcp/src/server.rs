//! The MCP server: the tools, their audit records, and `run_command`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use palisade_monitor::{AuditLog, Event, Sink};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData as McpError, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;

use crate::files::{Files, Refused, normalise};

/// Most bytes of stdout and of stderr `run_command` returns (64 KiB each; the rest is cut,
/// and said).
pub const MAX_OUTPUT: usize = 64 << 10;
/// `run_command`'s timeout when none is given, and the most one may ask (seconds).
pub const DEFAULT_TIMEOUT: u64 = 60;
/// The longest timeout `run_command` accepts, in seconds.
pub const MAX_TIMEOUT: u64 = 600;

/// What the server needs: the file tools' policy, the workspace, the audit log, and how to
/// start a sandbox for `run_command`.
#[derive(Debug)]
pub struct Config {
    /// The file tools (policy and private directories).
    pub files: Files,
    /// The workspace: relative paths are resolved against it, and commands run there.
    pub workspace: PathBuf,
    /// Where every call is recorded.
    pub log: Arc<AuditLog>,
    /// `palisade` itself and the policy flags `palisade mcp` was given: a command runs as
    /// `PALISADE run FLAGS --quiet -- sh -c COMMAND`.
    pub run: (PathBuf, Vec<String>),
    /// Where `palisade mcp` was started: commands start there, so that relative policy flags
    /// mean what they meant to the server.
    pub started_in: PathBuf,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct PathArg {
    /// A path, absolute or relative to the workspace.
    path: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct WriteArg {
    /// A path, absolute or relative to the workspace.
    path: String,
    /// The file's new contents (UTF-8).
    content: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct EditArg {
    /// A path, absolute or relative to the workspace.
    path: String,
    /// The exact text to replace; it must occur exactly once.
    old_text: String,
    /// What replaces it.
    new_text: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct SearchArg {
    /// The directory to search beneath, absolute or relative to the workspace.
    path: String,
    /// A substring of the file names wanted.
    pattern: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct CommandArg {
    /// A shell command line (`sh -c`), run in the workspace inside the sandbox.
    command: String,
    /// Seconds before it is stopped (default 60, at most 600).
    timeout_secs: Option<u64>,
}

/// The server; see the crate.
#[derive(Clone)]
struct Server {
    config: Arc<Config>,
    /// `run_command`s at once (4).
    commands: Arc<tokio::sync::Semaphore>,
    tool_router: ToolRouter<Self>,
}

impl Server {
    fn record(&self, tool: &str, target: &str, allowed: bool, reason: &str) {
        let _ = RECORDED.try_with(|r| r.set(true));
        self.config.log.record(&Event::ToolCall {
            tool: tool.into(),
            target: target.into(),
            allowed,
            reason: reason.into(),
        });
    }

    /// Records a file tool's outcome and turns it into the MCP answer.
    fn answer(
        &self,
        tool: &str,
        path: &std::path::Path,
        r: Result<(String, String), Refused>,
    ) -> Result<CallToolResult, McpError> {
        match r {
            Ok((text, why)) => {
                self.record(tool, &path.display().to_string(), true, &why);
                Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
            }
            Err(Refused(why)) => {
                self.record(tool, &path.display().to_string(), false, &why);
                Err(McpError::invalid_params(why, None))
            }
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        normalise(&self.config.workspace, p)
    }
}

#[tool_router]
impl Server {
    #[tool(description = "Read a text file the policy lets the sandbox read (relative paths are in the workspace).")]
    async fn read_file(&self, Parameters(a): Parameters<PathArg>) -> Result<CallToolResult, McpError> {
        let p = self.path(&a.path);
        let r = self.config.files.read(&p);
        self.answer("read_file", &p, r)
    }

    #[tool(description = "Write a text file (made or replaced) where the policy lets the sandbox write.")]
    async fn write_file(&self, Parameters(a): Parameters<WriteArg>) -> Result<CallToolResult, McpError> {
        let p = self.path(&a.path);
        let r = self.config.files.write(&p, &a.content).map(|why| (format!("wrote {} bytes", a.content.len()), why));
        self.answer("write_file", &p, r)
    }

    #[tool(
        description = "Replace one exact occurrence of old_text with new_text in a file the policy lets the sandbox write."
    )]
    async fn edit_file(&self, Parameters(a): Parameters<EditArg>) -> Result<CallToolResult, McpError> {
        let p = self.path(&a.path);
        let r = self.config.files.edit(&p, &a.old_text, &a.new_text).map(|why| ("edited".to_owned(), why));
        self.answer("edit_file", &p, r)
    }

    #[tool(description = "List a directory's entries the sandbox can see (directories end with /).")]
    async fn list_directory(&self, Parameters(a): Parameters<PathArg>) -> Result<CallToolResult, McpError> {
        let p = self.path(&a.path);
        let r = self.config.files.list(&p).map(|(names, why)| (names.join("\n"), why));
        self.answer("list_directory", &p, r)
    }

    #[tool(
        description = "Find files beneath a directory whose names contain a pattern (only what the sandbox can see)."
    )]
    async fn search_files(&self, Parameters(a): Parameters<SearchArg>) -> Result<CallToolResult, McpError> {
        let p = self.path(&a.path);
        let r = self.config.files.search(&p, &a.pattern).map(|(found, why)| (found.join("\n"), why));
        // The record names the pattern too.
        self.answer("search_files", &p.join(format!("**/*{}*", a.pattern)), r)
    }

    #[tool(
        description = "Run a shell command in the workspace inside a Palisade sandbox built from the same policy; returns the exit status, stdout and stderr."
    )]
    async fn run_command(
        &self,
        Parameters(a): Parameters<CommandArg>,
        ctx: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let timeout = a.timeout_secs.unwrap_or(DEFAULT_TIMEOUT).clamp(1, MAX_TIMEOUT);
        // At most a few at once: each is a sandbox, and its output is held here.
        let _slot = tokio::select! {
            slot = self.commands.acquire() => slot.map_err(|e| McpError::internal_error(e.to_string(), None))?,
            _ = ctx.ct.cancelled() => {
                self.record("run_command", &a.command, true, "not started: the client cancelled the call while it waited");
                return Ok(CallToolResult::error(vec![ContentBlock::text("cancelled before it started")]));
            }
        };
        let (exe, flags) = &self.config.run;
        let mut cmd = tokio::process::Command::new(exe);
        // Started where `palisade mcp` was (its relative policy flags mean the same), and
        // the command itself moves to the workspace: "$1" is the workspace, "$0" the command.
        cmd.arg("run")
            .args(flags)
            .args(["--quiet", "--", "sh", "-c", "cd -- \"$1\" || exit 125; eval \"$0\"", &a.command])
            .arg(&self.config.workspace)
            .current_dir(&self.config.started_in)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        self.record("run_command", &a.command, true, "started");
        let mut child = cmd.spawn().map_err(|e| {
            let why = format!("cannot start the sandbox ({}): {e}", exe.display());
            self.record("run_command", &a.command, false, &why);
            McpError::internal_error(why, None)
        })?;
        let (out, err) = (child.stdout.take(), child.stderr.take());
        // Ends at the command's end, its timeout, or the client's `notifications/cancelled`.
        let done = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(timeout), async {
                let outputs = tokio::join!(capped(out), capped(err));
                (child.wait().await, outputs)
            }) => r.map_err(|_| format!("stopped after {timeout} s (timeout_secs)")),
            _ = ctx.ct.cancelled() => Err("stopped: the client cancelled the call".to_owned()),
        };
        let (status, (out, err)) = match done {
            Ok((Ok(status), outputs)) => (status, outputs),
            Ok((Err(e), _)) => {
                let why = format!("the sandbox failed: {e}");
                self.record("run_command", &a.command, false, &why);
                return Err(McpError::internal_error(why, None));
            }
            Err(why) => {
                // Asked to end first (palisade run then ends its session and its log), killed
                // after 2 s.
                if let Some(pid) = child.id() {
                    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
                }
                if tokio::time::timeout(Duration::from_secs(2), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                self.record("run_command", &a.command, true, &why);
                return Ok(CallToolResult::error(vec![ContentBlock::text(why)]));
            }
        };
        let status = status.code().map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit status {c}"));
        self.record("run_command", &a.command, true, &status);
        let text = format!("{status}\n--- stdout\n{out}\n--- stderr\n{err}");
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
    }
}

/// Reads a child's stream to its end, keeping at most [`MAX_OUTPUT`] bytes (the rest is
/// counted and said, never held).
async fn capped<R: tokio::io::AsyncRead + Unpin>(stream: Option<R>) -> String {
    use tokio::io::AsyncReadExt;
    let Some(mut r) = stream else { return String::new() };
    let (mut kept, mut more, mut buf) = (Vec::new(), 0usize, vec![0u8; 16 << 10]);
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                more += n.saturating_sub(room);
            }
        }
    }
    let mut s = String::from_utf8_lossy(&kept).into_owned();
    if more > 0 {
        s.push_str(&format!("\n[{more} more bytes not shown]"));
    }
    s
}

tokio::task_local! {
    /// Whether the call being served was recorded by its tool (see `call_tool`).
    static RECORDED: std::cell::Cell<bool>;
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Server {
    /// Every call is recorded: by its tool, or here when the protocol layer refused it
    /// before the tool ran (an unknown tool, arguments that do not parse).
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, McpError> {
        let tool = request.name.to_string();
        // What the call named, for the record even when it is refused before its tool runs.
        let target = request
            .arguments
            .as_ref()
            .and_then(|a| ["command", "path"].iter().find_map(|k| a.get(*k).and_then(|v| v.as_str())))
            .unwrap_or("-")
            .to_owned();
        RECORDED
            .scope(std::cell::Cell::new(false), async {
                let tcc = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
                let r = self.tool_router.call(tcc).await;
                // An unknown tool is an error; arguments that do not parse, an error result.
                let refused = match &r {
                    Err(e) => Some(e.message.to_string()),
                    Ok(rmcp::model::CallToolResponse::Complete(c)) if c.is_error == Some(true) => Some(
                        c.content
                            .iter()
                            .filter_map(|b| b.as_text().map(|t| t.text.clone()))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    Ok(_) => None,
                };
                if let Some(why) = refused.filter(|_| !RECORDED.with(|c| c.get())) {
                    self.record(&tool, &target, false, &format!("refused before the tool ran: {why}"));
                }
                r
            })
            .await
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// Serves MCP on stdin and stdout until the client closes them.
///
/// # Errors
/// When the runtime cannot start or the transport fails (a message for the user).
pub fn serve(config: Config) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the MCP server's runtime: {e}"))?;
    let served = rt.block_on(async {
        let server = Server {
            config: Arc::new(config),
            commands: Arc::new(tokio::sync::Semaphore::new(4)),
            tool_router: Server::tool_router(),
        };
        let work = async {
            let running = server.serve(rmcp::transport::stdio()).await.map_err(|e| format!("MCP: {e}"))?;
            running.waiting().await.map_err(|e| format!("MCP: {e}"))?;
            Ok::<(), String>(())
        };
        // The client closing stdin ends the server; so do SIGTERM and SIGINT (a client or a
        // supervisor stopping it, even during the handshake), and the session's log is then
        // ended as for a close.
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| format!("MCP: cannot watch for SIGTERM: {e}"))?;
            tokio::select! {
                r = work => r?,
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        #[cfg(not(unix))]
        work.await?;
        Ok(())
    });
    // Reading stdin blocks a thread of the runtime's pool; a signal ends the server without
    // waiting for that read to return.
    rt.shutdown_timeout(Duration::from_millis(100));
    served
}
