//! `filesystem.programs`: an agent's install location, found the way your shell finds it.
//!
//! A profile names its agent's command (`codex`); at load, the command is looked up on your
//! `PATH`, in order, as the shell does (the first directory holding it wins), and what
//! running it needs is made readable:
//!
//! - the `PATH` directory it was found in (so the sandbox's `PATH` finds the same file, not
//!   another of the same name further on);
//! - the package it leads to, when it is a link (`~/.npm-global/bin/codex` →
//!   `…/lib/node_modules/@openai/codex/bin/codex.js`): the nearest directory above the target
//!   holding a `package.json` (npm) or a `pyvenv.cfg` (a virtual environment: pipx,
//!   `uv tool`), else the target's directory (a native installer's versions directory);
//! - the same for its interpreter (`#!/usr/bin/env node` → the `node` on `PATH`, in nvm or
//!   elsewhere; `#!/…/venv/bin/python`);
//! - for a Python script beside a `lib/python3.*` directory (`pip install --user`), those.
//!
//! Only paths no rule decides are granted (a denied or protected path stays so), never the
//! home directory or anything above it, and only to read. Pure: the host is read through
//! [`HostFs`] and [`PathResolver`].

use std::path::{Path, PathBuf};

use crate::hostfs::{HostFs, Kind};
use crate::vars::PathResolver;

/// What was found for one program: where, and the directories to make readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The command on `PATH`, as the shell finds it.
    pub command: PathBuf,
    /// Directories to make readable, each with why.
    pub dirs: Vec<(PathBuf, String)>,
    /// Every file the lookup relied on (the command, the interpreter), as found and as
    /// resolved: the caller refuses the whole finding when the sandbox could have written
    /// one of them (a link or a script planted in an earlier run).
    pub consulted: Vec<PathBuf>,
}

/// How far above a link's target a package root is looked for.
const MAX_UP: usize = 8;

/// Looks `name` up on `path` (the `PATH` directories, in order) and finds its install
/// location; `None` when no directory holds it.
pub fn find(name: &str, path: &[PathBuf], home: &Path, fs: &dyn HostFs, resolver: &dyn PathResolver) -> Option<Found> {
    let command = on_path(name, path, fs)?;
    let mut dirs = Vec::new();
    let mut consulted = hops(&command, fs, resolver);
    install(&command, true, name, home, fs, resolver, &mut dirs);
    if let Some((interp, on_path)) = interpreter(&command, path, fs, resolver) {
        consulted.extend(hops(&interp, fs, resolver));
        let what = format!("{name}'s interpreter");
        install(&interp, on_path, &what, home, fs, resolver, &mut dirs);
        if interp.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python")) {
            user_site(&command, name, home, fs, &mut dirs);
        }
    }
    dirs.dedup_by(|a, b| a.0 == b.0);
    Some(Found { command, dirs, consulted })
}

/// Every path a lookup of `p` goes through: `p`, each link's target in turn (`npm link`
/// puts a link to a workspace's package in the global prefix, and a link in that package
/// leads on), and where it ends; each with its directory resolved.
fn hops(p: &Path, fs: &dyn HostFs, resolver: &dyn PathResolver) -> Vec<PathBuf> {
    let mut out = vec![p.to_path_buf()];
    let mut cur = p.to_path_buf();
    for _ in 0..40 {
        let (Some(dir), Some(name)) = (cur.parent(), cur.file_name()) else { break };
        let here = resolver.resolve(dir).join(name);
        out.push(here.clone());
        let Some(target) = fs.read_link(&here) else { break };
        cur = crate::vars::normalize_lexically(&here.parent().unwrap_or(Path::new("/")).join(target));
    }
    out.push(resolver.resolve(p));
    out.dedup();
    out
}

/// The first `dir/name` on `path` that is (or leads to) a regular file.
fn on_path(name: &str, path: &[PathBuf], fs: &dyn HostFs) -> Option<PathBuf> {
    path.iter().map(|d| d.join(name)).find(|p| fs.kind_followed(p) == Some(Kind::File))
}

/// Whether `dir` may be granted: never `/` or a top-level directory, never the home
/// directory or one that holds it.
fn grantable(dir: &Path, home: &Path) -> bool {
    dir.components().count() > 2 && !home.starts_with(dir)
}

/// Whether `dir` is named like a directory of programs (`bin`, `sbin`) or a native
/// installer's versions (`versions`).
fn programs_dir(dir: &Path) -> bool {
    dir.file_name().is_some_and(|n| n == "bin" || n == "sbin" || n == "versions")
}

/// Adds the directory `command` was found in (on `PATH`, or, for an interpreter named by an
/// absolute `#!` path, only a `bin` directory) and, for a link, the package it leads to:
/// only in an install layout (a package inside `node_modules`, a virtual environment, a
/// `bin` or `versions` directory), never an arbitrary directory holding the target (a link
/// or a `#!` line planted in an earlier run could lead anywhere: `~/client/index.js`,
/// `~/Documents/x`).
fn install(
    command: &Path,
    on_path: bool,
    what: &str,
    home: &Path,
    fs: &dyn HostFs,
    resolver: &dyn PathResolver,
    dirs: &mut Vec<(PathBuf, String)>,
) {
    let mut add = |dir: PathBuf, why: String| {
        if grantable(&dir, home) && !dirs.iter().any(|(d, _)| *d == dir) {
            dirs.push((dir, why));
        }
    };
    let Some(parent) = command.parent().map(|p| resolver.resolve(p)) else { return };
    if !on_path && !command.parent().is_some_and(programs_dir) {
        return;
    }
    add(parent.clone(), format!("{what}: found on PATH at {}", command.display()));
    // A virtual environment's bin directory on PATH (an activated venv): its packages too.
    if let Some(venv) = parent.parent().filter(|v| fs.kind(&v.join("pyvenv.cfg")) == Some(Kind::File)) {
        add(venv.to_path_buf(), format!("{what}: the virtual environment {} it runs in", venv.display()));
    }
    let target = resolver.resolve(command);
    if target.parent() == Some(&*parent) {
        return;
    }
    let in_node_modules = |d: &Path| d.ancestors().skip(1).any(|a| a.file_name().is_some_and(|n| n == "node_modules"));
    let root = target
        .ancestors()
        .skip(1)
        .take(MAX_UP)
        .take_while(|d| grantable(d, home))
        .find(|d| {
            (in_node_modules(d) && fs.kind(&d.join("package.json")) == Some(Kind::File))
                || fs.kind(&d.join("pyvenv.cfg")) == Some(Kind::File)
        })
        .or_else(|| target.parent().filter(|p| programs_dir(p)))
        .map(Path::to_path_buf);
    if let Some(root) = root {
        add(root, format!("{what}: {} leads to {}", command.display(), target.display()));
    }
}

/// The interpreter named by the script's `#!` line: an absolute path, or the program
/// `/usr/bin/env` is asked for, found on `PATH`.
fn interpreter(
    command: &Path,
    path: &[PathBuf],
    fs: &dyn HostFs,
    resolver: &dyn PathResolver,
) -> Option<(PathBuf, bool)> {
    let head = fs.read(&resolver.resolve(command), 256)?;
    let line = head.strip_prefix(b"#!")?;
    let line = std::str::from_utf8(line.split(|b| *b == b'\n').next()?).ok()?;
    let mut words = line.split_whitespace();
    let first = words.next()?;
    if Path::new(first).file_name().is_some_and(|n| n == "env") {
        let name = words.find(|w| !w.starts_with('-') && !w.contains('='))?;
        return on_path(name, path, fs).map(|p| (p, true));
    }
    let p = PathBuf::from(first);
    (p.is_absolute() && fs.kind_followed(&p) == Some(Kind::File)).then_some((p, false))
}

/// `pip install --user`: a script in `PREFIX/bin` whose packages are in
/// `PREFIX/lib/python3.*`.
fn user_site(command: &Path, what: &str, home: &Path, fs: &dyn HostFs, dirs: &mut Vec<(PathBuf, String)>) {
    let Some(lib) = command.parent().and_then(Path::parent).map(|p| p.join("lib")) else { return };
    if !lib.starts_with(home) {
        return;
    }
    for (name, kind) in fs.list(&lib) {
        if kind == Kind::Dir && name.to_str().is_some_and(|n| n.starts_with("python3")) {
            let dir = lib.join(name);
            if !dirs.iter().any(|(d, _)| *d == dir) {
                dirs.push((dir, format!("{what}: its Python packages (pip install --user)")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostfs::MemFs;

    /// Symbolic links by their whole path, for [`MemFs`], which has none.
    struct Links(Vec<(&'static str, &'static str)>);

    impl PathResolver for Links {
        fn resolve(&self, path: &Path) -> PathBuf {
            self.0.iter().find(|(l, _)| Path::new(l) == path).map_or_else(|| path.to_path_buf(), |(_, t)| t.into())
        }
    }

    fn dirs(f: &Found) -> Vec<&str> {
        f.dirs.iter().map(|(d, _)| d.to_str().unwrap()).collect()
    }

    fn path(dirs: &[&str]) -> Vec<PathBuf> {
        dirs.iter().map(PathBuf::from).collect()
    }

    const HOME: &str = "/home/u";

    #[test]
    fn an_npm_global_install_grants_its_bin_directory_its_package_and_node() {
        let codex = "/home/u/.npm-global/lib/node_modules/@openai/codex/bin/codex.js";
        let fs = MemFs::new()
            .with("/home/u/.npm-global/bin/codex", Kind::File)
            .file(codex, "#!/usr/bin/env -S node --no-warnings\nimport x\n")
            .file("/home/u/.npm-global/lib/node_modules/@openai/codex/package.json", "{}")
            .with("/home/u/.nvm/versions/node/v22/bin/node", Kind::File)
            .with("/usr/bin/codex", Kind::File);
        let links = Links(vec![("/home/u/.npm-global/bin/codex", codex)]);
        let p = path(&["/home/u/.npm-global/bin", "/home/u/.nvm/versions/node/v22/bin", "/usr/bin"]);
        let f = find("codex", &p, Path::new(HOME), &fs, &links).unwrap();
        // The first on PATH, as the shell picks it (not /usr/bin/codex).
        assert_eq!(f.command, Path::new("/home/u/.npm-global/bin/codex"));
        assert_eq!(
            dirs(&f),
            [
                "/home/u/.npm-global/bin",
                "/home/u/.npm-global/lib/node_modules/@openai/codex",
                "/home/u/.nvm/versions/node/v22/bin"
            ]
        );
    }

    #[test]
    fn a_native_installer_a_venv_and_pip_user_are_found() {
        // Claude Code's native installer: a link to a versioned binary.
        let fs = MemFs::new()
            .with("/home/u/.local/bin/claude", Kind::File)
            .with("/home/u/.local/share/claude/versions/2.1.0", Kind::File);
        let links = Links(vec![("/home/u/.local/bin/claude", "/home/u/.local/share/claude/versions/2.1.0")]);
        let f = find("claude", &path(&["/home/u/.local/bin"]), Path::new(HOME), &fs, &links).unwrap();
        assert_eq!(dirs(&f), ["/home/u/.local/bin", "/home/u/.local/share/claude/versions"]);
        // pipx / uv tool: a link into a virtual environment, whose python is its own.
        let venv = "/home/u/.local/share/uv/tools/aider-chat";
        let fs = MemFs::new()
            .with("/home/u/.local/bin/aider", Kind::File)
            .file(
                "/home/u/.local/share/uv/tools/aider-chat/bin/aider",
                "#!/home/u/.local/share/uv/tools/aider-chat/bin/python\n",
            )
            .with("/home/u/.local/share/uv/tools/aider-chat/bin/python", Kind::File)
            .file("/home/u/.local/share/uv/tools/aider-chat/pyvenv.cfg", "home = /usr/bin\n");
        let links = Links(vec![
            ("/home/u/.local/bin/aider", "/home/u/.local/share/uv/tools/aider-chat/bin/aider"),
            ("/home/u/.local/share/uv/tools/aider-chat/bin/python", "/usr/bin/python3.12"),
        ]);
        let f = find("aider", &path(&["/home/u/.local/bin"]), Path::new(HOME), &fs, &links).unwrap();
        assert_eq!(dirs(&f)[..2], ["/home/u/.local/bin", venv]);
        // pip install --user: a script beside lib/python3.*.
        let fs = MemFs::new()
            .file("/home/u/.local/bin/aider", "#!/usr/bin/python3\n")
            .with("/usr/bin/python3", Kind::File)
            .with("/home/u/.local/lib/python3.12/site-packages/aider/__init__.py", Kind::File);
        let f =
            find("aider", &path(&["/home/u/.local/bin", "/usr/bin"]), Path::new(HOME), &fs, &Links(vec![])).unwrap();
        assert_eq!(dirs(&f), ["/home/u/.local/bin", "/usr/bin", "/home/u/.local/lib/python3.12"]);
    }

    #[test]
    fn never_the_home_directory_or_above_and_nothing_for_a_missing_command() {
        let fs = MemFs::new().with("/home/u/codex", Kind::File).with("/codex", Kind::File);
        let f = find("codex", &path(&["/home/u"]), Path::new(HOME), &fs, &Links(vec![])).unwrap();
        assert!(f.dirs.is_empty(), "{:?}", f.dirs);
        let f = find("codex", &path(&["/"]), Path::new(HOME), &fs, &Links(vec![])).unwrap();
        assert!(f.dirs.is_empty(), "{:?}", f.dirs);
        // A link whose target lies in the home directory itself.
        let fs = MemFs::new().with("/opt/tools/bin/x", Kind::File).with("/home/u/x", Kind::File);
        let f = find(
            "x",
            &path(&["/opt/tools/bin"]),
            Path::new(HOME),
            &fs,
            &Links(vec![("/opt/tools/bin/x", "/home/u/x")]),
        )
        .unwrap();
        assert_eq!(dirs(&f), ["/opt/tools/bin"]);
        assert!(find("nope", &path(&["/usr/bin"]), Path::new(HOME), &fs, &Links(vec![])).is_none());
        // A link to a project of the user's (a package.json, but not installed in
        // node_modules), or to a file in a folder of documents: only the PATH directory.
        let fs = MemFs::new()
            .with("/opt/t/bin/y", Kind::File)
            .file("/home/u/client/index.js", "x")
            .file("/home/u/client/package.json", "{}")
            .with("/opt/t/bin/z", Kind::File)
            .with("/home/u/Documents/secret.txt", Kind::File);
        let links =
            Links(vec![("/opt/t/bin/y", "/home/u/client/index.js"), ("/opt/t/bin/z", "/home/u/Documents/secret.txt")]);
        for cmd in ["y", "z"] {
            let f = find(cmd, &path(&["/opt/t/bin"]), Path::new(HOME), &fs, &links).unwrap();
            assert_eq!(dirs(&f), ["/opt/t/bin"], "{cmd}");
        }
        // A `#!` line naming a file outside any bin directory grants nothing for it.
        let fs = MemFs::new()
            .file("/opt/t/bin/w", "#!/home/u/Documents/secret.txt\n")
            .with("/home/u/Documents/secret.txt", Kind::File);
        let f = find("w", &path(&["/opt/t/bin"]), Path::new(HOME), &fs, &Links(vec![])).unwrap();
        assert_eq!(dirs(&f), ["/opt/t/bin"]);
        // A directory of that name is no command.
        let fs = MemFs::new().with("/usr/bin/codex/x", Kind::File);
        assert!(find("codex", &path(&["/usr/bin"]), Path::new(HOME), &fs, &Links(vec![])).is_none());
    }
}
