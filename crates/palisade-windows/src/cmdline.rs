//! The command line and environment block `CreateProcessW` takes, built by pure code (so
//! the quoting is tested on every OS).
//!
//! Windows passes a process one string; the program splits it. Nearly every program splits
//! it as the Microsoft C runtime does ("Parsing C++ command-line arguments", Microsoft
//! docs): arguments separated by spaces or tabs, `"` groups, backslashes are literal unless
//! they precede a `"`, where `2n` backslashes and a quote give `n` and a grouping quote, and
//! `2n+1` give `n` and a literal quote. [`command_line`] quotes so that this parse gives the
//! argv back exactly. (`cmd.exe` parses its own `/c` line differently; Palisade passes what
//! the user wrote and never builds a `cmd` line itself.)

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
}
