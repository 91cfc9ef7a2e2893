//! Resolving COMMAND and starting one generation of it.
//!
//! Everything the child needs is prepared before `fork`; the `pre_exec` hook
//! only makes raw syscalls.

use std::borrow::Cow;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use command_fds::{CommandFdExt, FdMapping};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::process::{Pid, Signal};

use hotsup_protocol::{ENV_FD, ENV_GENERATION};

use crate::exec_env::ExecEnv;
use crate::identity::Identity;
use crate::listeners::Listener;

/// Variables meant for hotsup itself, which must not reach the app: a child
/// that sent `STOPPING=1` to hotsup's own systemd would get the whole unit
/// stopped. Children get hotsup's own `NOTIFY_SOCKET` instead. hotsup puts
/// the listeners at fd 3 onwards and never sets `LISTEN_FDS_FIRST_FD`: an
/// inherited one would send the app looking for them elsewhere.
const SCRUBBED_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "HOTSUP_FD",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "LISTEN_FDS_FIRST_FD",
    ENV_WORKER,
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    ENV_EXE_FD,
];

/// Whether `name` is one of hotsup's own variables, which `--env` and
/// `--env-file` may not set: the protocols between hotsup and its children
/// depend on them.
pub fn is_reserved_env(name: &str) -> bool {
    SCRUBBED_ENV.contains(&name) || name.starts_with("HOTSUP_")
}

/// Why COMMAND cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("COMMAND {0:?} not found in PATH")]
    NotInPath(OsString),
    #[error("COMMAND {0:?} does not exist")]
    Missing(PathBuf),
    #[error("COMMAND {0:?} is a directory")]
    Directory(PathBuf),
    #[error("COMMAND {0:?} is not executable (no x permission)")]
    NotExecutable(PathBuf),
    #[error("COMMAND {path:?}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Finds the file COMMAND names now. Called again at every upgrade, so a
/// binary replaced at the same path (or earlier in PATH) is picked up.
pub fn resolve(program: &OsStr) -> Result<PathBuf, ResolveError> {
    let as_path = Path::new(program);
    let path = if as_path.components().count() > 1 || program.as_encoded_bytes().contains(&b'/') {
        as_path.to_path_buf()
    } else {
        which::which(program).map_err(|_| ResolveError::NotInPath(program.to_owned()))?
    };
    let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ResolveError::Missing(path.clone()),
        _ => ResolveError::Io {
            path: path.clone(),
            source: e,
        },
    })?;
    if meta.is_dir() {
        return Err(ResolveError::Directory(path));
    }
    if meta.permissions().mode() & 0o111 == 0
        || rustix::fs::access(&path, rustix::fs::Access::EXEC_OK).is_err()
    {
        return Err(ResolveError::NotExecutable(path));
    }
    Ok(path)
}

/// A started child: its pid (also its process group id) and, in native
/// mode, the supervisor's end of its channel.
pub struct Spawned {
    pub pid: Pid,
    pub channel: Option<OwnedFd>,
}

/// How a child receives the listeners.
pub enum Pass<'a> {
    /// A `SOCK_SEQPACKET` channel at the fd named by `HOTSUP_FD`.
    Native,
    /// systemd socket activation: the listeners at fds 3, 4, ...
    Systemd(&'a [std::sync::Arc<Listener>]),
}

/// The hidden subcommand through which hotsup re-executes itself in the
/// child to set `LISTEN_PID` to the child's own pid before running the app.
pub const EXEC_LISTEN_PID: &str = "__exec-listen-pid";

/// What to start.
pub struct Spec<'a> {
    pub program: &'a Path,
    pub argv0: &'a OsStr,
    pub args: &'a [OsString],
    pub generation: u64,
    /// The worker's slot in its generation's pool, 0 to N-1.
    pub worker: u32,
    pub notify_socket: Option<&'a Path>,
    /// Soft RLIMIT_NOFILE for the child: hotsup raises its own to hold many
    /// sockets, but a child (select()-based ones above all) should start
    /// with the limit hotsup was given.
    pub nofile: Option<u64>,
    /// A pinned executable's descriptor that must survive exec, because the
    /// program is run as `/proc/self/fd/N`.
    pub exe_fd: Option<ExeFd>,
    /// The generation's `cgroup.procs`, open for writing: the child moves
    /// itself in before anything else (see [`crate::cgroup`]).
    pub cgroup: Option<RawFd>,
    pub pass: Pass<'a>,
    /// `--user`/`--group`: the credentials the child switches to.
    pub identity: Option<&'a Identity>,
    /// `--chdir`, `--env`, `--env-file`, `--umask`, `--rlimit`.
    pub exec: &'a ExecEnv,
}

/// Everything the child does between fork and exec, prepared before fork.
struct Setup {
    cgroup: Option<RawFd>,
    /// fds to keep open across exec: the channel, a pinned executable.
    keep: [Option<RawFd>; 2],
    hotsup_pid: Pid,
    nofile: Option<u64>,
    /// `--rlimit`s, set before the credential switch: only hotsup's
    /// privileges may raise a hard limit.
    rlimits: Vec<(rustix::process::Resource, rustix::process::Rlimit)>,
    umask: Option<rustix::fs::Mode>,
    creds: Option<Creds>,
    /// `--chdir`, entered after the credential switch.
    chdir: Option<CString>,
}

/// Credentials copied out of an [`Identity`] before fork, for the child to
/// switch to without allocating.
struct Creds {
    uid: Option<rustix::process::Uid>,
    gid: rustix::process::Gid,
    groups: Vec<rustix::process::Gid>,
}

/// See [`Spec::exe_fd`].
#[derive(Debug, Clone, Copy)]
pub struct ExeFd {
    pub fd: RawFd,
    /// Whether the app itself needs it (a `#!` script, which its
    /// interpreter opens by that path); otherwise only the `--fds systemd`
    /// step does, and it closes the fd on its own exec.
    pub app_keeps: bool,
}

/// The worker's slot, 0 to N-1 (`--workers N`), for the app.
pub const ENV_WORKER: &str = "HOTSUP_WORKER";

/// Tells the `--fds systemd` step which fd to close on its exec of the app.
const ENV_EXE_FD: &str = "HOTSUP_EXE_FD";

/// Starts one generation.
///
/// The child runs in a new process group (so its whole tree can be killed),
/// as `spec.identity` if given, and receives SIGTERM if hotsup dies.
pub fn spawn(spec: &Spec<'_>) -> io::Result<Spawned> {
    let hotsup_pid = rustix::process::getpid();
    // exec runs after the child's chdir: a relative COMMAND must still
    // name the file found from hotsup's own directory.
    let program: Cow<'_, Path> = match &spec.exec.chdir {
        Some(_) if spec.program.is_relative() => {
            Cow::Owned(std::env::current_dir()?.join(spec.program))
        }
        _ => Cow::Borrowed(spec.program),
    };
    let mut cmd;
    let mut channel = None;
    let mut child_fd = None;
    match spec.pass {
        Pass::Native => {
            let (parent_end, child_end) = rustix::net::socketpair(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                None,
            )?;
            // The child's end must block: apps read it with plain recvmsg.
            rustix::io::ioctl_fionbio(&child_end, false)?;
            cmd = scrubbed(&program);
            cmd.arg0(spec.argv0)
                .args(spec.args)
                .env(ENV_FD, child_end.as_raw_fd().to_string());
            child_fd = Some(child_end);
            channel = Some(parent_end);
        }
        Pass::Systemd(listeners) => {
            // Only the child knows its pid, and LISTEN_PID must be exactly
            // that: hotsup re-executes itself, sets it, and execs the app.
            cmd = scrubbed(Path::new("/proc/self/exe"));
            if let Some(e) = spec.exe_fd.filter(|e| !e.app_keeps) {
                cmd.env(ENV_EXE_FD, e.fd.to_string());
            }
            cmd.arg0("hotsup")
                .arg(EXEC_LISTEN_PID)
                .arg(spec.argv0)
                .arg(&*program)
                .args(spec.args)
                .env("LISTEN_FDS", listeners.len().to_string())
                .env(
                    "LISTEN_FDNAMES",
                    listeners
                        .iter()
                        .map(|l| l.info.name.as_str())
                        .collect::<Vec<_>>()
                        .join(":"),
                );
            let mut mappings = Vec::with_capacity(listeners.len());
            for (i, l) in listeners.iter().enumerate() {
                mappings.push(FdMapping {
                    parent_fd: l.fd().try_clone_to_owned()?,
                    child_fd: 3 + i as RawFd,
                });
            }
            cmd.fd_mappings(mappings)
                .map_err(|_| io::Error::other("listener fds collide"))?;
        }
    }
    cmd.env(ENV_GENERATION, spec.generation.to_string())
        .env(ENV_WORKER, spec.worker.to_string())
        .process_group(0);
    if let Some(path) = spec.notify_socket {
        cmd.env("NOTIFY_SOCKET", path);
    }
    // As systemd's User= and runuser(1) do: an app looking for its files
    // under $HOME must not be sent to hotsup's.
    if let Some(user) = spec.identity.and_then(|i| i.user.as_ref()) {
        cmd.env("USER", &user.name).env("LOGNAME", &user.name);
        if let Some(home) = &user.home {
            cmd.env("HOME", home);
        }
    }
    // After USER and HOME, which `--env` may override as systemd's
    // Environment= does; hotsup's own variables were refused at start-up
    // and are skipped here too, so nothing can break the protocols.
    for (k, v) in &spec.exec.env {
        if !is_reserved_env(k) {
            cmd.env(k, v);
        }
    }
    let raw_child_fd = child_fd.as_ref().map(|f| f.as_raw_fd());
    let chdir = match &spec.exec.chdir {
        Some(dir) => Some(
            CString::new(dir.as_os_str().as_encoded_bytes())
                .map_err(|_| io::Error::other("--chdir contains a NUL byte"))?,
        ),
        None => None,
    };
    let setup = Setup {
        cgroup: spec.cgroup,
        keep: [raw_child_fd, spec.exe_fd.map(|e| e.fd)],
        hotsup_pid,
        // An explicit --rlimit nofile= replaces restoring hotsup's
        // original soft limit.
        nofile: spec
            .nofile
            .filter(|_| !spec.exec.sets(rustix::process::Resource::Nofile)),
        rlimits: spec
            .exec
            .rlimits
            .iter()
            .map(|l| (l.resource, l.rlimit()))
            .collect(),
        umask: spec.exec.umask.map(rustix::fs::Mode::from_raw_mode),
        creds: spec.identity.map(|i| Creds {
            uid: i.uid,
            gid: i.gid,
            groups: i.groups.clone(),
        }),
        chdir,
    };
    // SAFETY: the closure runs between fork and exec in the child, where
    // only async-signal-safe calls are allowed; `prepare_child` makes only
    // raw syscalls on `setup`, allocated before fork and only borrowed
    // there, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || prepare_child(&setup));
    }
    let child = cmd.spawn().map_err(|e| {
        let mut context = Vec::new();
        // The usual cause: the new user cannot reach COMMAND or the
        // working directory.
        if let Some(id) = spec
            .identity
            .filter(|_| e.kind() == io::ErrorKind::PermissionDenied)
        {
            context.push(format!("running as {}: {}", id.given, id.describe()));
        }
        if let Some(dir) = &spec.exec.chdir {
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::EACCES | libc::ENOTDIR)
            ) {
                context.push(format!("COMMAND, or --chdir {}", dir.display()));
            }
        }
        if context.is_empty() {
            e
        } else {
            io::Error::new(e.kind(), format!("{e} ({})", context.join("; ")))
        }
    })?;
    drop(child_fd);
    let raw = i32::try_from(child.id()).map_err(io::Error::other)?;
    let pid = Pid::from_raw(raw).ok_or_else(|| io::Error::other("spawn returned pid 0"))?;
    // The `Child` handle is dropped without waiting: exit statuses are
    // collected by the supervisor's single wait() loop.
    drop(child);
    Ok(Spawned { pid, channel })
}

/// A command for `program` with hotsup's own variables removed; the
/// variables meant for the child are set afterwards.
pub fn scrubbed(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// The hidden `__exec-listen-pid ARGV0 PROGRAM ARGS...` step: runs in the
/// child, single-threaded, before anything else in `main`.
pub fn exec_listen_pid(rest: &[OsString]) -> ! {
    let [argv0, program, args @ ..] = rest else {
        crate::logging::report(format_args!(
            "{EXEC_LISTEN_PID} needs ARGV0 PROGRAM [ARGS...]"
        ));
        std::process::exit(2);
    };
    // A pinned executable run by descriptor: the app does not need the fd
    // once exec has opened the file.
    if let Some(fd) = std::env::var(ENV_EXE_FD)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    {
        // SAFETY: F_SETFD on a plain integer changes only that fd's flags
        // (EBADF if it is not open); no Rust object owns it here.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let mut cmd = Command::new(program);
    cmd.arg0(argv0)
        .args(args)
        .env_remove(ENV_EXE_FD)
        .env("LISTEN_PID", std::process::id().to_string());
    let err = cmd.exec();
    crate::logging::report(format_args!(
        "cannot exec {}: {err}",
        Path::new(program).display()
    ));
    std::process::exit(127);
}

/// Runs in the forked child before exec: async-signal-safe syscalls only
/// (write, fcntl, rt_sigaction, sigprocmask, prlimit, umask, setgroups,
/// setresgid, setresuid, chdir, prctl, getppid); no allocation, locks or
/// logging.
fn prepare_child(setup: &Setup) -> io::Result<()> {
    // First, so that nothing the child does can happen outside its cgroup.
    if let Some(fd) = setup.cgroup {
        crate::cgroup::enter_in_child(fd)?;
    }
    for keep in setup.keep.into_iter().flatten() {
        // SAFETY: the fd is open in the child: it was inherited from the
        // parent's copy, which stays open until spawn returns.
        let fd = unsafe { BorrowedFd::borrow_raw(keep) };
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
    }
    // Handlers fall back to the default on exec, but SIG_IGN survives it: a
    // signal ignored by whoever started hotsup would stay ignored in the app.
    // Before the mask is cleared, so that a signal pending for the child
    // meets the action it will have after exec.
    reset_signal_dispositions();
    clear_signal_mask()?;
    if let Some(soft) = setup.nofile {
        restore_nofile(soft)?;
    }
    for (resource, lim) in &setup.rlimits {
        rustix::process::setrlimit(*resource, *lim)?;
    }
    if let Some(mask) = setup.umask {
        rustix::process::umask(mask);
    }
    if let Some(creds) = &setup.creds {
        // Groups first and the uid last: once the uid is dropped, changing
        // groups is no longer allowed. Real, effective and saved ids all
        // change, so the app cannot switch back. These are the raw per-thread
        // syscalls, which is right here: the forked child has one thread.
        rustix::thread::set_thread_groups(&creds.groups)?;
        rustix::thread::set_thread_res_gid(creds.gid, creds.gid, creds.gid)?;
        if let Some(uid) = creds.uid {
            rustix::thread::set_thread_res_uid(uid, uid, uid)?;
        }
        // A hotsup that is not root but holds capabilities (say, ambient
        // CAP_SETUID from its unit) keeps them across a change between
        // non-zero uids; the app must not inherit them.
        match rustix::thread::clear_ambient_capability_set() {
            // EINVAL: a kernel before 4.3 has no ambient set to clear.
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // As the new user, as systemd enters WorkingDirectory=: the children
    // get no directory their user could not enter.
    if let Some(dir) = &setup.chdir {
        rustix::process::chdir(dir.as_c_str())?;
    }
    // After the credential change, which clears the parent-death signal.
    // The spawning thread is the runtime's only thread, which lives as long
    // as hotsup, so this fires only when hotsup itself dies.
    rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
    if rustix::process::getppid() != Some(setup.hotsup_pid) {
        // hotsup died before the prctl took effect. A raw errno, because
        // building a custom io::Error would allocate.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Between fork and exec of an auxiliary process (a `--build` command):
/// the signal state of a fresh process, and SIGTERM when hotsup dies.
/// Async-signal-safe syscalls only, like [`prepare_child`]; `hotsup_pid` is
/// read before fork.
pub fn prepare_aux(hotsup_pid: Pid, nofile: Option<u64>) -> io::Result<()> {
    reset_signal_dispositions();
    clear_signal_mask()?;
    if let Some(soft) = nofile {
        restore_nofile(soft)?;
    }
    // Spawned from the runtime's only thread, which lives as long as hotsup.
    rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
    if rustix::process::getppid() != Some(hotsup_pid) {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Lowers the soft RLIMIT_NOFILE to what hotsup was started with.
fn restore_nofile(soft: u64) -> io::Result<()> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current.is_none_or(|c| c > soft) {
        lim.current = Some(soft);
        setrlimit(Resource::Nofile, lim)?;
    }
    Ok(())
}

/// A signal blocked in hotsup would stay blocked across exec.
fn clear_signal_mask() -> io::Result<()> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given; sigprocmask gets
    // that initialised set and a null old-set pointer, which it allows.
    let rc = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets every catchable signal's action to the default, with the raw
/// rt_sigaction syscall: glibc's sigaction() refuses the two signals glibc
/// reserves (32 and 33), and glibc's own posix_spawn() leaves exactly those
/// ignored in what it starts, so a hotsup started that way would pass them
/// on. Resetting them here breaks nothing: before exec, the child has no
/// other thread to cancel, and it changes credentials with raw syscalls,
/// not through glibc's setxid broadcast. SIGKILL, SIGSTOP and numbers past
/// the last signal fail with EINVAL and are left alone.
fn reset_signal_dispositions() {
    // The kernel's struct sigaction, all zero: SIG_DFL, no flags, an empty
    // mask, whatever the architecture's layout (none is larger than this).
    let action = [0u64; 8];
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction is async-signal-safe; it reads a kernel
        // sigaction from `action`, which is valid and large enough, and
        // takes a null old-action pointer and the size of the kernel's
        // 64-signal set.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                libc::c_long::from(sig),
                action.as_ptr(),
                std::ptr::null_mut::<u64>(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

/// SIGKILLs what a reaped generation left in its process group. Only the
/// group: the main process's pid is free for reuse once reaped.
pub fn kill_leftovers(pgid: Pid) -> bool {
    rustix::process::kill_process_group(pgid, Signal::KILL).is_ok()
}

/// Signals a generation's whole process group, and its main process by pid
/// in case it left the group. Returns whether the group existed.
///
/// The pid cannot be reused while hotsup has not reaped it, so signalling it
/// by pid is safe until `wait` returned it.
pub fn kill_group(pid: Pid, sig: Signal) -> bool {
    let _ = rustix::process::kill_process(pid, sig);
    rustix::process::kill_process_group(pid, sig).is_ok()
}
