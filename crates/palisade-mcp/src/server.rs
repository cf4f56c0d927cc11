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
    tool_router: ToolRouter<Self>,
}

impl Server {
    fn record(&self, tool: &str, target: &str, allowed: bool, reason: &str) {
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
        self.answer("search_files", &p, r)
    }

    #[tool(
        description = "Run a shell command in the workspace inside a Palisade sandbox built from the same policy; returns the exit status, stdout and stderr."
    )]
    async fn run_command(&self, Parameters(a): Parameters<CommandArg>) -> Result<CallToolResult, McpError> {
        let timeout = a.timeout_secs.unwrap_or(DEFAULT_TIMEOUT).clamp(1, MAX_TIMEOUT);
        let (exe, flags) = &self.config.run;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("run")
            .args(flags)
            .args(["--quiet", "--", "sh", "-c", &a.command])
            .current_dir(&self.config.workspace)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            let why = format!("cannot start the sandbox ({}): {e}", exe.display());
            self.record("run_command", &a.command, false, &why);
            McpError::internal_error(why, None)
        })?;
        let out = match tokio::time::timeout(Duration::from_secs(timeout), child.wait_with_output()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                let why = format!("the sandbox failed: {e}");
                self.record("run_command", &a.command, false, &why);
                return Err(McpError::internal_error(why, None));
            }
            Err(_) => {
                // The child is killed on drop (the sandbox's init with it).
                let why = format!("stopped after {timeout} s (timeout_secs)");
                self.record("run_command", &a.command, true, &why);
                return Ok(CallToolResult::error(vec![ContentBlock::text(why)]));
            }
        };
        let status = out.status.code().map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit status {c}"));
        self.record("run_command", &a.command, true, &status);
        let cap = |b: &[u8]| {
            let mut s = String::from_utf8_lossy(&b[..b.len().min(MAX_OUTPUT)]).into_owned();
            if b.len() > MAX_OUTPUT {
                s.push_str(&format!("\n[{} more bytes not shown]", b.len() - MAX_OUTPUT));
            }
            s
        };
        let text = format!("{status}\n--- stdout\n{}\n--- stderr\n{}", cap(&out.stdout), cap(&out.stderr));
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Server {
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
    rt.block_on(async {
        let server = Server { config: Arc::new(config), tool_router: Server::tool_router() };
        let running = server.serve(rmcp::transport::stdio()).await.map_err(|e| format!("MCP: {e}"))?;
        running.waiting().await.map_err(|e| format!("MCP: {e}"))?;
        Ok(())
    })
}
