//! The seccomp policy as data: which system calls a sandboxed coding agent may make.
//!
//! One filter, compiled by [`crate::bpf`] into a binary search:
//! - the architecture is checked first; the 32-bit entry point is killed and x32 calls return
//!   `ENOSYS`;
//! - the **allowlist** below is allowed; every system call not listed returns `ENOSYS`, so a
//!   call added to the kernel after this list was written is refused by default, and the C
//!   library falls back from `clone3` (whose flags seccomp cannot read) to `clone`;
//! - the **denylist** returns `EPERM` for the kernel attack surface a coding agent never
//!   needs;
//! - dangerous arguments of allowed calls return `EPERM`: namespace flags to `clone`,
//!   `TIOCSTI`/`TIOCLINUX` to `ioctl`, raw, packet and exotic socket families.

use std::collections::BTreeMap;

use crate::bpf::{Action, Asm, Insn, Label, NR, Stmt, arg_lo};
const ARCH: u32 = crate::bpf::ARCH;

/// System call numbers that the `libc` crate does not name yet (same on x86_64 and aarch64).
mod nr {
    #[cfg(target_arch = "x86_64")]
    pub const IO_PGETEVENTS: i64 = 333;
    #[cfg(not(target_arch = "x86_64"))]
    pub const IO_PGETEVENTS: i64 = 292;
    pub const CACHESTAT: i64 = 451;
    pub const MAP_SHADOW_STACK: i64 = 453;
    pub const FUTEX_WAKE: i64 = 454;
    pub const FUTEX_WAIT: i64 = 455;
    pub const FUTEX_REQUEUE: i64 = 456;
    pub const SETXATTRAT: i64 = 463;
    pub const GETXATTRAT: i64 = 464;
    pub const LISTXATTRAT: i64 = 465;
    pub const REMOVEXATTRAT: i64 = 466;
    pub const OPEN_TREE_ATTR: i64 = 467;
    pub const FILE_GETATTR: i64 = 468;
    pub const FILE_SETATTR: i64 = 469;
}

macro_rules! sys {
    ($($name:ident),* $(,)?) => { &[$((stringify!($name), paste_sys!($name))),*] };
}
macro_rules! paste_sys {
    ($name:ident) => {
        libc_sys::$name
    };
}

/// `libc::SYS_*` under their plain names, so the tables below read as system call names.
#[allow(dead_code)]
#[allow(non_upper_case_globals)]
mod libc_sys {
    macro_rules! reexport {
        ($($name:ident = $sys:ident),* $(,)?) => { $(pub const $name: i64 = libc::$sys as i64;)* };
    }
    reexport!(
        read = SYS_read,
        write = SYS_write,
        close = SYS_close,
        fstat = SYS_fstat,
        lseek = SYS_lseek,
        mmap = SYS_mmap,
        mprotect = SYS_mprotect,
        munmap = SYS_munmap,
        brk = SYS_brk,
        rt_sigaction = SYS_rt_sigaction,
        rt_sigprocmask = SYS_rt_sigprocmask,
        rt_sigreturn = SYS_rt_sigreturn,
        ioctl = SYS_ioctl,
        pread64 = SYS_pread64,
        pwrite64 = SYS_pwrite64,
        readv = SYS_readv,
        writev = SYS_writev,
        sched_yield = SYS_sched_yield,
        mremap = SYS_mremap,
        msync = SYS_msync,
        mincore = SYS_mincore,
        madvise = SYS_madvise,
        shmget = SYS_shmget,
        shmat = SYS_shmat,
        shmctl = SYS_shmctl,
        dup = SYS_dup,
        nanosleep = SYS_nanosleep,
        getitimer = SYS_getitimer,
        setitimer = SYS_setitimer,
        getpid = SYS_getpid,
        sendfile = SYS_sendfile,
        socket = SYS_socket,
        connect = SYS_connect,
        accept = SYS_accept,
        sendto = SYS_sendto,
        recvfrom = SYS_recvfrom,
        sendmsg = SYS_sendmsg,
        recvmsg = SYS_recvmsg,
        shutdown = SYS_shutdown,
        bind = SYS_bind,
        listen = SYS_listen,
        getsockname = SYS_getsockname,
        getpeername = SYS_getpeername,
        socketpair = SYS_socketpair,
        setsockopt = SYS_setsockopt,
        getsockopt = SYS_getsockopt,
        clone = SYS_clone,
        execve = SYS_execve,
        exit = SYS_exit,
        wait4 = SYS_wait4,
        kill = SYS_kill,
        uname = SYS_uname,
        semget = SYS_semget,
        semop = SYS_semop,
        semctl = SYS_semctl,
        shmdt = SYS_shmdt,
        msgget = SYS_msgget,
        msgsnd = SYS_msgsnd,
        msgrcv = SYS_msgrcv,
        msgctl = SYS_msgctl,
        fcntl = SYS_fcntl,
        flock = SYS_flock,
        fsync = SYS_fsync,
        fdatasync = SYS_fdatasync,
        truncate = SYS_truncate,
        ftruncate = SYS_ftruncate,
        getcwd = SYS_getcwd,
        chdir = SYS_chdir,
        fchdir = SYS_fchdir,
        fchmod = SYS_fchmod,
        fchown = SYS_fchown,
        umask = SYS_umask,
        gettimeofday = SYS_gettimeofday,
        getrlimit = SYS_getrlimit,
        getrusage = SYS_getrusage,
        sysinfo = SYS_sysinfo,
        times = SYS_times,
        getuid = SYS_getuid,
        getgid = SYS_getgid,
        setuid = SYS_setuid,
        setgid = SYS_setgid,
        geteuid = SYS_geteuid,
        getegid = SYS_getegid,
        setpgid = SYS_setpgid,
        getppid = SYS_getppid,
        setsid = SYS_setsid,
        setreuid = SYS_setreuid,
        setregid = SYS_setregid,
        getgroups = SYS_getgroups,
        setgroups = SYS_setgroups,
        setresuid = SYS_setresuid,
        getresuid = SYS_getresuid,
        setresgid = SYS_setresgid,
        getresgid = SYS_getresgid,
        getpgid = SYS_getpgid,
        setfsuid = SYS_setfsuid,
        setfsgid = SYS_setfsgid,
        getsid = SYS_getsid,
        capget = SYS_capget,
        capset = SYS_capset,
        rt_sigpending = SYS_rt_sigpending,
        rt_sigtimedwait = SYS_rt_sigtimedwait,
        rt_sigqueueinfo = SYS_rt_sigqueueinfo,
        rt_sigsuspend = SYS_rt_sigsuspend,
        sigaltstack = SYS_sigaltstack,
        personality = SYS_personality,
        statfs = SYS_statfs,
        fstatfs = SYS_fstatfs,
        getpriority = SYS_getpriority,
        setpriority = SYS_setpriority,
        sched_setparam = SYS_sched_setparam,
        sched_getparam = SYS_sched_getparam,
        sched_setscheduler = SYS_sched_setscheduler,
        sched_getscheduler = SYS_sched_getscheduler,
        sched_get_priority_max = SYS_sched_get_priority_max,
        sched_get_priority_min = SYS_sched_get_priority_min,
        sched_rr_get_interval = SYS_sched_rr_get_interval,
        mlock = SYS_mlock,
        munlock = SYS_munlock,
        mlockall = SYS_mlockall,
        munlockall = SYS_munlockall,
        prctl = SYS_prctl,
        setrlimit = SYS_setrlimit,
        sync = SYS_sync,
        gettid = SYS_gettid,
        readahead = SYS_readahead,
        setxattr = SYS_setxattr,
        lsetxattr = SYS_lsetxattr,
        fsetxattr = SYS_fsetxattr,
        getxattr = SYS_getxattr,
        lgetxattr = SYS_lgetxattr,
        fgetxattr = SYS_fgetxattr,
        listxattr = SYS_listxattr,
        llistxattr = SYS_llistxattr,
        flistxattr = SYS_flistxattr,
        removexattr = SYS_removexattr,
        lremovexattr = SYS_lremovexattr,
        fremovexattr = SYS_fremovexattr,
        tkill = SYS_tkill,
        futex = SYS_futex,
        sched_setaffinity = SYS_sched_setaffinity,
        sched_getaffinity = SYS_sched_getaffinity,
        io_setup = SYS_io_setup,
        io_destroy = SYS_io_destroy,
        io_getevents = SYS_io_getevents,
        io_submit = SYS_io_submit,
        io_cancel = SYS_io_cancel,
        getdents64 = SYS_getdents64,
        set_tid_address = SYS_set_tid_address,
        restart_syscall = SYS_restart_syscall,
        semtimedop = SYS_semtimedop,
        fadvise64 = SYS_fadvise64,
        timer_create = SYS_timer_create,
        timer_settime = SYS_timer_settime,
        timer_gettime = SYS_timer_gettime,
        timer_getoverrun = SYS_timer_getoverrun,
        timer_delete = SYS_timer_delete,
        clock_gettime = SYS_clock_gettime,
        clock_getres = SYS_clock_getres,
        clock_nanosleep = SYS_clock_nanosleep,
        exit_group = SYS_exit_group,
        epoll_ctl = SYS_epoll_ctl,
        tgkill = SYS_tgkill,
        mbind = SYS_mbind,
        set_mempolicy = SYS_set_mempolicy,
        get_mempolicy = SYS_get_mempolicy,
        mq_open = SYS_mq_open,
        mq_unlink = SYS_mq_unlink,
        mq_timedsend = SYS_mq_timedsend,
        mq_timedreceive = SYS_mq_timedreceive,
        mq_notify = SYS_mq_notify,
        mq_getsetattr = SYS_mq_getsetattr,
        waitid = SYS_waitid,
        ioprio_set = SYS_ioprio_set,
        ioprio_get = SYS_ioprio_get,
        inotify_add_watch = SYS_inotify_add_watch,
        inotify_rm_watch = SYS_inotify_rm_watch,
        openat = SYS_openat,
        mkdirat = SYS_mkdirat,
        mknodat = SYS_mknodat,
        fchownat = SYS_fchownat,
        newfstatat = SYS_newfstatat,
        unlinkat = SYS_unlinkat,
        renameat = SYS_renameat,
        linkat = SYS_linkat,
        symlinkat = SYS_symlinkat,
        readlinkat = SYS_readlinkat,
        fchmodat = SYS_fchmodat,
        faccessat = SYS_faccessat,
        pselect6 = SYS_pselect6,
        ppoll = SYS_ppoll,
        set_robust_list = SYS_set_robust_list,
        get_robust_list = SYS_get_robust_list,
        splice = SYS_splice,
        tee = SYS_tee,
        sync_file_range = SYS_sync_file_range,
        vmsplice = SYS_vmsplice,
        utimensat = SYS_utimensat,
        epoll_pwait = SYS_epoll_pwait,
        timerfd_create = SYS_timerfd_create,
        fallocate = SYS_fallocate,
        timerfd_settime = SYS_timerfd_settime,
        timerfd_gettime = SYS_timerfd_gettime,
        accept4 = SYS_accept4,
        signalfd4 = SYS_signalfd4,
        eventfd2 = SYS_eventfd2,
        epoll_create1 = SYS_epoll_create1,
        dup3 = SYS_dup3,
        pipe2 = SYS_pipe2,
        inotify_init1 = SYS_inotify_init1,
        preadv = SYS_preadv,
        pwritev = SYS_pwritev,
        rt_tgsigqueueinfo = SYS_rt_tgsigqueueinfo,
        recvmmsg = SYS_recvmmsg,
        prlimit64 = SYS_prlimit64,
        syncfs = SYS_syncfs,
        sendmmsg = SYS_sendmmsg,
        getcpu = SYS_getcpu,
        sched_setattr = SYS_sched_setattr,
        sched_getattr = SYS_sched_getattr,
        renameat2 = SYS_renameat2,
        seccomp = SYS_seccomp,
        getrandom = SYS_getrandom,
        memfd_create = SYS_memfd_create,
        execveat = SYS_execveat,
        membarrier = SYS_membarrier,
        mlock2 = SYS_mlock2,
        copy_file_range = SYS_copy_file_range,
        preadv2 = SYS_preadv2,
        pwritev2 = SYS_pwritev2,
        pkey_mprotect = SYS_pkey_mprotect,
        pkey_alloc = SYS_pkey_alloc,
        pkey_free = SYS_pkey_free,
        statx = SYS_statx,
        rseq = SYS_rseq,
        pidfd_send_signal = SYS_pidfd_send_signal,
        pidfd_open = SYS_pidfd_open,
        close_range = SYS_close_range,
        openat2 = SYS_openat2,
        faccessat2 = SYS_faccessat2,
        epoll_pwait2 = SYS_epoll_pwait2,
        landlock_create_ruleset = SYS_landlock_create_ruleset,
        landlock_add_rule = SYS_landlock_add_rule,
        landlock_restrict_self = SYS_landlock_restrict_self,
        futex_waitv = SYS_futex_waitv,
        set_mempolicy_home_node = SYS_set_mempolicy_home_node,
        fchmodat2 = SYS_fchmodat2,
        mseal = SYS_mseal,
        clone3 = SYS_clone3,
        // Denied below.
        mount = SYS_mount,
        umount2 = SYS_umount2,
        pivot_root = SYS_pivot_root,
        chroot = SYS_chroot,
        unshare = SYS_unshare,
        setns = SYS_setns,
        open_tree = SYS_open_tree,
        move_mount = SYS_move_mount,
        fsopen = SYS_fsopen,
        fsconfig = SYS_fsconfig,
        fsmount = SYS_fsmount,
        fspick = SYS_fspick,
        mount_setattr = SYS_mount_setattr,
        bpf = SYS_bpf,
        perf_event_open = SYS_perf_event_open,
        userfaultfd = SYS_userfaultfd,
        io_uring_setup = SYS_io_uring_setup,
        io_uring_enter = SYS_io_uring_enter,
        io_uring_register = SYS_io_uring_register,
        keyctl = SYS_keyctl,
        add_key = SYS_add_key,
        request_key = SYS_request_key,
        ptrace = SYS_ptrace,
        process_vm_readv = SYS_process_vm_readv,
        process_vm_writev = SYS_process_vm_writev,
        pidfd_getfd = SYS_pidfd_getfd,
        process_madvise = SYS_process_madvise,
        process_mrelease = SYS_process_mrelease,
        kcmp = SYS_kcmp,
        kexec_load = SYS_kexec_load,
        kexec_file_load = SYS_kexec_file_load,
        init_module = SYS_init_module,
        finit_module = SYS_finit_module,
        delete_module = SYS_delete_module,
        open_by_handle_at = SYS_open_by_handle_at,
        name_to_handle_at = SYS_name_to_handle_at,
        fanotify_init = SYS_fanotify_init,
        acct = SYS_acct,
        swapon = SYS_swapon,
        swapoff = SYS_swapoff,
        reboot = SYS_reboot,
        sethostname = SYS_sethostname,
        setdomainname = SYS_setdomainname,
        settimeofday = SYS_settimeofday,
        clock_settime = SYS_clock_settime,
        clock_adjtime = SYS_clock_adjtime,
        adjtimex = SYS_adjtimex,
        syslog = SYS_syslog,
        vhangup = SYS_vhangup,
        quotactl = SYS_quotactl,
        quotactl_fd = SYS_quotactl_fd,
        memfd_secret = SYS_memfd_secret,
        lookup_dcookie = SYS_lookup_dcookie,
    );
    #[cfg(target_arch = "x86_64")]
    reexport!(
        open = SYS_open,
        stat = SYS_stat,
        lstat = SYS_lstat,
        poll = SYS_poll,
        access = SYS_access,
        pipe = SYS_pipe,
        select = SYS_select,
        dup2 = SYS_dup2,
        pause = SYS_pause,
        alarm = SYS_alarm,
        fork = SYS_fork,
        vfork = SYS_vfork,
        getdents = SYS_getdents,
        rename = SYS_rename,
        mkdir = SYS_mkdir,
        rmdir = SYS_rmdir,
        creat = SYS_creat,
        link = SYS_link,
        unlink = SYS_unlink,
        symlink = SYS_symlink,
        readlink = SYS_readlink,
        chmod = SYS_chmod,
        chown = SYS_chown,
        lchown = SYS_lchown,
        getpgrp = SYS_getpgrp,
        utime = SYS_utime,
        mknod = SYS_mknod,
        arch_prctl = SYS_arch_prctl,
        time = SYS_time,
        epoll_create = SYS_epoll_create,
        epoll_wait = SYS_epoll_wait,
        utimes = SYS_utimes,
        inotify_init = SYS_inotify_init,
        futimesat = SYS_futimesat,
        signalfd = SYS_signalfd,
        eventfd = SYS_eventfd,
        set_thread_area = SYS_set_thread_area,
        get_thread_area = SYS_get_thread_area,
        iopl = SYS_iopl,
        ioperm = SYS_ioperm,
        modify_ldt = SYS_modify_ldt,
        uselib = SYS_uselib,
        ustat = SYS_ustat,
        sysfs = SYS_sysfs,
        _sysctl = SYS__sysctl,
    );
}

/// System calls a coding agent and its tools need: files, memory, processes, threads,
/// signals, time, sockets (further restricted below), IPC within the sandbox.
const ALLOW: &[(&str, i64)] = sys!(
    read,
    write,
    close,
    fstat,
    lseek,
    mmap,
    mprotect,
    munmap,
    brk,
    rt_sigaction,
    rt_sigprocmask,
    rt_sigreturn,
    ioctl,
    pread64,
    pwrite64,
    readv,
    writev,
    sched_yield,
    mremap,
    msync,
    mincore,
    madvise,
    shmget,
    shmat,
    shmctl,
    dup,
    nanosleep,
    getitimer,
    setitimer,
    getpid,
    sendfile,
    socket,
    connect,
    accept,
    sendto,
    recvfrom,
    sendmsg,
    recvmsg,
    shutdown,
    bind,
    listen,
    getsockname,
    getpeername,
    socketpair,
    setsockopt,
    getsockopt,
    clone,
    execve,
    exit,
    wait4,
    kill,
    uname,
    semget,
    semop,
    semctl,
    shmdt,
    msgget,
    msgsnd,
    msgrcv,
    msgctl,
    fcntl,
    flock,
    fsync,
    fdatasync,
    truncate,
    ftruncate,
    getcwd,
    chdir,
    fchdir,
    fchmod,
    fchown,
    umask,
    gettimeofday,
    getrlimit,
    getrusage,
    sysinfo,
    times,
    getuid,
    getgid,
    setuid,
    setgid,
    geteuid,
    getegid,
    setpgid,
    getppid,
    setsid,
    setreuid,
    setregid,
    getgroups,
    setgroups,
    setresuid,
    getresuid,
    setresgid,
    getresgid,
    getpgid,
    setfsuid,
    setfsgid,
    getsid,
    capget,
    capset,
    rt_sigpending,
    rt_sigtimedwait,
    rt_sigqueueinfo,
    rt_sigsuspend,
    sigaltstack,
    personality,
    statfs,
    fstatfs,
    getpriority,
    setpriority,
    sched_setparam,
    sched_getparam,
    sched_setscheduler,
    sched_getscheduler,
    sched_get_priority_max,
    sched_get_priority_min,
    sched_rr_get_interval,
    mlock,
    munlock,
    mlockall,
    munlockall,
    prctl,
    setrlimit,
    sync,
    gettid,
    readahead,
    setxattr,
    lsetxattr,
    fsetxattr,
    getxattr,
    lgetxattr,
    fgetxattr,
    listxattr,
    llistxattr,
    flistxattr,
    removexattr,
    lremovexattr,
    fremovexattr,
    tkill,
    futex,
    sched_setaffinity,
    sched_getaffinity,
    io_setup,
    io_destroy,
    io_getevents,
    io_submit,
    io_cancel,
    getdents64,
    set_tid_address,
    restart_syscall,
    semtimedop,
    fadvise64,
    timer_create,
    timer_settime,
    timer_gettime,
    timer_getoverrun,
    timer_delete,
    clock_gettime,
    clock_getres,
    clock_nanosleep,
    exit_group,
    epoll_ctl,
    tgkill,
    mbind,
    set_mempolicy,
    get_mempolicy,
    mq_open,
    mq_unlink,
    mq_timedsend,
    mq_timedreceive,
    mq_notify,
    mq_getsetattr,
    waitid,
    ioprio_set,
    ioprio_get,
    inotify_add_watch,
    inotify_rm_watch,
    openat,
    mkdirat,
    mknodat,
    fchownat,
    newfstatat,
    unlinkat,
    renameat,
    linkat,
    symlinkat,
    readlinkat,
    fchmodat,
    faccessat,
    pselect6,
    ppoll,
    set_robust_list,
    get_robust_list,
    splice,
    tee,
    sync_file_range,
    vmsplice,
    utimensat,
    epoll_pwait,
    timerfd_create,
    fallocate,
    timerfd_settime,
    timerfd_gettime,
    accept4,
    signalfd4,
    eventfd2,
    epoll_create1,
    dup3,
    pipe2,
    inotify_init1,
    preadv,
    pwritev,
    rt_tgsigqueueinfo,
    recvmmsg,
    prlimit64,
    syncfs,
    sendmmsg,
    getcpu,
    sched_setattr,
    sched_getattr,
    renameat2,
    seccomp,
    getrandom,
    memfd_create,
    execveat,
    membarrier,
    mlock2,
    copy_file_range,
    preadv2,
    pwritev2,
    pkey_mprotect,
    pkey_alloc,
    pkey_free,
    statx,
    rseq,
    pidfd_send_signal,
    pidfd_open,
    close_range,
    openat2,
    faccessat2,
    epoll_pwait2,
    landlock_create_ruleset,
    landlock_add_rule,
    landlock_restrict_self,
    futex_waitv,
    set_mempolicy_home_node,
    fchmodat2,
    mseal,
);

#[cfg(target_arch = "x86_64")]
const ALLOW_ARCH: &[(&str, i64)] = sys!(
    open,
    stat,
    lstat,
    poll,
    access,
    pipe,
    select,
    dup2,
    pause,
    alarm,
    fork,
    vfork,
    getdents,
    rename,
    mkdir,
    rmdir,
    creat,
    link,
    unlink,
    symlink,
    readlink,
    chmod,
    chown,
    lchown,
    getpgrp,
    utime,
    mknod,
    arch_prctl,
    time,
    epoll_create,
    epoll_wait,
    utimes,
    inotify_init,
    futimesat,
    signalfd,
    eventfd,
    set_thread_area,
    get_thread_area,
);
#[cfg(not(target_arch = "x86_64"))]
const ALLOW_ARCH: &[(&str, i64)] = &[];

const ALLOW_NEW: &[(&str, i64)] = &[
    ("io_pgetevents", nr::IO_PGETEVENTS),
    ("cachestat", nr::CACHESTAT),
    ("map_shadow_stack", nr::MAP_SHADOW_STACK),
    ("futex_wake", nr::FUTEX_WAKE),
    ("futex_wait", nr::FUTEX_WAIT),
    ("futex_requeue", nr::FUTEX_REQUEUE),
    ("setxattrat", nr::SETXATTRAT),
    ("getxattrat", nr::GETXATTRAT),
    ("listxattrat", nr::LISTXATTRAT),
    ("removexattrat", nr::REMOVEXATTRAT),
    ("file_getattr", nr::FILE_GETATTR),
    ("file_setattr", nr::FILE_SETATTR),
];

/// Refused with `EPERM` whatever the arguments: mounts and namespaces (the sandbox's own
/// view must stay as built), kernel attack surface (bpf, perf, userfaultfd, io_uring, which
/// bypasses seccomp for the operations it carries), access to other processes' memory and
/// descriptors, keyrings (not namespaced), modules, kexec, and host administration.
const DENY: &[(&str, i64)] = sys!(
    mount,
    umount2,
    pivot_root,
    chroot,
    unshare,
    setns,
    open_tree,
    move_mount,
    fsopen,
    fsconfig,
    fsmount,
    fspick,
    mount_setattr,
    bpf,
    perf_event_open,
    userfaultfd,
    io_uring_setup,
    io_uring_enter,
    io_uring_register,
    keyctl,
    add_key,
    request_key,
    ptrace,
    process_vm_readv,
    process_vm_writev,
    pidfd_getfd,
    process_madvise,
    process_mrelease,
    kcmp,
    kexec_load,
    kexec_file_load,
    init_module,
    finit_module,
    delete_module,
    open_by_handle_at,
    name_to_handle_at,
    fanotify_init,
    acct,
    swapon,
    swapoff,
    reboot,
    sethostname,
    setdomainname,
    settimeofday,
    clock_settime,
    clock_adjtime,
    adjtimex,
    syslog,
    vhangup,
    quotactl,
    quotactl_fd,
    memfd_secret,
    lookup_dcookie,
);

#[cfg(target_arch = "x86_64")]
const DENY_ARCH: &[(&str, i64)] = sys!(iopl, ioperm, modify_ldt, uselib, ustat, sysfs, _sysctl);
#[cfg(not(target_arch = "x86_64"))]
const DENY_ARCH: &[(&str, i64)] = &[];

const DENY_NEW: &[(&str, i64)] = &[("open_tree_attr", nr::OPEN_TREE_ATTR)];

/// Every system call the allowlist lets through, by name.
pub fn allowed() -> impl Iterator<Item = (&'static str, i64)> {
    ALLOW.iter().chain(ALLOW_ARCH).chain(ALLOW_NEW).copied()
}

/// Every system call refused with `EPERM` whatever its arguments, by name.
pub fn denied() -> impl Iterator<Item = (&'static str, i64)> {
    DENY.iter().chain(DENY_ARCH).chain(DENY_NEW).copied()
}

/// An error building the filter (a bug: the tables above are fixed).
#[derive(Debug, thiserror::Error)]
#[error("building the seccomp filter: {0}")]
pub struct FilterError(String);

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

const ENOSYS: Action = Action::Errno(libc::ENOSYS as u16);
const EPERM: Action = Action::Errno(libc::EPERM as u16);

/// Namespace flags refused in `clone` (`CLONE_NEWTIME` is 0x80).
const CLONE_NAMESPACES: u32 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u32
    | 0x80;
const TIOCLINUX: u32 = 0x541C;
const SOCK_PACKET: u32 = 10;

/// Variations of the filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterOptions {
    /// Refuse IPv4 and IPv6 sockets altogether (degraded mode: no network namespace).
    pub refuse_inet: bool,
    /// Refuse `socket(AF_UNIX)` (degraded mode: host sockets such as the Docker daemon's are
    /// reachable by path, which Landlock before ABI 9 does not restrict); `socketpair` stays.
    pub refuse_unix_socket: bool,
    /// Return `USER_NOTIF` for `execve` and `execveat` instead of allowing them, so that the
    /// supervisor (holding the filter's listener) records every exec and lets it continue.
    /// Part of this one filter rather than a second one: every filter in a chain runs on
    /// every system call, so a second one would tax `read` and `stat` as well as `execve`.
    pub notify_exec: bool,
}

/// The filter, as BPF instructions: architecture check (anything else is killed), the x32
/// entry point refused, argument checks for `clone`, `ioctl`, `socket`, `socketpair` and
/// `personality`, then a binary search over the allow and deny tables; any other number
/// returns `ENOSYS`.
pub fn filter(opts: FilterOptions) -> Result<Vec<Insn>, FilterError> {
    let mut table: BTreeMap<u32, Action> = BTreeMap::new();
    for (_, n) in allowed() {
        table.insert(n as u32, Action::Allow);
    }
    for (_, n) in denied() {
        table.insert(n as u32, EPERM);
    }
    if opts.notify_exec {
        table.insert(libc_sys::execve as u32, Action::UserNotif);
        table.insert(libc_sys::execveat as u32, Action::UserNotif);
    }
    let special = [libc_sys::clone, libc_sys::ioctl, libc_sys::socket, libc_sys::socketpair, libc_sys::personality];
    for n in special {
        table.remove(&(n as u32));
    }
    let mut a = Asm::default();
    a.push(Stmt::Load(ARCH));
    let arch_ok = a.label();
    a.push(Stmt::IfEq(AUDIT_ARCH, arch_ok)).push(Stmt::Ret(Action::KillProcess)).push(Stmt::Mark(arch_ok));
    a.push(Stmt::Load(NR));
    if cfg!(target_arch = "x86_64") {
        // x32 system calls share the architecture value and set bit 30 of the number.
        let x32 = a.label();
        let native = a.label();
        a.push(Stmt::IfGe(0x4000_0000, x32)).push(Stmt::IfGe(0, native));
        a.push(Stmt::Mark(x32)).push(Stmt::Ret(ENOSYS)).push(Stmt::Mark(native));
    }
    let blocks: Vec<(i64, Label)> = special.iter().map(|n| (*n, a.label())).collect();
    for (n, l) in &blocks {
        a.push(Stmt::IfEq(*n as u32, *l));
    }
    let entries: Vec<(u32, Action)> = table.into_iter().collect();
    a.search(&entries, ENOSYS);
    for (n, l) in blocks {
        a.push(Stmt::Mark(l));
        argument_checks(&mut a, n, opts);
    }
    a.assemble().map_err(FilterError)
}

/// The argument checks of one special system call; every path ends in a return.
fn argument_checks(a: &mut Asm, nr: i64, opts: FilterOptions) {
    let allow = a.label();
    let deny = a.label();
    match nr {
        n if n == libc_sys::clone => {
            a.push(Stmt::Load(arg_lo(0))).push(Stmt::IfSet(CLONE_NAMESPACES, deny));
        }
        n if n == libc_sys::ioctl => {
            a.push(Stmt::Load(arg_lo(1)))
                .push(Stmt::IfEq(libc::TIOCSTI as u32, deny))
                .push(Stmt::IfEq(TIOCLINUX, deny));
        }
        n if n == libc_sys::socket => {
            let inet = a.label();
            let netlink = a.label();
            a.push(Stmt::Load(arg_lo(0)));
            if !opts.refuse_unix_socket {
                a.push(Stmt::IfEq(libc::AF_UNIX as u32, allow));
            }
            if !opts.refuse_inet {
                a.push(Stmt::IfEq(libc::AF_INET as u32, inet)).push(Stmt::IfEq(libc::AF_INET6 as u32, inet));
            }
            a.push(Stmt::IfEq(libc::AF_NETLINK as u32, netlink)).push(Stmt::Ret(EPERM));
            a.push(Stmt::Mark(inet))
                .push(Stmt::Load(arg_lo(1)))
                .push(Stmt::And(0xf))
                .push(Stmt::IfEq(libc::SOCK_RAW as u32, deny))
                .push(Stmt::IfEq(SOCK_PACKET, deny))
                .push(Stmt::Ret(Action::Allow));
            a.push(Stmt::Mark(netlink))
                .push(Stmt::Load(arg_lo(2)))
                .push(Stmt::IfEq(libc::NETLINK_ROUTE as u32, allow))
                .push(Stmt::Ret(EPERM));
        }
        n if n == libc_sys::socketpair => {
            a.push(Stmt::Load(arg_lo(0))).push(Stmt::IfEq(libc::AF_UNIX as u32, allow)).push(Stmt::Ret(EPERM));
        }
        _ => {
            // personality: only the values the C library and common tools use.
            a.push(Stmt::Load(arg_lo(0)));
            for v in [0u32, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
                a.push(Stmt::IfEq(v, allow));
            }
            a.push(Stmt::Ret(EPERM));
        }
    }
    a.push(Stmt::Ret(Action::Allow));
    a.push(Stmt::Mark(allow)).push(Stmt::Ret(Action::Allow));
    a.push(Stmt::Mark(deny)).push(Stmt::Ret(EPERM));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_consistent() {
        let allow: Vec<i64> = allowed().map(|(_, n)| n).collect();
        for (name, n) in denied() {
            assert!(!allow.contains(&n), "{name} is both allowed and denied");
        }
        let mut sorted = allow.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), allow.len(), "duplicate in the allowlist");
        assert!(!allow.contains(&libc_sys::clone3), "clone3 must stay ENOSYS so libc falls back to clone");
    }

    use crate::bpf::{Data, interpret};

    fn run(nr: i64, args: [u64; 6]) -> Action {
        static PROG: std::sync::OnceLock<Vec<Insn>> = std::sync::OnceLock::new();
        let prog = PROG.get_or_init(|| filter(FilterOptions::default()).unwrap());
        let r = interpret(prog, &Data { nr: nr as i32, arch: AUDIT_ARCH, args }).unwrap();
        [Action::Allow, EPERM, ENOSYS, Action::KillProcess, Action::UserNotif]
            .into_iter()
            .find(|a| a.ret() == r)
            .expect("known action")
    }

    #[test]
    fn every_number_gets_its_table_action() {
        let prog = filter(FilterOptions::default()).unwrap();
        assert!(prog.len() < 4096);
        let allow: Vec<i64> = allowed().map(|(_, n)| n).collect();
        let deny: Vec<i64> = denied().map(|(_, n)| n).collect();
        let special = [libc_sys::clone, libc_sys::ioctl, libc_sys::socket, libc_sys::socketpair, libc_sys::personality];
        for nr in 0..1024i64 {
            if special.contains(&nr) {
                continue;
            }
            let want = if allow.contains(&nr) {
                Action::Allow
            } else if deny.contains(&nr) {
                EPERM
            } else {
                ENOSYS
            };
            assert_eq!(run(nr, [0; 6]), want, "system call {nr}");
        }
    }

    #[test]
    fn foreign_architectures_are_killed_and_x32_refused() {
        let prog = filter(FilterOptions::default()).unwrap();
        let r = interpret(&prog, &Data { nr: libc_sys::getpid as i32, arch: 0x4000_0003, args: [0; 6] }).unwrap();
        assert_eq!(r, Action::KillProcess.ret());
        if cfg!(target_arch = "x86_64") {
            assert_eq!(run(libc_sys::getpid | 0x4000_0000, [0; 6]), ENOSYS);
        }
    }

    #[test]
    fn argument_checks() {
        let thread =
            (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD) as u64;
        assert_eq!(run(libc_sys::clone, [thread, 0, 0, 0, 0, 0]), Action::Allow);
        assert_eq!(run(libc_sys::clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), Action::Allow);
        for f in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWPID, libc::CLONE_NEWNET, 0x80] {
            assert_eq!(run(libc_sys::clone, [f as u64 | libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), EPERM, "{f:#x}");
        }
        assert_eq!(run(libc_sys::ioctl, [0, libc::TIOCSTI, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            run(libc_sys::ioctl, [0, 0xdead_beef_0000_0000 | libc::TIOCSTI, 0, 0, 0, 0]),
            EPERM,
            "high bits ignored"
        );
        assert_eq!(run(libc_sys::ioctl, [0, u64::from(TIOCLINUX), 0, 0, 0, 0]), EPERM);
        assert_eq!(run(libc_sys::ioctl, [0, libc::TCGETS, 0, 0, 0, 0]), Action::Allow);
        let sock = |d: i32, t: i32, p: i32| run(libc_sys::socket, [d as u64, t as u64, p as u64, 0, 0, 0]);
        assert_eq!(sock(libc::AF_UNIX, libc::SOCK_STREAM, 0), Action::Allow);
        assert_eq!(sock(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0), Action::Allow);
        assert_eq!(sock(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0), Action::Allow);
        assert_eq!(sock(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 1), EPERM);
        assert_eq!(sock(libc::AF_INET6, SOCK_PACKET as i32, 0), EPERM);
        assert_eq!(sock(libc::AF_PACKET, libc::SOCK_RAW, 0), EPERM);
        assert_eq!(sock(libc::AF_VSOCK, libc::SOCK_STREAM, 0), EPERM);
        assert_eq!(sock(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE), Action::Allow);
        assert_eq!(sock(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT), EPERM);
        assert_eq!(run(libc_sys::socketpair, [libc::AF_UNIX as u64, 1, 0, 0, 0, 0]), Action::Allow);
        assert_eq!(run(libc_sys::socketpair, [libc::AF_INET as u64, 1, 0, 0, 0, 0]), EPERM);
        assert_eq!(run(libc_sys::personality, [0xffff_ffff, 0, 0, 0, 0, 0]), Action::Allow);
        assert_eq!(run(libc_sys::personality, [0x0040000, 0, 0, 0, 0, 0]), EPERM);
    }

    #[test]
    fn exec_notification_changes_only_exec() {
        let plain = filter(FilterOptions::default()).unwrap();
        let prog = filter(FilterOptions { notify_exec: true, ..FilterOptions::default() }).unwrap();
        let run = |p: &[Insn], nr: i64| interpret(p, &Data { nr: nr as i32, arch: AUDIT_ARCH, args: [0; 6] }).unwrap();
        assert_eq!(run(&plain, libc_sys::execve), Action::Allow.ret());
        assert_eq!(run(&prog, libc_sys::execve), Action::UserNotif.ret());
        assert_eq!(run(&prog, libc_sys::execveat), Action::UserNotif.ret());
        for nr in (0..1024).filter(|n| ![libc_sys::execve, libc_sys::execveat].contains(n)) {
            assert_eq!(run(&prog, nr), run(&plain, nr), "syscall {nr}");
        }
    }

    #[test]
    fn degraded_options_refuse_inet_and_unix_sockets() {
        let prog =
            filter(FilterOptions { refuse_inet: true, refuse_unix_socket: true, ..FilterOptions::default() }).unwrap();
        let sock = |d: i32, t: i32| {
            let args = [d as u64, t as u64, 0, 0, 0, 0];
            interpret(&prog, &Data { nr: libc_sys::socket as i32, arch: AUDIT_ARCH, args }).unwrap()
        };
        assert_eq!(sock(libc::AF_INET, libc::SOCK_STREAM), EPERM.ret());
        assert_eq!(sock(libc::AF_INET6, libc::SOCK_DGRAM), EPERM.ret());
        assert_eq!(sock(libc::AF_UNIX, libc::SOCK_STREAM), EPERM.ret());
        let pair = [libc::AF_UNIX as u64, 1, 0, 0, 0, 0];
        let r = interpret(&prog, &Data { nr: libc_sys::socketpair as i32, arch: AUDIT_ARCH, args: pair }).unwrap();
        assert_eq!(r, Action::Allow.ret());
    }
}
