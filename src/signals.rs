//! The signals hotsup acts on, and holding them back until it can.
//!
//! Until the event loop has installed its handlers, a SIGTERM would kill
//! hotsup with the default action and leave its Unix socket files behind. So
//! `main` blocks these signals first, and the supervisor unblocks them once
//! its handlers exist: a signal sent meanwhile is delivered then, not lost.
//! Children never inherit the mask: `child::prepare_child` clears it.
//! hotsup's only other thread, the log writer, blocks every signal for its
//! whole life (see `logging`), so these reach the event loop's thread.

const HANDLED: [libc::c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCHLD,
];

fn mask(how: libc::c_int) {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; sigaddset gets valid signal
    // numbers; sigprocmask gets that initialised set and a null old-set
    // pointer, which it allows. It sets the mask of the event loop's thread,
    // the one that takes signals.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for sig in HANDLED {
            libc::sigaddset(set.as_mut_ptr(), sig);
        }
        libc::sigprocmask(how, set.as_ptr(), std::ptr::null_mut());
    }
}

/// Holds the handled signals pending until [`release`].
pub fn hold() {
    mask(libc::SIG_BLOCK);
}

/// Delivers held signals to the handlers now installed.
pub fn release() {
    mask(libc::SIG_UNBLOCK);
}
