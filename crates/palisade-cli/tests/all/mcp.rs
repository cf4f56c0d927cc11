//! `palisade mcp` driven by a client no one here wrote: the official MCP Python SDK (`mcp`
//! on PyPI), installed into a virtual environment kept between runs. Skipped, saying why,
//! when it cannot be installed.

use std::path::PathBuf;
use std::process::Command;

use crate::util::*;

/// A Python with the `mcp` package, or why not.
fn python_with_mcp() -> Option<PathBuf> {
    let venv = PathBuf::from(format!("/var/tmp/palisade-mcp-venv-{}", uid()));
    let python = venv.join("bin/python");
    let ready = |p: &PathBuf| Command::new(p).args(["-c", "import mcp"]).output().is_ok_and(|o| o.status.success());
    if ready(&python) {
        return Some(python);
    }
    let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().is_ok_and(|s| s.success());
    let installed = made
        && Command::new("timeout")
            .args(["300"])
            .arg(venv.join("bin/pip"))
            .args(["install", "-q", "mcp"])
            .status()
            .is_ok_and(|s| s.success());
    if !installed || !ready(&python) {
        eprintln!("skipped: the MCP Python SDK (pip install mcp) could not be installed into {}", venv.display());
        return None;
    }
    Some(python)
}

#[test]
fn the_mcp_server_obeys_the_policy_for_a_client_we_did_not_write() {
    let Some(python) = python_with_mcp() else { return };
    let s = Sandbox::new("mcp");
    s.write("home/.gitconfig", "[user]\n\tname = me\n");
    let outside = s.root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "canary-outside").unwrap();
    // A repository (its hooks protected), and a link planted toward the outside.
    assert!(Command::new("git").args(["init", "-q"]).current_dir(s.ws()).status().unwrap().success());
    std::os::unix::fs::symlink(&outside, s.ws().join("link")).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/all/data/mcp_client.py");
    let o = Command::new("timeout")
        .arg("120")
        .arg(&python)
        .arg(script)
        .arg(s.ws())
        .arg(outside.join("secret"))
        .arg(s.home().join(".ssh/id_rsa"))
        .arg(s.home().join(".gitconfig"))
        .arg(env!("CARGO_BIN_EXE_palisade"))
        // A grant missing when the server starts (a command makes it a link), and the
        // host's /proc granted: neither may serve what the sandbox cannot see.
        .args(["--allow-write", &s.ws().join("dist").display().to_string(), "--allow-read", "/proc"])
        .current_dir(s.ws())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", s.home())
        .env("XDG_CONFIG_HOME", s.home().join(".config"))
        .output()
        .unwrap();
    let out = stdout(&o);
    let line = |label: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{label}: ")))
            .unwrap_or_else(|| panic!("no {label}:\n{out}\n{}", stderr(&o)))
            .to_owned()
    };
    assert_eq!(line("tools"), "tools: edit_file,list_directory,read_file,run_command,search_files,write_file");
    // Inside the workspace: read, write, edit, list, search.
    assert!(line("write").starts_with("write: ok"), "{out}");
    assert_eq!(line("read-after-edit"), "read-after-edit: ok 'bye\\n'");
    assert_eq!(std::fs::read_to_string(s.ws().join("notes.txt")).unwrap(), "bye\n");
    assert!(line("list").contains("notes.txt") && line("search").contains("notes.txt"), "{out}");
    // Refused: outside the grants, a denied secret, a planted link (read and write), a `..`
    // out of the workspace, a protected git hook.
    for label in ["outside", "secret", "through-link", "write-through-link", "escape", "git-hook"] {
        assert!(line(label).starts_with(&format!("{label}: error")), "{label} was not refused:\n{out}");
    }
    assert!(line("secret").contains("deny \"~/.ssh\""), "{out}");
    assert!(line("through-link").contains("links are not followed"), "{out}");
    assert_eq!(std::fs::read_to_string(outside.join("secret")).unwrap(), "canary-outside");
    assert!(!s.ws().join(".git/hooks/pre-commit").exists());
    // A command runs in the sandbox: it sees the workspace, not the canary outside.
    assert!(line("command").contains("inside") && line("command").contains("bye"), "{out}");
    let canary = line("command-canary");
    assert!(canary.contains("rc=1") && !canary.contains("canary-outside"), "{out}");
    // Nothing git on the host would obey is written into a repository made later.
    assert!(line("git-init").contains("made") && line("mkdir-bare").contains("made"), "{out}");
    for label in ["new-git-config", "bare-config"] {
        assert!(line(label).starts_with(&format!("{label}: error")) && line(label).contains("git directory"), "{out}");
    }
    assert!(!std::fs::read_to_string(s.ws().join("bare/config")).unwrap_or_default().contains("pwned"));
    // A grant turned into a link is not followed; the host's /proc is never served; a file
    // grant serves its file.
    assert!(line("link-grant").contains("linked"), "{out}");
    assert!(line("through-link-grant").starts_with("through-link-grant: error"), "{out}");
    assert!(!line("through-link-grant").contains("canary-secret"), "{out}");
    assert!(line("proc").starts_with("proc: error") && line("proc").contains("never served"), "{out}");
    assert!(line("file-grant").contains("name = me"), "{out}");
    // A flood of output is cut, not held.
    assert!(line("flood").contains("more bytes not shown"), "{out}");
    // Every call is in the audit log, refusals included.
    let sessions = s.home().join(".local/state/palisade/sessions");
    let logs: Vec<String> = std::fs::read_dir(&sessions)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .filter(|t| t.contains("\"mode\":\"mcp\""))
        .collect();
    assert_eq!(logs.len(), 1, "one MCP session log");
    let calls = logs[0].lines().filter(|l| l.contains("\"kind\":\"tool_call\"")).count();
    // 25 calls; each of the 7 run_commands is recorded when it starts and when it ends.
    let commands = logs[0].lines().filter(|l| l.contains("\"tool\":\"run_command\"")).count();
    assert_eq!((calls, commands), (25 + 7, 14), "{}", logs[0]);
    // Refused by the protocol layer, before any tool: recorded with the reason.
    let rec = logs[0].lines().find(|l| l.contains("\"tool\":\"format_disk\",\"target\":\"-\"")).unwrap_or("");
    assert!(rec.contains("refused before the tool ran") && rec.contains("\"allowed\":false"), "{}", logs[0]);
    // Cancelled by the client: stopped (from outside: its marker was never written) and said.
    assert!(logs[0].contains("the client cancelled the call"), "{}", logs[0]);
    assert!(!s.ws().join("late-marker").exists(), "the cancelled command ran on");
    assert!(logs[0].contains("\"tool\":\"read_file\",\"target\":") && logs[0].contains("\"allowed\":false"));
}

#[test]
fn a_stopped_mcp_server_ends_its_audit_log() {
    let s = Sandbox::new("mcp-term");
    let mut child = spawn_mcp(&s);
    let sessions = s.home().join(".local/state/palisade/sessions");
    // Once its log exists (and a moment later, its signal handler), stop it as a supervisor
    // would; stdin stays open, so only the signal ends it.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_dir(&sessions).map_or(0, |d| d.count()) == 0 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Its stdin stays open until it has ended (`Child::wait` would close it first, and a
    // client closing the connection is another way to end).
    let stdin = child.stdin.take();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    drop(stdin);
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_dir(&sessions).unwrap().next().unwrap().unwrap().path();
    assert!(std::fs::read_to_string(&log).unwrap().contains("\"kind\":\"session_end\""));
    let o = s.palisade(&["audit", "verify", &log.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

/// Arguments that do not parse are refused by the protocol layer before any tool runs (a
/// client that checks nothing can send them): the call is recorded all the same.
#[test]
fn a_call_refused_before_its_tool_runs_is_recorded() {
    use std::io::{BufRead, Write};
    let s = Sandbox::new("mcp-raw");
    let mut child = spawn_mcp(&s);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut send = |line: &str| writeln!(stdin, "{line}").unwrap();
    send(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#,
    );
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("\"id\":1"), "{line}");
    send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    send(
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_file","arguments":{"path":7,"nope":"x"}}}"#,
    );
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("\"id\":2") && line.contains("\"isError\":true"), "{line}");
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let sessions = s.home().join(".local/state/palisade/sessions");
    let log = std::fs::read_dir(&sessions).unwrap().next().unwrap().unwrap().path();
    let log = std::fs::read_to_string(log).unwrap();
    let rec = log.lines().find(|l| l.contains("\"tool\":\"read_file\",\"target\":\"-\"")).unwrap_or("");
    assert!(rec.contains("refused before the tool ran") && rec.contains("\"allowed\":false"), "{log}");
}

/// `palisade mcp` in the workspace, its stdin and stdout piped.
fn spawn_mcp(s: &Sandbox) -> std::process::Child {
    s.command(&s.ws(), &["mcp"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}
