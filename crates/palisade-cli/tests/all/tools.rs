//! Real tools work inside the sandbox.

use crate::util::*;

#[test]
fn shell_and_coreutils() {
    let s = Sandbox::new("t-shell");
    let o = s.sh("echo hello > f && cat f && ls && wc -c < f");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("hello"));
    assert_eq!(std::fs::read_to_string(s.path("ws/f")).unwrap(), "hello\n");
}

#[test]
fn private_tmp_is_writable() {
    let s = Sandbox::new("t-tmp");
    let o = s.sh("d=$(mktemp -d) && echo x > $d/y && cat $d/y && echo z > /dev/shm/z && cat /dev/shm/z");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "x\nz\n");
}

#[test]
fn git_commit_in_the_workspace() {
    let s = Sandbox::new("t-git");
    let git = |args: &[&str]| {
        let o =
            std::process::Command::new("git").args(args).current_dir(s.ws()).env("HOME", s.home()).output().unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    git(&["init", "-q", "-b", "main"]);
    let o = s.sh("echo 'fn main() {}' > main.rs && git add main.rs && git -c user.email=a@b -c user.name=agent commit -q -m 'from the sandbox' && git log --oneline");
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(git(&["log", "--format=%s"]).contains("from the sandbox"));
}

#[test]
fn c_compiler() {
    let s = Sandbox::new("t-cc");
    if !std::path::Path::new("/usr/bin/cc").exists() {
        eprintln!("skipped: no C compiler on this machine");
        return;
    }
    s.write("ws/hello.c", "#include <stdio.h>\nint main(void){puts(\"compiled in the sandbox\");return 0;}\n");
    let o = s.sh("cc -o hello hello.c && ./hello");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "compiled in the sandbox\n");
}

#[test]
fn rust_compiler() {
    let s = Sandbox::new("t-rustc");
    let Some(rustc) = which("rustc") else {
        eprintln!("skipped: no rustc");
        return;
    };
    // rustup's proxies need its home; grant the toolchain read-only, as a user would.
    let rustup = std::env::var("RUSTUP_HOME")
        .unwrap_or_else(|_| format!("{}/.rustup", std::env::var("HOME").unwrap_or_default()));
    let cargo =
        std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    s.write("ws/main.rs", "fn main() { println!(\"{}\", 6 * 7); }\n");
    let bin = std::path::Path::new(&rustc).parent().unwrap().to_str().unwrap().to_owned();
    let script =
        format!("export PATH={bin}:$PATH RUSTUP_HOME={rustup} CARGO_HOME={cargo}; rustc -O main.rs -o main && ./main");
    let o = s.run(&["--allow-read", &rustup, "--allow-read", &cargo], &["/bin/sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "42\n");
}

#[test]
fn python() {
    let s = Sandbox::new("t-python");
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("skipped: no /usr/bin/python3");
        return;
    }
    let o = s.run(
        &[],
        &[
            "/usr/bin/python3",
            "-c",
            "import json, tempfile; f = tempfile.NamedTemporaryFile(); print(json.dumps({'sum': 1 + 1}))",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "{\"sum\": 2}\n");
}

fn which(name: &str) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':').map(|d| format!("{d}/{name}")).find(|p| std::path::Path::new(p).exists())
}

#[test]
fn loopback_servers_work_inside_and_stay_inside() {
    let s = Sandbox::new("t-loopback");
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("skipped: no /usr/bin/python3");
        return;
    }
    // A server the agent starts for its own tests answers inside the sandbox.
    let script = "import socket\ns = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n\
                  c = socket.create_connection(s.getsockname()); a, _ = s.accept(); c.sendall(b'ping'); print(a.recv(4).decode())\n\
                  v6 = socket.socket(socket.AF_INET6); v6.bind(('::1', 0)); print('v6 ok')";
    let o = s.run(&[], &["/usr/bin/python3", "-c", script]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "ping\nv6 ok\n");
}
