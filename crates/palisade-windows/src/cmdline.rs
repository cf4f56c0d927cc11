//! The command line and environment block `CreateProcessW` takes, built by pure code (so
//! the quoting is tested on every OS).
//!
//! Windows passes a process one string; the program splits it. Nearly every program splits
//! it as the Microsoft C runtime does ("Parsing C++ command-line arguments", Microsoft
//! docs): arguments separated by spaces or tabs, `"` groups, backslashes are literal unless
//! they precede a `"`, where `2n` backslashes and a quote give `n` and a grouping quote, and
//! `2n+1` give `n` and a literal quote. [`command_line`] quotes so that this parse gives the
//! argv back exactly. `cmd.exe` parses its `/c` line differently: [`launch`] builds that
//! line for batch files (npm's and the agents' `.cmd` shims), and a command given as
//! `cmd /c "…"` gets the C runtime's quoting like any program (write paths without quotes, or
//! run the program directly).

/// `argv` as one command line that the C runtime splits back into `argv`.
pub fn command_line(argv: &[String]) -> String {
    let mut out = String::new();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        quote(arg, &mut out);
    }
    out
}

fn quote(arg: &str, out: &mut String) {
    if !arg.is_empty() && !arg.contains([' ', '\t', '\n', '\x0b', '"']) {
        out.push_str(arg);
        return;
    }
    out.push('"');
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                // Each backslash before a quote doubled, then the quote escaped.
                out.extend(std::iter::repeat_n('\\', backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            _ => {
                out.extend(std::iter::repeat_n('\\', backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    // Backslashes before the closing quote doubled.
    out.extend(std::iter::repeat_n('\\', backslashes * 2));
    out.push('"');
}

/// Splits `line` as the C runtime does (the inverse of [`command_line`]; used by the tests
/// and by the monitor to show a process's command line).
pub fn split(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_arg = false;
    let mut quoted = false;
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' if !quoted => {
                if in_arg {
                    args.push(std::mem::take(&mut cur));
                    in_arg = false;
                }
            }
            '\\' => {
                let start = i;
                while i < chars.len() && chars[i] == '\\' {
                    i += 1;
                }
                let n = i - start;
                in_arg = true;
                if i < chars.len() && chars[i] == '"' {
                    cur.extend(std::iter::repeat_n('\\', n / 2));
                    if n % 2 == 1 {
                        cur.push('"');
                        i += 1;
                    }
                } else {
                    cur.extend(std::iter::repeat_n('\\', n));
                }
                continue;
            }
            '"' => {
                in_arg = true;
                if quoted && chars.get(i + 1) == Some(&'"') {
                    // `""` inside quotes: a literal quote (the runtime's rule since 2008).
                    cur.push('"');
                    i += 1;
                } else {
                    quoted = !quoted;
                }
            }
            _ => {
                in_arg = true;
                cur.push(c);
            }
        }
        i += 1;
    }
    if in_arg {
        args.push(cur);
    }
    args
}

/// The environment block: `NAME=VALUE` strings in UTF-16, each ended by a NUL, the block by
/// another; sorted by name without regard to case, as Windows expects
/// ("Changing Environment Variables", Win32 docs). A name holding `=` or a NUL anywhere is
/// left out (Windows could not represent it).
pub fn env_block(env: &[(String, String)]) -> Vec<u16> {
    let mut vars: Vec<&(String, String)> =
        env.iter().filter(|(k, v)| !k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0')).collect();
    vars.sort_by_key(|(k, _)| k.to_uppercase());
    let mut block = Vec::new();
    for (k, v) in vars {
        block.extend(format!("{k}={v}").encode_utf16());
        block.push(0);
    }
    if block.is_empty() {
        block.push(0);
    }
    block.push(0);
    block
}

/// How `CreateProcessW` is asked to start `argv`: the program it runs
/// (`lpApplicationName`, a full path: Windows searches nothing) and the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The program's full path.
    pub application: String,
    /// The command line.
    pub line: String,
}

/// Finds the program `name` as a shell would: a name with a folder (`.\tool`, `C:\x\y`) as
/// it is (relative to `cwd`), else in each absolute folder of `path` (the user's own `PATH`,
/// `;` separated, never one a project's policy set) in order; where `name` has no extension, with each of `pathext`'s (`.COM;.EXE;
/// .BAT;.CMD`). Unlike `CreateProcessW`'s own search, the current folder is not searched for
/// a bare name: a program planted in the workspace never runs in place of one on `PATH`.
/// `is_file` says whether a path is a file.
pub fn find(name: &str, cwd: &str, path: &str, pathext: &str, is_file: &dyn Fn(&str) -> bool) -> Option<String> {
    use palisade_policy::winpath::WinPath;
    // Every candidate in one spelling: trailing dots and spaces and a stream suffix are what
    // Win32 strips when it opens the file, so `npm.cmd.` is `npm.cmd`, found and started as a
    // batch file (Rust's CVE-2024-43402 was this); only absolute folders are searched.
    let canonical = |p: &str| WinPath::parse(p).ok().filter(|w| !w.parts().is_empty()).map(|w| w.to_string());
    // Only extensions that are a dot and letters or digits (`.CMD`, not `.CMD.`).
    let exts: Vec<&str> = pathext
        .split(';')
        .map(str::trim)
        .filter(|e| e.len() > 1 && e.starts_with('.') && e[1..].chars().all(|c| c.is_ascii_alphanumeric()))
        .collect();
    let try_in = |base: &str| -> Option<String> {
        let base = canonical(base)?;
        let file = base.rsplit('\\').next().unwrap_or_default();
        if file.contains('.') && is_file(&base) {
            return Some(base);
        }
        exts.iter().map(|e| format!("{base}{}", e.to_ascii_lowercase())).find(|c| is_file(c))
    };
    if name.contains(['\\', '/']) || name.as_bytes().get(1) == Some(&b':') {
        let full = if name.starts_with(['\\', '/']) || name.as_bytes().get(1) == Some(&b':') {
            name.to_owned()
        } else {
            format!("{}\\{name}", cwd.trim_end_matches('\\'))
        };
        return try_in(&full);
    }
    path.split(';')
        .map(|d| d.trim().trim_matches('"'))
        .filter(|d| WinPath::parse(d).is_ok())
        .find_map(|d| try_in(&format!("{}\\{name}", d.trim_end_matches('\\'))))
}

/// The launch of `argv` whose program was found at `program`. A batch file (`.bat`,
/// `.cmd`: npm's, codex's and claude's shims) runs through `cmd.exe` from `system_root`:
/// `cmd.exe /d /e:ON /v:OFF /s /c ""PROGRAM" ARGS"`, every argument that holds anything but
/// letters, digits and `-_+./:\@` in double quotes, inside which `cmd` reads `&|<>^()` and
/// spaces literally.
///
/// # Errors
/// For a batch file, an argument `cmd.exe` cannot be given safely: one holding `"` (it
/// would end the quotes), `%` (expanded even in quotes), or a line break or NUL (they end
/// the command). The message names the argument and the program.
pub fn launch(program: &str, argv: &[String], system_root: &str) -> Result<Launch, String> {
    let lower = program.to_ascii_lowercase();
    if !(lower.ends_with(".bat") || lower.ends_with(".cmd")) {
        return Ok(Launch { application: program.to_owned(), line: command_line(argv) });
    }
    if program.contains('%') {
        return Err(format!(
            "cannot run the batch file {program} through cmd.exe: its path holds `%`, which cmd.exe would expand; rename the folder or run the program it starts directly"
        ));
    }
    let mut script = format!("\"{program}\"");
    for arg in argv.iter().skip(1) {
        if let Some(c) = arg.chars().find(|c| matches!(c, '"' | '%' | '\r' | '\n' | '\0')) {
            return Err(format!(
                "cannot pass the argument {arg:?} to the batch file {program}: cmd.exe would read its {c:?} as syntax; run the program it starts directly"
            ));
        }
        script.push(' ');
        if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_+./:\\@".contains(c)) {
            script.push_str(arg);
        } else {
            // Backslashes before the closing quote doubled: a shim passes `%*` on to a
            // program that reads `\"` as a literal quote (node.exe, as the C runtime does).
            let tail = arg.len() - arg.trim_end_matches('\\').len();
            script.push('"');
            script.push_str(arg);
            script.extend(std::iter::repeat_n('\\', tail));
            script.push('"');
        }
    }
    let cmd = format!("{}\\System32\\cmd.exe", system_root.trim_end_matches('\\'));
    Ok(Launch { line: format!("cmd.exe /d /e:ON /v:OFF /s /c \"{script}\""), application: cmd })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_argv_survives_the_c_runtime_split() {
        let cases: &[&[&str]] = &[
            &["git", "commit", "-m", "a message"],
            &["x", ""],
            &["x", r#"say "hi""#],
            &["x", r"C:\dir with space\"],
            &["x", r"a\\b", r#"a\"b"#, r#"\""#, "tab\there", "new\nline"],
            &["x", r"\\server\share\", "%PATH%", "^&|<>"],
        ];
        for argv in cases {
            let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
            let line = command_line(&argv);
            assert_eq!(split(&line), argv, "{line}");
        }
    }

    #[test]
    fn plain_arguments_are_left_alone() {
        assert_eq!(command_line(&["cargo".into(), "build".into(), "--release".into()]), "cargo build --release");
    }

    #[test]
    fn the_environment_block_is_sorted_and_doubly_terminated() {
        let env = [("b".to_string(), "2".to_string()), ("A".into(), "1".into()), ("bad=name".into(), "x".into())];
        let block = String::from_utf16(&env_block(&env)).unwrap();
        assert_eq!(block, "A=1\0b=2\0\0");
        assert_eq!(env_block(&[]), [0, 0]);
    }
    #[test]
    fn programs_are_found_on_path_with_pathext_never_in_the_current_folder() {
        let files = [r"C:\ws\git.exe", r"C:\tools\git.exe", r"C:\npm\npm.cmd", r"C:\npm\npm", r"C:\ws\tool.exe"];
        let is_file = |p: &str| files.iter().any(|f| f.eq_ignore_ascii_case(p));
        let find = |name: &str| find(name, r"C:\ws", r"C:\none;;C:\tools;C:\npm", ".COM;.EXE;.BAT;.CMD", &is_file);
        assert_eq!(find("git").as_deref(), Some(r"C:\tools\git.exe"), "the workspace's git.exe is not run for `git`");
        assert_eq!(find("npm").as_deref(), Some(r"C:\npm\npm.cmd"), "PATHEXT before the extensionless file");
        assert_eq!(find(r".\tool").as_deref(), Some(r"C:\ws\tool.exe"), "a name with a folder is taken as it is");
        assert_eq!(find(r"C:\tools\git.exe").as_deref(), Some(r"C:\tools\git.exe"));
        assert_eq!(find("missing"), None);
        // A trailing dot, space or stream is the same file to Windows, and found as it.
        assert_eq!(find(r"C:\npm\npm.cmd.").as_deref(), Some(r"C:\npm\npm.cmd"));
        assert_eq!(find(r"C:\npm\npm.cmd ").as_deref(), Some(r"C:\npm\npm.cmd"));
        assert_eq!(find(r"C:\npm\npm.cmd::$DATA").as_deref(), Some(r"C:\npm\npm.cmd"));
        // Relative or quoted PATH entries, and extensions that are no extension.
        let odd = |path: &str, ext: &str| super::find("git", r"C:\ws", path, ext, &is_file);
        assert_eq!(odd(r".;ws;..\ws", ".EXE"), None, "relative entries are not searched");
        assert_eq!(odd(r#""C:\tools""#, ".EXE").as_deref(), Some(r"C:\tools\git.exe"));
        assert_eq!(super::find("npm", r"C:\ws", r"C:\npm", ".CMD.;.C*D;.", &is_file), None);
    }

    #[test]
    fn batch_files_run_through_cmd_with_their_arguments_quoted_or_refused() {
        let l =
            launch(r"C:\npm\npm.cmd", &["npm".into(), "install".into(), "a b".into(), "x&calc".into()], r"C:\Windows")
                .unwrap();
        assert_eq!(l.application, r"C:\Windows\System32\cmd.exe");
        assert_eq!(l.line, r#"cmd.exe /d /e:ON /v:OFF /s /c ""C:\npm\npm.cmd" install "a b" "x&calc"""#);
        // A quoted argument ending in `\` keeps the next arguments apart for node.exe.
        let l = launch(r"C:\npm\npm.cmd", &["npm".into(), r"x y\".into(), "--ignore-scripts".into()], r"C:\Windows")
            .unwrap();
        assert!(l.line.ends_with(r#" "x y\\" --ignore-scripts""#), "{}", l.line);
        assert!(launch(r"C:\a%X%b\npm.cmd", &["npm".into()], r"C:\Windows").is_err(), "% in the batch file's path");
        for bad in ["100%", "say \"hi\"", "two\nlines"] {
            let e = launch(r"C:\npm\npm.cmd", &["npm".into(), bad.into()], r"C:\Windows").unwrap_err();
            assert!(e.contains("npm.cmd"), "{e}");
        }
        // Programs are started directly, with the C runtime's quoting.
        let l =
            launch(r"C:\tools\git.exe", &["git".into(), "commit".into(), "-m".into(), "a \"b\"".into()], r"C:\Windows")
                .unwrap();
        assert_eq!((l.application.as_str(), l.line.as_str()), (r"C:\tools\git.exe", r#"git commit -m "a \"b\"""#));
    }
}
