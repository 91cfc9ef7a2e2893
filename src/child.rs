//! Resolving COMMAND and starting one generation of it.
//!
//! Everything the child needs is prepared before `fork`; the `pre_exec` hook
//! only makes raw syscalls.

use std::ffi::{OsStr, OsString};
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

use crate::listeners::Listener;

/// Variables meant for hotsup itself, which must not reach the app: a child
/// that sent `STOPPING=1` to hotsup's own systemd would get the whole unit
/// stopped. Children get hotsup's own `NOTIFY_SOCKET` instead.
const SCRUBBED_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "HOTSUP_FD",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

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
    Systemd(&'a [Listener]),
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
    pub notify_socket: Option<&'a Path>,
    /// Soft RLIMIT_NOFILE for the child: hotsup raises its own to hold many
    /// sockets, but a child (select()-based ones above all) should start
    /// with the limit hotsup was given.
    pub nofile: Option<u64>,
    pub pass: Pass<'a>,
}

/// Starts one generation.
///
/// The child runs in a new process group (so its whole tree can be killed)
/// and receives SIGTERM if hotsup dies.
pub fn spawn(spec: &Spec<'_>) -> io::Result<Spawned> {
    let hotsup_pid = rustix::process::getpid();
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
            cmd = scrubbed(spec.program);
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
            cmd.arg0("hotsup")
                .arg(EXEC_LISTEN_PID)
                .arg(spec.argv0)
                .arg(spec.program)
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
        .process_group(0);
    if let Some(path) = spec.notify_socket {
        cmd.env("NOTIFY_SOCKET", path);
    }
    let raw_child_fd = child_fd.as_ref().map(|f| f.as_raw_fd());
    let nofile = spec.nofile;
    // SAFETY: the closure runs between fork and exec in the child, where
    // only async-signal-safe calls are allowed; `prepare_child` makes only
    // raw syscalls on values captured by copy, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || prepare_child(raw_child_fd, hotsup_pid, nofile));
    }
    let child = cmd.spawn()?;
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
fn scrubbed(program: &Path) -> Command {
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
    let mut cmd = Command::new(program);
    cmd.arg0(argv0)
        .args(args)
        .env("LISTEN_PID", std::process::id().to_string());
    let err = cmd.exec();
    crate::logging::report(format_args!(
        "cannot exec {}: {err}",
        Path::new(program).display()
    ));
    std::process::exit(127);
}

/// Runs in the forked child before exec: async-signal-safe syscalls only
/// (fcntl, sigprocmask, prlimit, prctl, getppid); no allocation, locks or
/// logging.
fn prepare_child(child_fd: Option<RawFd>, hotsup_pid: Pid, nofile: Option<u64>) -> io::Result<()> {
    if let Some(child_fd) = child_fd {
        // SAFETY: child_fd is open in the child: it was inherited from the
        // parent's copy, which stays open until spawn returns.
        let fd = unsafe { BorrowedFd::borrow_raw(child_fd) };
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
    }
    // A signal blocked in hotsup would stay blocked across exec.
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
    if let Some(soft) = nofile {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut lim = getrlimit(Resource::Nofile);
        if lim.current.is_none_or(|c| c > soft) {
            lim.current = Some(soft);
            setrlimit(Resource::Nofile, lim)?;
        }
    }
    // The spawning thread is the runtime's only thread, which lives as long
    // as hotsup, so this fires only when hotsup itself dies.
    rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
    if rustix::process::getppid() != Some(hotsup_pid) {
        // hotsup died before the prctl took effect. A raw errno, because
        // building a custom io::Error would allocate.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// SIGKILLs what a reaped generation left in its process group. Only the
/// group: the main process's pid is free for reuse once reaped.
pub fn kill_leftovers(pgid: Pid) -> bool {
    rustix::process::kill_process_group(pgid, Signal::KILL).is_ok()
}

/// Human form of a wait status: `exited with code 3`, `killed by SIGKILL`.
pub fn describe_status(status: &rustix::process::WaitStatus) -> String {
    if let Some(code) = status.exit_status() {
        format!("exited with code {code}")
    } else if let Some(sig) = status.terminating_signal() {
        format!("killed by {}", crate::cli::signal_name(sig))
    } else {
        format!("status {:#x}", status.as_raw())
    }
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
