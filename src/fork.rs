//! Starting a process: fork straight into its cgroup, then only raw system
//! calls until `execve`, with exec errors reported back as std's `Command`
//! does.
//!
//! std's `Command` cannot use `clone3(CLONE_INTO_CGROUP)`, so a child that
//! must live in a cgroup had to move itself there between fork and exec, by
//! writing to `cgroup.procs`. That write takes the kernel's
//! `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace
//! period: under load, seconds, during which hotsup's only thread waited
//! for the child's exec. Born in its cgroup, the child skips the write (it
//! is still the fallback for kernels before 5.7).
//!
//! Everything is prepared before the fork ([`Plan`], [`CStrings`]); the
//! child only reads it. Between fork and exec the child makes only
//! async-signal-safe system calls (rustix's raw syscalls, and the few in
//! [`crate::sys`]), allocates nothing and takes no lock.

use std::ffi::{CStr, CString, OsStr, c_char};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags};
use rustix::io::{Errno, FdFlags};
use rustix::process::{Gid, Pid, Resource, Rlimit, Signal, Uid, WaitOptions};

use crate::sys::{self, Forked};

/// NUL-terminated strings and the null-terminated array of pointers to
/// them that `execve` takes.
pub struct CStrings {
    /// What `ptrs` points into: never read, only kept alive.
    _strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl CStrings {
    pub fn new<I, S>(items: I) -> io::Result<CStrings>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let strings = items
            .into_iter()
            .map(|s| {
                CString::new(s.as_ref().as_bytes()).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "an argument or variable contains a NUL byte",
                    )
                })
            })
            .collect::<io::Result<Vec<CString>>>()?;
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Ok(CStrings {
            _strings: strings,
            ptrs,
        })
    }

    fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

/// The credentials a child switches to (`--user`, `--group`).
pub struct Creds {
    pub uid: Option<Uid>,
    pub gid: Gid,
    pub groups: Vec<Gid>,
}

/// Everything the child does between fork and exec, in this order.
pub struct Plan<'a> {
    /// What to exec: a path with a `/` (no PATH search).
    pub path: &'a CStr,
    pub argv: &'a CStrings,
    pub envp: &'a CStrings,
    /// The cgroup directory the child is born in.
    pub cgroup: Option<BorrowedFd<'a>>,
    /// Placed at fds 3, 4, ... in this order (systemd socket activation).
    pub place: &'a [BorrowedFd<'a>],
    /// Kept open across exec at their own numbers (the channel, a pinned
    /// executable). Each must lie above the placed fds (see [`clear_of`]).
    pub keep: &'a [BorrowedFd<'a>],
    /// Soft RLIMIT_NOFILE, lowered to this if above.
    pub nofile: Option<u64>,
    /// Set before the credential switch: only hotsup's privileges may
    /// raise a hard limit.
    pub rlimits: &'a [(Resource, Rlimit)],
    pub umask: Option<Mode>,
    pub creds: Option<&'a Creds>,
    /// Entered after the credential switch, as systemd enters
    /// `WorkingDirectory=`.
    pub chdir: Option<&'a CStr>,
    /// Who the parent is: the child checks it is still alive once
    /// `PR_SET_PDEATHSIG` is armed.
    pub parent: Pid,
}

/// Set once a kernel refused `CLONE_INTO_CGROUP`: later spawns go straight
/// to the fallback.
static NO_CLONE_INTO_CGROUP: AtomicBool = AtomicBool::new(false);

/// The bytes a child that could not exec writes on the report pipe: its
/// errno, then a tag (as std does), so that a partial write is noticed.
const TAG: &[u8; 4] = b"NOEX";

/// Starts the process described by `plan` and waits until it has exec'd
/// (then returns its pid) or failed to (then reaps it and returns the
/// error, with the errno of the step that failed).
pub fn spawn(plan: &Plan<'_>) -> io::Result<Pid> {
    spawn_with(plan, NO_CLONE_INTO_CGROUP.load(Ordering::Relaxed))
}

/// The first fd number above `placed` fds put at 3, 4, ...: where every
/// other fd the child needs must lie, or a dup2 would overwrite it.
pub fn placed_end(placed: usize) -> io::Result<RawFd> {
    RawFd::try_from(placed)
        .ok()
        .and_then(|n| n.checked_add(3))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "too many fds to place"))
}

/// `fd` if its number is at `min` or above; otherwise a close-on-exec copy
/// that is (to keep across exec while fds are placed below `min`).
pub fn clear_of(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<Option<OwnedFd>> {
    if fd.as_raw_fd() >= min {
        Ok(None)
    } else {
        Ok(Some(rustix::io::fcntl_dupfd_cloexec(fd, min)?))
    }
}

/// [`spawn`], with the fallback forced when `no_clone_into_cgroup` (for tests
/// and the `cgroup_cost` example).
pub fn spawn_with(plan: &Plan<'_>, no_clone_into_cgroup: bool) -> io::Result<Pid> {
    let end = placed_end(plan.place.len())?;
    if plan.keep.iter().any(|fd| fd.as_raw_fd() < end) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an fd to keep lies where the placed fds go",
        ));
    }
    let (report_read, report_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let report_write = above(report_write, end)?;
    let cgroup = plan.cgroup.map(|c| c.as_raw_fd());
    // The fallback: the child writes itself into `cgroup.procs`.
    let enter = match cgroup {
        Some(dir) if no_clone_into_cgroup => Some(open_procs(dir, end)?),
        _ => None,
    };
    let mut child = Child {
        plan,
        report: report_write.as_raw_fd(),
        enter: enter.as_ref().map(AsRawFd::as_raw_fd),
        end,
        // Allocated here: the child may not allocate.
        copies: vec![0; plan.place.len()],
    };
    // Every signal stays blocked until the child has reset its handlers: a
    // signal arriving between fork and that reset would run one of
    // hotsup's handlers (tokio's, which writes to a pipe hotsup shares with
    // the child) in the child. glibc's posix_spawn does the same.
    let mask = sys::block_all_signals()?;
    let born_in = if enter.is_some() { None } else { cgroup };
    // SAFETY: the child only runs `child.run()`, which makes
    // async-signal-safe system calls on data prepared above, and ends in
    // execve or exit_now.
    let forked = match unsafe { sys::fork(born_in) } {
        Err(e) if born_in.is_some() && sys::refuses_clone_into_cgroup(e) => {
            NO_CLONE_INTO_CGROUP.store(true, Ordering::Relaxed);
            sys::restore_signals(&mask);
            drop(child);
            drop(report_read);
            drop(report_write);
            return spawn_with(plan, true);
        }
        other => other,
    };
    let pid = match forked {
        Ok(Forked::Child) => child.run(),
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => {
            sys::restore_signals(&mask);
            return Err(e.into());
        }
    };
    sys::restore_signals(&mask);
    drop(report_write);
    drop(enter);
    match read_report(&report_read) {
        Ok(None) => Ok(pid),
        Ok(Some(errno)) => {
            reap(pid);
            Err(io::Error::from_raw_os_error(errno))
        }
        Err(e) => {
            // The child's fate is unknown: it may have exec'd. It is left to
            // the supervisor's wait loop, which reaps every child.
            Err(io::Error::new(
                e.kind(),
                format!("cannot read the child's exec report: {e}"),
            ))
        }
    }
}

/// `fd` itself if it is at `min` or above, else a close-on-exec copy there.
fn above(fd: OwnedFd, min: RawFd) -> io::Result<OwnedFd> {
    Ok(clear_of(fd.as_fd(), min)?.unwrap_or(fd))
}

fn open_procs(dir: RawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: the caller's BorrowedFd (in the plan) keeps it open.
    let dir = unsafe { BorrowedFd::borrow_raw(dir) };
    let fd = rustix::fs::openat(
        dir,
        "cgroup.procs",
        OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    above(fd, min)
}

/// Reads the child's report: `None` at end of file (the exec closed the
/// close-on-exec pipe), or the errno it wrote.
fn read_report(fd: &OwnedFd) -> io::Result<Option<i32>> {
    let mut buf = [0u8; 8];
    let mut len = 0;
    while len < buf.len() {
        match rustix::io::read(fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match len {
        0 => Ok(None),
        8 if &buf[4..] == TAG => Ok(Some(i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]))),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a short or garbled report",
        )),
    }
}

/// Reaps a child that failed before exec and has exited (or is about to:
/// it wrote its report right before `_exit`). Only this child, by pid: the
/// supervisor's loop never saw its pid.
fn reap(pid: Pid) {
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Err(Errno::INTR) => continue,
            _ => return,
        }
    }
}

/// The child's side, borrowed from the parent's copy of the plan.
struct Child<'p, 'a> {
    plan: &'p Plan<'a>,
    /// The report pipe's write end, at `end` or above.
    report: RawFd,
    /// `cgroup.procs`, open for writing, when the child must move itself.
    enter: Option<RawFd>,
    /// The first fd above the placed ones.
    end: RawFd,
    /// Where the child copies each placed fd before putting it in place:
    /// one slot per fd, written in the child's copy of this memory.
    copies: Vec<RawFd>,
}

impl Child<'_, '_> {
    /// Runs in the forked child: sets it up and execs, or reports why not
    /// and exits. Never returns.
    fn run(&mut self) -> ! {
        let errno = match self.prepare() {
            Ok(()) => {
                // SAFETY: argv and envp are null-terminated arrays of
                // pointers into `CStrings` the parent keeps alive (the child
                // has its copy-on-write copy).
                unsafe {
                    sys::execve(
                        self.plan.path,
                        self.plan.argv.as_ptr(),
                        self.plan.envp.as_ptr(),
                    )
                }
            }
            Err(e) => e,
        };
        let code = errno.raw_os_error().to_ne_bytes();
        let mut report = [0u8; 8];
        report[..4].copy_from_slice(&code);
        report[4..].copy_from_slice(TAG);
        // SAFETY: the write end is open in the child until it exits.
        let fd = unsafe { BorrowedFd::borrow_raw(self.report) };
        // A pipe write of 8 bytes is atomic; if it fails the parent sees a
        // short report.
        let _ = rustix::io::write(fd, &report);
        sys::exit_now(127)
    }

    /// Every step between fork and exec. Async-signal-safe system calls
    /// only; errors are raw errnos, which allocate nothing.
    fn prepare(&mut self) -> Result<(), Errno> {
        let plan = self.plan;
        // First, so that nothing the child does happens outside its cgroup.
        if let Some(fd) = self.enter {
            enter_cgroup(fd)?;
        }
        // Its own process group, so that its whole tree can be signalled.
        rustix::process::setpgid(None, None)?;
        self.place_fds()?;
        for fd in plan.keep.iter() {
            rustix::io::fcntl_setfd(fd, FdFlags::empty())?;
        }
        // Handlers fall back to the default on exec, but SIG_IGN survives
        // it: a signal ignored by whoever started hotsup would stay ignored
        // in the app. Before the mask is cleared, so that no handler of
        // hotsup's can run here.
        sys::reset_signal_dispositions();
        // A signal blocked in hotsup would stay blocked across exec.
        sys::clear_signal_mask()?;
        if let Some(soft) = plan.nofile {
            restore_nofile(soft)?;
        }
        for (resource, lim) in plan.rlimits {
            rustix::process::setrlimit(*resource, *lim)?;
        }
        if let Some(mask) = plan.umask {
            rustix::process::umask(mask);
        }
        if let Some(creds) = plan.creds {
            // Groups first and the uid last: once the uid is dropped,
            // changing groups is no longer allowed. Real, effective and saved
            // ids all change, so the app cannot switch back. These are the
            // raw per-thread syscalls, which is right here: the forked child
            // has one thread.
            rustix::thread::set_thread_groups(&creds.groups)?;
            rustix::thread::set_thread_res_gid(creds.gid, creds.gid, creds.gid)?;
            if let Some(uid) = creds.uid {
                rustix::thread::set_thread_res_uid(uid, uid, uid)?;
            }
            // A hotsup that is not root but holds capabilities (say,
            // ambient CAP_SETUID from its unit) keeps them across a change
            // between non-zero uids; the app must not inherit them.
            match rustix::thread::clear_ambient_capability_set() {
                // EINVAL: a kernel before 4.3 has no ambient set to clear.
                Ok(()) | Err(Errno::INVAL) => {}
                Err(e) => return Err(e),
            }
        }
        // As the new user: the children get no directory their user could
        // not enter.
        if let Some(dir) = plan.chdir {
            rustix::process::chdir(dir)?;
        }
        // After the credential change, which clears the parent-death
        // signal. The forking thread is the runtime's only thread, which
        // lives as long as hotsup, so this fires only when hotsup dies.
        rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
        if rustix::process::getppid() != Some(plan.parent) {
            // hotsup died before the prctl took effect.
            return Err(Errno::SRCH);
        }
        Ok(())
    }

    /// Puts `place[i]` at fd `3 + i`. A source may itself sit in 3..end,
    /// where an earlier dup2 would overwrite it: every source is first
    /// copied above the range (close-on-exec copies, gone at exec), then
    /// down into place; dup2 clears close-on-exec on the target.
    fn place_fds(&mut self) -> Result<(), Errno> {
        let place = self.plan.place;
        // The copies land wherever numbers from `end` up are free, not
        // necessarily side by side (hotsup's own fds lie there too), so
        // each one's number is recorded, in memory allocated before fork.
        for (fd, slot) in place.iter().zip(self.copies.iter_mut()) {
            let copy = rustix::io::fcntl_dupfd_cloexec(fd, self.end)?;
            // Kept open until exec, which closes it (close-on-exec).
            *slot = copy.as_raw_fd();
            std::mem::forget(copy);
        }
        for (target, &copy) in (3..).zip(self.copies.iter()) {
            sys::dup2(copy, target)?;
        }
        Ok(())
    }
}

/// Lowers the soft `RLIMIT_NOFILE` back to `soft`, what hotsup was started
/// with (it raises its own, see `hotsup_os::raise_nofile_limit`): apps
/// using `select()` break above 1024. Async-signal-safe: two system calls.
pub fn restore_nofile(soft: u64) -> Result<(), Errno> {
    let mut lim = rustix::process::getrlimit(Resource::Nofile);
    if lim.current.is_none_or(|c| c > soft) {
        lim.current = Some(soft);
        rustix::process::setrlimit(Resource::Nofile, lim)?;
    }
    Ok(())
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is open
/// at `procs`: one `write(2)` of `0` (the writer itself). Async-signal-safe.
fn enter_cgroup(procs: RawFd) -> Result<(), Errno> {
    // SAFETY: the parent keeps the fd open until the child has exec'd or
    // failed, so the child's inherited copy is open.
    let fd = unsafe { BorrowedFd::borrow_raw(procs) };
    loop {
        match rustix::io::write(fd, b"0") {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(Errno::IO),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_for<'a>(
        path: &'a CStr,
        argv: &'a CStrings,
        envp: &'a CStrings,
        place: &'a [BorrowedFd<'a>],
        keep: &'a [BorrowedFd<'a>],
    ) -> Plan<'a> {
        Plan {
            path,
            argv,
            envp,
            cgroup: None,
            place,
            keep,
            nofile: None,
            rlimits: &[],
            umask: None,
            creds: None,
            chdir: None,
            parent: rustix::process::getpid(),
        }
    }

    fn wait_code(pid: Pid) -> i32 {
        let (_, status) = rustix::process::waitpid(Some(pid), WaitOptions::empty())
            .expect("waitpid")
            .expect("a status");
        status.exit_status().expect("exited")
    }

    #[test]
    fn exec_errors_come_back_as_errnos() {
        let argv = CStrings::new(["x"]).unwrap();
        let envp = CStrings::new::<_, &str>([]).unwrap();
        let plan = plan_for(c"/nonexistent/hotsup-test", &argv, &envp, &[], &[]);
        let err = spawn(&plan).expect_err("exec'd a missing file");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        let mut plan = plan_for(c"/bin/true", &argv, &envp, &[], &[]);
        plan.chdir = Some(c"/nonexistent-dir");
        let err = spawn(&plan).expect_err("entered a missing directory");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    }

    /// Two sockets placed so that each one's source number is the other's
    /// target (every number from 3 to the higher of the two is a target):
    /// without moving the sources away first, the second dup2 would copy
    /// the first's result. The child checks each fd by its inode.
    #[test]
    fn placed_fds_survive_sources_in_the_target_range() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
        let inode = |fd: BorrowedFd<'_>| rustix::fs::fstat(fd).unwrap().st_ino;
        let (ia, ib) = (inode(a.as_fd()), inode(b.as_fd()));
        let top = fa.max(fb);
        let mut place: Vec<BorrowedFd<'_>> = (3..=top).map(|_| a.as_fd()).collect();
        place[(fa - 3) as usize] = b.as_fd();
        place[(fb - 3) as usize] = a.as_fd();
        let (read_end, write_end) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let end = placed_end(place.len()).unwrap();
        let moved = clear_of(write_end.as_fd(), end).unwrap();
        let out = moved.as_ref().map_or(write_end.as_fd(), |m| m.as_fd());
        let script = format!(
            "test \"$(stat -L -c %i /proc/self/fd/{fa})\" = {ib} && \
             test \"$(stat -L -c %i /proc/self/fd/{fb})\" = {ia} && \
             echo ok >&{}",
            out.as_raw_fd()
        );
        let argv = CStrings::new(["sh", "-c", &script]).unwrap();
        let envp = CStrings::new(["PATH=/usr/bin:/bin"]).unwrap();
        let keep = [out];
        let plan = plan_for(c"/bin/sh", &argv, &envp, &place, &keep);
        let pid = spawn(&plan).expect("spawn");
        drop(moved);
        drop(write_end);
        let mut buf = [0u8; 16];
        let n = rustix::io::read(&read_end, &mut buf).unwrap();
        assert_eq!(wait_code(pid), 0, "the child found other sockets");
        assert_eq!(&buf[..n], b"ok\n");
    }

    /// The copies made before placing cannot sit side by side when an fd
    /// above the placed range is open (the supervisor's own fds are there):
    /// here the range ends at `hole - 2`, where the report pipe goes, and
    /// fd `hole` is open, so the first copy lands below `hole` and the next
    /// one above it.
    #[test]
    fn placement_copes_with_open_fds_above_the_range() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = |fd: BorrowedFd<'_>| rustix::fs::fstat(fd).unwrap().st_ino;
        let (ia, ib) = (inode(a.as_fd()), inode(b.as_fd()));
        // High enough that no other test's fds are near it.
        let hole = rustix::io::fcntl_dupfd_cloexec(a.as_fd(), 300).unwrap();
        let count = usize::try_from(hole.as_raw_fd() - 5).unwrap();
        let mut place: Vec<BorrowedFd<'_>> = vec![a.as_fd(); count];
        place[0] = b.as_fd();
        let end = placed_end(place.len()).unwrap();
        assert_eq!(end + 2, hole.as_raw_fd());
        let (read_end, write_end) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let moved = clear_of(write_end.as_fd(), hole.as_raw_fd() + 1).unwrap();
        let out = moved.as_ref().map_or(write_end.as_fd(), |m| m.as_fd());
        let last = end - 1;
        let script = format!(
            "test \"$(stat -L -c %i /proc/self/fd/3)\" = {ib} && \
             test \"$(stat -L -c %i /proc/self/fd/{last})\" = {ia} && \
             echo ok >/proc/self/fd/{}",
            out.as_raw_fd()
        );
        let argv = CStrings::new(["sh", "-c", &script]).unwrap();
        let envp = CStrings::new(["PATH=/usr/bin:/bin"]).unwrap();
        let keep = [out];
        let plan = plan_for(c"/bin/sh", &argv, &envp, &place, &keep);
        let pid = spawn(&plan).expect("spawn");
        drop(moved);
        drop(write_end);
        let mut buf = [0u8; 16];
        let n = rustix::io::read(&read_end, &mut buf).unwrap();
        assert_eq!(wait_code(pid), 0, "the child found other sockets");
        assert_eq!(&buf[..n], b"ok\n");
    }
}
