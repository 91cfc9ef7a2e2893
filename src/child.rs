//! Resolving COMMAND and starting one generation of it.
//!
//! Everything the child needs is prepared here before the fork; the child
//! itself only makes raw syscalls (see [`crate::fork`]).

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::process::{Pid, Resource, Rlimit, Signal};

use hotsup_protocol::{ENV_FD, ENV_GENERATION};

use crate::exec_env::ExecEnv;
use crate::fork;
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
    /// The generation's cgroup directory, open (see
    /// [`crate::cgroup::GenCgroup::open_enter`]): the child is born in it.
    pub cgroup: Option<RawFd>,
    pub pass: Pass<'a>,
    /// `--user`/`--group`: the credentials the child switches to.
    pub identity: Option<&'a Identity>,
    /// `--chdir`, `--env`, `--env-file`, `--umask`, `--rlimit`.
    pub exec: &'a ExecEnv,
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
/// in its cgroup from birth if `spec.cgroup` is given, as `spec.identity`
/// if given, and receives SIGTERM if hotsup dies. Returns once the child
/// has exec'd, or with the error that kept it from doing so.
pub fn spawn(spec: &Spec<'_>) -> io::Result<Spawned> {
    let hotsup_pid = rustix::process::getpid();
    // exec runs after the child's chdir: a relative COMMAND must still
    // name the file found from hotsup's own directory.
    let mut program: PathBuf = match &spec.exec.chdir {
        Some(_) if spec.program.is_relative() => std::env::current_dir()?.join(spec.program),
        _ => spec.program.to_path_buf(),
    };
    // The environment hotsup was given, less its own variables, plus the
    // child's; a later value for a name replaces an earlier one.
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os()
        .filter(|(k, _)| !k.to_str().is_some_and(|k| SCRUBBED_ENV.contains(&k)))
        .collect();
    let mut set = |k: &str, v: &OsStr| {
        env.insert(k.into(), v.to_owned());
    };
    let listeners: &[std::sync::Arc<Listener>] = match spec.pass {
        Pass::Native => &[],
        Pass::Systemd(l) => l,
    };
    let end = fork::placed_end(listeners.len())?;
    // fds the child keeps at their numbers must lie above the listeners'
    // 3, 4, ...: a pinned executable opened after a low fd was freed may
    // not.
    let exe_moved = match spec.exe_fd {
        Some(e) => {
            // SAFETY: the Pinned that owns this fd outlives the spawn.
            let fd = unsafe { BorrowedFd::borrow_raw(e.fd) };
            fork::clear_of(fd, end)?
        }
        None => None,
    };
    let exe_fd = spec.exe_fd.map(|e| ExeFd {
        fd: exe_moved.as_ref().map_or(e.fd, AsRawFd::as_raw_fd),
        ..e
    });
    if let (Some(old), Some(new)) = (spec.exe_fd, exe_fd.filter(|_| exe_moved.is_some()))
        && program == Path::new(&format!("/proc/self/fd/{}", old.fd))
    {
        program = PathBuf::from(format!("/proc/self/fd/{}", new.fd));
    }
    let mut channel = None;
    let mut child_end = None;
    let (path, argv): (CString, Vec<OsString>) = match spec.pass {
        Pass::Native => {
            let (parent_end, child) = rustix::net::socketpair(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                None,
            )?;
            // The child's end must block: apps read it with plain recvmsg.
            rustix::io::ioctl_fionbio(&child, false)?;
            set(ENV_FD, OsStr::new(&child.as_raw_fd().to_string()));
            child_end = Some(child);
            channel = Some(parent_end);
            let mut argv = vec![spec.argv0.to_owned()];
            argv.extend(spec.args.iter().cloned());
            (cstring(program.as_os_str())?, argv)
        }
        Pass::Systemd(listeners) => {
            // Only the child knows its pid, and LISTEN_PID must be exactly
            // that: hotsup re-executes itself, sets it, and execs the app.
            if let Some(e) = exe_fd.filter(|e| !e.app_keeps) {
                set(ENV_EXE_FD, OsStr::new(&e.fd.to_string()));
            }
            set("LISTEN_FDS", OsStr::new(&listeners.len().to_string()));
            let names: Vec<&str> = listeners.iter().map(|l| l.info.name.as_str()).collect();
            set("LISTEN_FDNAMES", OsStr::new(&names.join(":")));
            let mut argv: Vec<OsString> = vec![
                "hotsup".into(),
                EXEC_LISTEN_PID.into(),
                spec.argv0.to_owned(),
                program.into_os_string(),
            ];
            argv.extend(spec.args.iter().cloned());
            (cstring(OsStr::new("/proc/self/exe"))?, argv)
        }
    };
    // No PATH search happens: resolve() always gives a path.
    if !path.as_bytes().contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "COMMAND must be resolved to a path",
        ));
    }
    set(ENV_GENERATION, OsStr::new(&spec.generation.to_string()));
    set(ENV_WORKER, OsStr::new(&spec.worker.to_string()));
    if let Some(path) = spec.notify_socket {
        set("NOTIFY_SOCKET", path.as_os_str());
    }
    // As systemd's User= and runuser(1) do: an app looking for its files
    // under $HOME must not be sent to hotsup's.
    if let Some(user) = spec.identity.and_then(|i| i.user.as_ref()) {
        set("USER", OsStr::new(&user.name));
        set("LOGNAME", OsStr::new(&user.name));
        if let Some(home) = &user.home {
            set("HOME", home.as_os_str());
        }
    }
    // After USER and HOME, which `--env` may override as systemd's
    // Environment= does; hotsup's own variables were refused at start-up
    // and are skipped here too, so nothing can break the protocols.
    for (k, v) in &spec.exec.env {
        if !is_reserved_env(k) {
            set(k, OsStr::new(v));
        }
    }
    let envp = fork::CStrings::new(env.iter().map(|(k, v)| {
        let mut kv = k.clone();
        kv.push("=");
        kv.push(v);
        kv
    }))?;
    let argv = fork::CStrings::new(&argv)?;
    let chdir = match &spec.exec.chdir {
        Some(dir) => Some(
            CString::new(dir.as_os_str().as_encoded_bytes())
                .map_err(|_| io::Error::other("--chdir contains a NUL byte"))?,
        ),
        None => None,
    };
    let creds = spec.identity.map(|i| fork::Creds {
        uid: i.uid,
        gid: i.gid,
        groups: i.groups.clone(),
    });
    let rlimits: Vec<(Resource, Rlimit)> = spec
        .exec
        .rlimits
        .iter()
        .map(|l| (l.resource, l.rlimit()))
        .collect();
    let place: Vec<BorrowedFd<'_>> = listeners.iter().map(|l| l.fd()).collect();
    let mut keep: Vec<BorrowedFd<'_>> = Vec::with_capacity(2);
    keep.extend(child_end.as_ref().map(AsFd::as_fd));
    if let Some(e) = exe_fd {
        // SAFETY: the Pinned, or the copy above, that owns it outlives the
        // spawn.
        keep.push(unsafe { BorrowedFd::borrow_raw(e.fd) });
    }
    // SAFETY: the caller keeps the cgroup's fd open until spawn returns.
    let cgroup = spec.cgroup.map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
    let plan = fork::Plan {
        path: &path,
        argv: &argv,
        envp: &envp,
        cgroup,
        place: &place,
        keep: &keep,
        // An explicit --rlimit nofile= replaces restoring hotsup's
        // original soft limit.
        nofile: spec.nofile.filter(|_| !spec.exec.sets(Resource::Nofile)),
        rlimits: &rlimits,
        umask: spec.exec.umask.map(rustix::fs::Mode::from_raw_mode),
        creds: creds.as_ref(),
        chdir: chdir.as_deref(),
        parent: hotsup_pid,
    };
    let pid = fork::spawn(&plan).map_err(|e| with_context(e, spec))?;
    drop(child_end);
    drop(exe_moved);
    Ok(Spawned { pid, channel })
}

/// Why a child could not start, with what usually causes it.
fn with_context(e: io::Error, spec: &Spec<'_>) -> io::Error {
    let mut context = Vec::new();
    // The usual cause: the new user cannot reach COMMAND or the working
    // directory.
    if let Some(id) = spec
        .identity
        .filter(|_| e.kind() == io::ErrorKind::PermissionDenied)
    {
        context.push(format!("running as {}: {}", id.given, id.describe()));
    }
    if let Some(dir) = &spec.exec.chdir {
        let code = e.raw_os_error().map(Errno::from_raw_os_error);
        if matches!(code, Some(Errno::NOENT | Errno::ACCESS | Errno::NOTDIR)) {
            context.push(format!("COMMAND, or --chdir {}", dir.display()));
        }
    }
    if context.is_empty() {
        e
    } else {
        io::Error::new(e.kind(), format!("{e} ({})", context.join("; ")))
    }
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path contains a NUL byte"))
}

/// A command for `program` with hotsup's own variables removed, for the
/// auxiliary processes std's `Command` starts (`--build`).
pub fn scrubbed(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// Between fork and exec of an auxiliary process (a `--build` command):
/// the signal state of a fresh process, and SIGTERM when hotsup dies.
/// Async-signal-safe syscalls only (those of `sys`, `fork::restore_nofile`,
/// `prctl`, `getppid`); `hotsup_pid` is read before fork.
pub fn prepare_aux(hotsup_pid: Pid, nofile: Option<u64>) -> io::Result<()> {
    crate::sys::reset_signal_dispositions();
    crate::sys::clear_signal_mask()?;
    if let Some(soft) = nofile {
        fork::restore_nofile(soft)?;
    }
    // Spawned from the runtime's only thread, which lives as long as hotsup.
    rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
    if rustix::process::getppid() != Some(hotsup_pid) {
        // A raw errno: building a custom io::Error would allocate.
        return Err(Errno::SRCH.into());
    }
    Ok(())
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
        // SAFETY: only used for F_SETFD, which changes that fd's flags
        // (EBADF if it is not open); no Rust object owns it here.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
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
