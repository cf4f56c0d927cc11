//! A cgroup for the sandbox, when the caller can get one: cgroup v2 with the memory and pids
//! controllers delegated to it (root, or a subtree systemd delegated), or, on a hybrid host
//! whose memory and pids controllers are on cgroup v1 hierarchies, those (root only). The
//! sandbox's init is moved in before the command starts, so every process of the sandbox is
//! counted, and only those.
//!
//! The sandbox cannot leave it or change its limits: no cgroup file system is mounted inside,
//! it runs in its own cgroup namespace, without capabilities, and seccomp refuses `mount`.
//!
//! Where the layout is read (`/proc/self/cgroup`, `/proc/self/mountinfo`) the parsing is pure
//! and unit-tested; [`Layout::detect`] says which kind applies and why.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Which cgroup the sandbox gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v2: the directory to create the sandbox's cgroup in (ours, or its parent's
    /// subtree once the supervisor moved itself into a leaf), with memory and pids enabled.
    V2 {
        /// The cgroup v2 directory the sandbox's `palisade-PID` cgroup is created in.
        parent: PathBuf,
    },
    /// cgroup v1 (a hybrid host): the memory and pids hierarchies' directories to create
    /// the sandbox's cgroups in.
    V1 {
        /// This process's cgroup directory in the v1 hierarchy with the `memory` controller.
        memory: PathBuf,
        /// This process's cgroup directory in the v1 hierarchy with the `pids` controller.
        pids: PathBuf,
    },
}

/// A line of `/proc/self/cgroup`: `ID:CONTROLLERS:PATH`.
fn own_paths(proc_cgroup: &str) -> Vec<(String, String)> {
    proc_cgroup
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            Some((it.next()?.to_owned(), it.next()?.to_owned()))
        })
        .collect()
}

/// Mount points of cgroup file systems from `/proc/self/mountinfo`: (fstype, super options,
/// mount point).
fn cgroup_mounts(mountinfo: &str) -> Vec<(String, String, PathBuf)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let _source = r.next()?;
            let opts = r.next().unwrap_or("");
            matches!(fstype, "cgroup" | "cgroup2").then(|| (fstype.to_owned(), opts.to_owned(), unescape(mount_point)))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// Where a v1 hierarchy with `controller` is mounted, and our cgroup in it.
fn v1_dir(paths: &[(String, String)], mounts: &[(String, String, PathBuf)], controller: &str) -> Option<PathBuf> {
    let (_, _, mp) = mounts.iter().find(|(t, o, _)| t == "cgroup" && o.split(',').any(|x| x == controller))?;
    let (_, p) = paths.iter().find(|(c, _)| c.split(',').any(|x| x == controller))?;
    Some(mp.join(p.trim_start_matches('/')))
}

/// What the files say, before any access check: the v2 directory of our cgroup, and the
/// v1 memory and pids directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// This process's cgroup v2 directory: the path of the `0::PATH` line below the first
    /// `cgroup2` mount point; `None` without either.
    pub v2: Option<PathBuf>,
    /// This process's directory in the v1 hierarchy with the `memory` controller, when one
    /// is mounted.
    pub v1_memory: Option<PathBuf>,
    /// This process's directory in the v1 hierarchy with the `pids` controller, when one is
    /// mounted.
    pub v1_pids: Option<PathBuf>,
}

/// Reads [`Found`] from the texts of `/proc/self/cgroup` and `/proc/self/mountinfo`
/// (cgroups(7), proc_pid_mountinfo(5)); pure. Each cgroup path is joined to its mount point
/// as is, which assumes the mount's root (mountinfo's fourth field) is `/`.
pub fn find(proc_cgroup: &str, mountinfo: &str) -> Found {
    let paths = own_paths(proc_cgroup);
    let mounts = cgroup_mounts(mountinfo);
    let v2 = mounts.iter().find(|(t, _, _)| t == "cgroup2").and_then(|(_, _, mp)| {
        let (_, p) = paths.iter().find(|(c, _)| c.is_empty())?;
        Some(mp.join(p.trim_start_matches('/')))
    });
    Found { v2, v1_memory: v1_dir(&paths, &mounts, "memory"), v1_pids: v1_dir(&paths, &mounts, "pids") }
}

fn has_controllers(dir: &Path, file: &str) -> bool {
    let text = fs::read_to_string(dir.join(file)).unwrap_or_default();
    let words: Vec<&str> = text.split_whitespace().collect();
    words.contains(&"memory") && words.contains(&"pids")
}

fn writable(dir: &Path) -> bool {
    let Ok(c) = super::ffi::cstr(dir) else { return false };
    // SAFETY: access(2) on a NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

impl Layout {
    /// `cgroup v2` or `cgroup v1`, as the session's record says.
    pub fn label(&self) -> &'static str {
        match self {
            Layout::V2 { .. } => "cgroup v2",
            Layout::V1 { .. } => "cgroup v1",
        }
    }

    /// Which cgroup this process can give a sandbox, or why none.
    pub fn detect() -> Result<Layout, String> {
        let pc = fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
        let mi =
            fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        let found = find(&pc, &mi);
        let mut why = Vec::new();
        if let Some(dir) = &found.v2 {
            if !has_controllers(dir, "cgroup.controllers") {
                why.push(format!("cgroup v2 at {}: memory and pids are not available there", dir.display()));
            } else if !writable(dir) {
                why.push(format!(
                    "cgroup v2 at {}: not writable by this user (no delegated subtree; e.g. run under `systemd-run --user --scope -p Delegate=yes`)",
                    dir.display()
                ));
            } else {
                return Ok(Layout::V2 { parent: dir.clone() });
            }
        }
        match (&found.v1_memory, &found.v1_pids) {
            (Some(m), Some(p)) if writable(m) && writable(p) => {
                return Ok(Layout::V1 { memory: m.clone(), pids: p.clone() });
            }
            (Some(m), Some(_)) => {
                why.push(format!("cgroup v1 memory and pids at {}: writable only by root", m.display()));
            }
            _ => why.push("no cgroup v1 memory and pids hierarchies".into()),
        }
        Err(why.join("; "))
    }
}

/// How the sandbox's init enters its cgroup before it starts the command, off the path the
/// command waits on. Writing another process's id to `cgroup.procs` takes the kernel's
/// global `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace period
/// (9–19 ms measured on cgroup v1); two ways avoid it:
#[derive(Debug)]
pub enum Entry {
    /// cgroup v2: the cgroup's directory, given to `clone3` with `CLONE_INTO_CGROUP`
    /// (Linux 5.7), so that init is born in it: no move at all.
    Born(std::os::fd::OwnedFd),
    /// cgroup v1: each hierarchy's `tasks` file, to which init writes `0` as its first act:
    /// a single thread moving itself skips the global lock (`cgroup_procs_write_start` in
    /// kernel/cgroup/cgroup.c, from the "cgroup: Optimize single thread migration" patches;
    /// older kernels take the lock, which is correct, only slower). Init is single-threaded
    /// then, and forks the command only after.
    SelfMove(Vec<std::os::fd::OwnedFd>),
}

/// The sandbox's cgroup(s), removed on drop (once empty).
#[derive(Debug)]
pub struct Cgroup {
    /// The layout it was created in, which decides the files its limits and events are in.
    pub layout: Layout,
    /// v2: one directory; v1: the memory directory, then the pids directory.
    pub dirs: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {value:?} to {}: {e}", path.display())))
}

/// Counters read from the cgroup's event files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Events {
    /// Processes the kernel's OOM killer killed in the cgroup (or, v1, the cgroup is stuck
    /// in an OOM state).
    pub oom_kills: u64,
    /// Forks refused at `pids.max`.
    pub pids_max: u64,
}

fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// Removes the empty cgroups of earlier runs whose supervisor is gone (killed before it
/// could clean up): `palisade-PID` where no process PID exists. A cgroup still in use is
/// never empty, and the kernel refuses to remove it.
fn sweep(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        // A sandbox's cgroup (`palisade-PID`), or the leaf a supervisor moved itself into
        // to delegate controllers (`palisade-supervisor-PID`, see `v2_enable`).
        let pid =
            name.to_str().and_then(|n| n.strip_prefix("palisade-")).map(|n| n.strip_prefix("supervisor-").unwrap_or(n));
        let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir(e.path());
        }
    }
}

impl Cgroup {
    /// Creates the sandbox's cgroup with `memory` (bytes, swap included) and `pids` limits.
    /// It is named `palisade-PID` after this process; the empty cgroups of earlier runs whose
    /// supervisor is gone are removed first.
    ///
    /// # Errors
    /// A directory that cannot be made or a limit that cannot be written (the message names
    /// the file and value); on cgroup v2, also a cgroup of ours that holds other processes,
    /// so that its memory and pids controllers cannot be enabled for a child (the "no
    /// internal processes" rule of Documentation/admin-guide/cgroup-v2.rst).
    pub fn create(layout: &Layout, memory: Option<u64>, pids: Option<u64>) -> io::Result<Cgroup> {
        let name = format!("palisade-{}", std::process::id());
        match layout {
            Layout::V2 { parent } => sweep(parent),
            Layout::V1 { memory, pids } => {
                sweep(memory);
                sweep(pids);
            }
        }
        match layout {
            Layout::V2 { parent } => {
                let parent = v2_enable(parent)?;
                let dir = parent.join(&name);
                fs::create_dir(&dir)?;
                let cg = Cgroup { layout: layout.clone(), dirs: vec![dir.clone()] };
                if let Some(m) = memory {
                    write(&dir.join("memory.max"), &m.to_string())?;
                    if dir.join("memory.swap.max").exists() {
                        write(&dir.join("memory.swap.max"), "0")?;
                    }
                    // One OOM kill takes the whole sandbox, not a random process of it.
                    let _ = write(&dir.join("memory.oom.group"), "1");
                }
                if let Some(p) = pids {
                    write(&dir.join("pids.max"), &p.to_string())?;
                }
                Ok(cg)
            }
            Layout::V1 { memory: mdir, pids: pdir } => {
                let (m, p) = (mdir.join(&name), pdir.join(&name));
                fs::create_dir(&m)?;
                let mut cg = Cgroup { layout: layout.clone(), dirs: vec![m.clone()] };
                fs::create_dir(&p)?;
                cg.dirs.push(p.clone());
                if let Some(bytes) = memory {
                    write(&m.join("memory.limit_in_bytes"), &bytes.to_string())?;
                    // With swap accounting, swap counts too (set after the memory limit).
                    if m.join("memory.memsw.limit_in_bytes").exists() {
                        write(&m.join("memory.memsw.limit_in_bytes"), &bytes.to_string())?;
                    }
                }
                if let Some(n) = pids {
                    write(&p.join("pids.max"), &n.to_string())?;
                }
                Ok(cg)
            }
        }
    }

    /// How the sandbox's init is to enter the cgroup without the kernel's global lock on
    /// the critical path ([`Entry`]). Opened by the supervisor, before `clone`, so the
    /// kernel's permission checks use its credentials and cgroup namespace (cgroup v2 checks
    /// the opener's since Linux 5.16).
    ///
    /// # Errors
    /// The cgroup's directory (v2) or a `tasks` file (v1) cannot be opened.
    pub fn entry(&self) -> io::Result<Entry> {
        let open = |p: PathBuf, flags: libc::c_int| {
            let c = super::ffi::cstr(&p)?;
            // SAFETY: open(2) on a NUL-terminated path; the result is checked and owned.
            let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
            if fd < 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(e.kind(), format!("opening {}: {e}", p.display())));
            }
            // SAFETY: just opened, owned here.
            Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
        };
        match self.layout {
            Layout::V2 { .. } => Ok(Entry::Born(open(self.dirs[0].clone(), libc::O_RDONLY | libc::O_DIRECTORY)?)),
            Layout::V1 { .. } => self
                .dirs
                .iter()
                .map(|d| open(d.join("tasks"), libc::O_WRONLY))
                .collect::<io::Result<_>>()
                .map(Entry::SelfMove),
        }
    }

    /// Moves `pid` (the sandbox's init, before it starts the command) in.
    ///
    /// # Errors
    /// Writing `cgroup.procs` fails, e.g. without write access to the common ancestor of the
    /// source and destination cgroups (cgroup v2's delegation rules).
    pub fn attach(&self, pid: libc::pid_t) -> io::Result<()> {
        for d in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Reads the counters now. v2: `oom_kill` of `memory.events` and `max` of `pids.events`;
    /// v1: `oom_kill` plus `under_oom` of `memory.oom_control`, and `max` of `pids.events`. A
    /// file or field that cannot be read counts as 0.
    pub fn events(&self) -> Events {
        let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
        match &self.layout {
            Layout::V2 { .. } => {
                let d = &self.dirs[0];
                Events {
                    oom_kills: field(&read(d.join("memory.events")), "oom_kill"),
                    pids_max: field(&read(d.join("pids.events")), "max"),
                }
            }
            Layout::V1 { .. } => {
                let oc = read(self.dirs[0].join("memory.oom_control"));
                Events {
                    oom_kills: field(&oc, "oom_kill") + field(&oc, "under_oom"),
                    pids_max: self.dirs.get(1).map_or(0, |p| field(&read(p.join("pids.events")), "max")),
                }
            }
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty once the sandbox's pid namespace is gone; a task still being released can
        // keep it busy for a moment: retry, quickly at first (about 0.5 s in all).
        for d in &self.dirs {
            let mut wait = std::time::Duration::from_micros(100);
            for _ in 0..20 {
                match fs::remove_dir(d) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(std::time::Duration::from_millis(50));
                    }
                    _ => break,
                }
            }
        }
    }
}

/// cgroup v2 forbids processes in a cgroup whose controllers are enabled for its children.
/// When `dir` (our own cgroup) holds only this process, it moves into a leaf
/// `palisade-supervisor-PID` child and enables memory and pids in `dir`; when `dir` already
/// delegates them, nothing to do. Returns where to create the sandbox's cgroup.
fn v2_enable(dir: &Path) -> io::Result<PathBuf> {
    if has_controllers(dir, "cgroup.subtree_control") {
        return Ok(dir.to_path_buf());
    }
    let procs = fs::read_to_string(dir.join("cgroup.procs"))?;
    let me = std::process::id().to_string();
    if procs.lines().any(|p| p.trim() != me) {
        return Err(io::Error::other(format!(
            "cgroup {} holds other processes, so its controllers cannot be delegated to a child; run Palisade in its own cgroup (e.g. `systemd-run --user --scope -p Delegate=yes palisade run ...`)",
            dir.display()
        )));
    }
    let leaf = dir.join(format!("palisade-supervisor-{me}"));
    match fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    write(&leaf.join("cgroup.procs"), &me)?;
    write(&dir.join("cgroup.subtree_control"), "+memory +pids")?;
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/9aa9\n1:cpu:/\n0::/\n";
    const HYBRID_MOUNTS: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
34 30 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 30 0:34 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 30 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// cgroup v2's way in (`Entry::Born`): a child made by `clone_into_cgroup` is in the
    /// cgroup from its first instruction. Root only; runs itself again under `unshare
    /// --mount` to mount a cgroup v2 hierarchy (no controllers needed) in a private mount
    /// namespace, so the host's mounts are untouched.
    #[test]
    fn a_child_is_born_in_a_v2_cgroup() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a cgroup v2 hierarchy needs root");
            return;
        }
        let me = std::env::current_exe().unwrap();
        let out = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(me)
            .args(["--exact", "sys::cgroup::tests::born_in_v2_inner", "--ignored", "--nocapture", "--test-threads=1"])
            .output()
            .expect("unshare (util-linux) runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        if text.contains("skipped:") {
            eprintln!("{text}");
            return;
        }
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
    }

    #[test]
    #[ignore = "run by a_child_is_born_in_a_v2_cgroup in a private mount namespace"]
    fn born_in_v2_inner() {
        let root = std::env::temp_dir().join(format!("palisade-cg2-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        let c = |p: &Path| super::super::ffi::cstr(p).unwrap();
        if let Err(e) = super::super::ffi::mount(&c(Path::new("none")), &c(&root), c"cgroup2", 0, None) {
            eprintln!("skipped: no cgroup v2 here ({e})");
            return;
        }
        let dir = root.join("born");
        fs::create_dir(&dir).unwrap();
        let cg = Cgroup { layout: Layout::V2 { parent: root.clone() }, dirs: vec![dir.clone()] };
        let Entry::Born(fd) = cg.entry().unwrap() else { panic!("v2 enters by birth") };
        // SAFETY: the child only pauses until killed (no lock or allocation after the fork).
        let pid = match unsafe { super::super::ffi::clone_into_cgroup(0, std::os::fd::AsRawFd::as_raw_fd(&fd)) } {
            Ok(0) => loop {
                // SAFETY: pause in the child until the parent kills it.
                unsafe { libc::pause() };
            },
            Ok(pid) => pid,
            Err(e) => {
                eprintln!("skipped: clone3 with CLONE_INTO_CGROUP refused here ({e})");
                return;
            }
        };
        let seen = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        drop(cg);
        // SAFETY: unmounting our own mount, in this private namespace.
        unsafe { libc::umount2(c(&root).as_ptr(), libc::MNT_DETACH) };
        let _ = fs::remove_dir(&root);
        assert!(seen.lines().any(|l| l == "0::/born"), "{seen}");
        assert_eq!(procs.trim(), pid.to_string());
    }

    #[test]
    fn sweeping_removes_dead_runs_and_dead_supervisors_leaves_only() {
        let dir = std::env::temp_dir().join(format!("palisade-sweep-{}", std::process::id()));
        let me = std::process::id();
        // A pid that cannot be alive: above the kernel's pid_max limit (2^22).
        let dead = 4_194_305;
        let names = [
            format!("palisade-{dead}"),
            format!("palisade-supervisor-{dead}"),
            format!("palisade-{me}"),
            format!("palisade-supervisor-{me}"),
            "someone-else".to_owned(),
        ];
        for n in &names {
            fs::create_dir_all(dir.join(n)).unwrap();
        }
        sweep(&dir);
        let mut left: Vec<String> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(left, [format!("palisade-{me}"), format!("palisade-supervisor-{me}"), "someone-else".to_owned()]);
    }

    #[test]
    fn a_hybrid_host_has_v1_memory_and_pids_beside_an_empty_v2() {
        let f = find(HYBRID_CGROUP, HYBRID_MOUNTS);
        assert_eq!(f.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(f.v1_memory.as_deref(), Some(Path::new("/sys/fs/cgroup/memory/process_api/9aa9")));
        assert_eq!(f.v1_pids.as_deref(), Some(Path::new("/sys/fs/cgroup/pids")));
    }

    #[test]
    fn a_pure_v2_host_with_a_user_slice() {
        let f = find(
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-u7.scope\n",
            "35 25 0:29 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(
            f.v2.as_deref(),
            Some(Path::new("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/run-u7.scope"))
        );
        assert_eq!((f.v1_memory, f.v1_pids), (None, None));
    }

    #[test]
    fn escaped_mount_points_and_event_fields() {
        assert_eq!(unescape("/a\\040b"), Path::new("/a b"));
        assert_eq!(field("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n", "oom_kill"), 2);
        assert_eq!(field("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n", "oom_kill"), 5);
        assert_eq!(field("max 7\n", "max"), 7);
    }
}
