//! The system calls rustix does not offer, through libc.
//!
//! rustix is hotsup's syscall layer. It has no public `clone3`, `execve`,
//! `_exit`, `dup2` onto a number that may not be open, signal masks or
//! signal dispositions (its `runtime` module has some of them, but it is
//! hidden, unstable and meant for libc replacements only), and no NSS
//! look-ups. So libc is used for exactly these, all of them here except
//! the NSS calls:
//!
//! - `clone3` and `clone` as raw syscalls, `execve`, `_exit` and `dup2`:
//!   [`crate::fork`], between fork and exec;
//! - `sigprocmask`/`pthread_sigmask` and the raw `rt_sigaction` syscall:
//!   holding signals ([`crate::signals`]), the log writer thread's mask
//!   ([`crate::logging`]), and resetting a child's signals;
//! - `getpwnam_r`, `getpwuid_r`, `getgrnam_r`, `getgrgid_r` and
//!   `getgrouplist` in [`crate::identity`]: only glibc's NSS knows the users
//!   of LDAP, sssd or systemd-userdb;
//! - `malloc_trim`, to hand the heap start-up freed back to the kernel
//!   ([`crate::resident`]);
//! - signal numbers (`libc::SIGTERM`, ...) where a plain `c_int` is wanted.
//!
//! Everything marked async-signal-safe below is a single system call with
//! no allocation, no lock and no `errno`-dependent libc state beyond the
//! calling thread's `errno`, so it may run in a forked child.

use std::ffi::{CStr, c_char};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

use rustix::io::Errno;

/// The signal mask of the calling thread, as saved by [`block_all_signals`].
pub struct SigMask(libc::sigset_t);

/// Blocks every signal in the calling thread; returns the mask it had.
pub fn block_all_signals() -> io::Result<SigMask> {
    let mut all = MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises `all`; pthread_sigmask reads that
    // initialised set and writes the old mask to a valid pointer.
    let rc = unsafe {
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_BLOCK, all.as_ptr(), old.as_mut_ptr())
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: the successful pthread_sigmask filled `old` in.
    Ok(SigMask(unsafe { old.assume_init() }))
}

/// Puts back a mask saved by [`block_all_signals`].
pub fn restore_signals(mask: &SigMask) {
    // SAFETY: `mask.0` is an initialised set; a null old-set pointer is
    // allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &mask.0, std::ptr::null_mut()) };
}

/// Blocks (`block`) or unblocks `signals` in the calling thread.
pub fn mask_signals(signals: &[libc::c_int], block: bool) {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    let how = if block {
        libc::SIG_BLOCK
    } else {
        libc::SIG_UNBLOCK
    };
    // SAFETY: sigemptyset initialises the set; sigaddset gets valid signal
    // numbers; pthread_sigmask reads that set and takes a null old-set
    // pointer, which it allows.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for &sig in signals {
            libc::sigaddset(set.as_mut_ptr(), sig);
        }
        libc::pthread_sigmask(how, set.as_ptr(), std::ptr::null_mut());
    }
}

/// Unblocks every signal. Async-signal-safe: `sigemptyset` only writes the
/// set on the stack, and `sigprocmask` is one system call.
pub fn clear_signal_mask() -> Result<(), Errno> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given; sigprocmask gets
    // that initialised set and a null old-set pointer, which it allows.
    let rc = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut())
    };
    if rc != 0 {
        Err(Errno::from_raw_os_error(errno()))
    } else {
        Ok(())
    }
}

/// Sets every catchable signal's action to the default, with the raw
/// rt_sigaction syscall: glibc's sigaction() refuses the two signals glibc
/// reserves (32 and 33), and glibc's own posix_spawn() leaves exactly those
/// ignored in what it starts, so a hotsup started that way would pass them
/// on. Resetting them in a forked child breaks nothing: before exec, the
/// child has no other thread to cancel, and it changes credentials with raw
/// syscalls, not through glibc's setxid broadcast. SIGKILL, SIGSTOP and
/// numbers past the last signal fail with EINVAL and are left alone.
/// Async-signal-safe: one system call per signal.
pub fn reset_signal_dispositions() {
    // The kernel's struct sigaction, all zero: SIG_DFL, no flags, an empty
    // mask, whatever the architecture's layout (none is larger than this).
    let action = [0u64; 8];
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a kernel sigaction from `action`, which
        // is valid and large enough, and takes a null old-action pointer and
        // the size of the kernel's 64-signal set.
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

/// The kernel's `struct clone_args` (linux/sched.h), up to `cgroup`
/// (`CLONE_ARGS_SIZE_VER2`, Linux 5.7). Every field is a 64-bit value on
/// every architecture.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7); `libc` has it only for some targets.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Which side of a fork this is.
pub enum Forked {
    Parent(rustix::process::Pid),
    Child,
}

/// Forks: a new process, a copy of this one with only the calling thread,
/// born in the cgroup whose directory is open at `cgroup` (`clone3` with
/// `CLONE_INTO_CGROUP`), or in this process's cgroup when `cgroup` is
/// `None`. Without a cgroup this uses plain `clone`, the `fork` system call
/// without glibc's `fork()` wrapper and its at-fork handlers.
///
/// Errors are `clone3`'s: ENOSYS or E2BIG/EINVAL from a kernel that lacks
/// `clone3` or `CLONE_INTO_CGROUP` (see [`refuses_clone_into_cgroup`]).
///
/// # Safety
///
/// As for `fork()` in a multithreaded process: the child is a copy in
/// which no other thread exists, so it may only make async-signal-safe
/// calls (no allocation, no lock, nothing another thread could have held)
/// until it execs or calls [`exit_now`]. glibc does not know about this
/// fork: the child must not call into glibc beyond single system calls.
pub unsafe fn fork(cgroup: Option<RawFd>) -> Result<Forked, Errno> {
    let rc = match cgroup {
        Some(fd) => {
            let args = CloneArgs {
                flags: CLONE_INTO_CGROUP,
                exit_signal: libc::SIGCHLD as u64,
                cgroup: fd as u64,
                ..CloneArgs::default()
            };
            // SAFETY: clone3 reads `args`, valid for its size, which is
            // passed along. Without CLONE_VM and with a zero stack, the child
            // runs on a copy-on-write copy of this thread's stack and returns
            // from this same call, as after fork(); the caller upholds the
            // rest (see above).
            unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    &args as *const CloneArgs,
                    std::mem::size_of::<CloneArgs>(),
                )
            }
        }
        // SAFETY: clone with only the exit signal and null pointers is
        // fork(2); the argument order differs between architectures, but
        // every argument after the flags is zero.
        None => unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::SIGCHLD as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
            )
        },
    };
    match rc {
        -1 => Err(Errno::from_raw_os_error(errno())),
        0 => Ok(Forked::Child),
        pid => rustix::process::Pid::from_raw(pid as i32)
            .map(Forked::Parent)
            .ok_or(Errno::INVAL),
    }
}

/// Whether `clone3` failed because the kernel lacks it (ENOSYS, before
/// 5.3) or `CLONE_INTO_CGROUP` (5.3 to 5.6: E2BIG for the larger struct,
/// EINVAL for the flag): then the child must move itself.
pub fn refuses_clone_into_cgroup(e: Errno) -> bool {
    matches!(e, Errno::NOSYS | Errno::INVAL | Errno::TOOBIG)
}

/// `dup2(from, to)`: `to` need not be open, and it is not close-on-exec
/// afterwards. Async-signal-safe. (rustix's `dup2` wants the target as an
/// `OwnedFd`, which a number that may not be open cannot be.)
pub fn dup2(from: RawFd, to: RawFd) -> Result<(), Errno> {
    loop {
        // SAFETY: dup2 only acts on the fd table; any numbers are allowed
        // (EBADF for a closed `from`).
        match unsafe { libc::dup2(from, to) } {
            -1 if errno() == libc::EINTR => continue,
            -1 => return Err(Errno::from_raw_os_error(errno())),
            _ => return Ok(()),
        }
    }
}

/// `execve`; returns only on failure, with the error. Async-signal-safe.
///
/// # Safety
///
/// `argv` and `envp` are null-terminated arrays of pointers to
/// NUL-terminated strings, all alive during the call.
pub unsafe fn execve(path: &CStr, argv: *const *const c_char, envp: *const *const c_char) -> Errno {
    // SAFETY: as the caller guarantees; `path` is NUL-terminated.
    unsafe { libc::execve(path.as_ptr(), argv, envp) };
    Errno::from_raw_os_error(errno())
}

/// Returns the free memory of every malloc arena to the kernel (glibc's
/// `malloc_trim`, which `MADV_DONTNEED`s free pages inside the heap, not
/// only at its top). Not for a forked child: it takes malloc's locks.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and locks malloc's own arenas; it is
    // safe to call from any thread at any time outside a forked child.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Ends the process at once, without running exit handlers or flushing
/// anything: for a forked child that could not exec. Async-signal-safe.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// The calling thread's `errno`.
fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}
