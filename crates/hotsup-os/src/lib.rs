//! What both sides of hotsup need from Linux, implemented once: the
//! supervisor (`hotsup`) and the app library (`hotsup-child`) both use it,
//! so that they agree.
//!
//! - [`activation`]: systemd's socket activation (`LISTEN_FDS`,
//!   `LISTEN_PID`, `LISTEN_FDNAMES`, `LISTEN_FDS_FIRST_FD`), in three steps:
//!   [`activation::parse`] (no side effect), [`activation::claim`] (the one
//!   unsafe step) and [`activation::inspect`].
//! - [`sockets`]: what an fd is, and the address it is bound to, spelled
//!   as the protocol spells addresses.
//! - [`raise_nofile_limit`]: the soft `RLIMIT_NOFILE` up to the hard one.
//! - [`signals`]: signal names.
//!
//! The wire protocol itself is `hotsup-protocol`'s: that crate is the
//! specification for implementers in any language, and has no `unsafe`
//! and nothing Linux-specific beyond sending and receiving a message.

pub mod activation;
pub mod signals;
pub mod sockets;

/// The `RLIMIT_NOFILE` soft limit before and after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit the process had (`None`: unlimited).
    pub before: Option<u64>,
    /// The soft limit it has now.
    pub now: Option<u64>,
    /// The hard limit.
    pub hard: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: the kernel silently
/// drops fds received beyond the soft limit, and a supervisor holds one fd
/// per listener. Best effort: the limits are returned whatever happened.
///
/// An unlimited hard limit cannot be a soft limit on Linux (the kernel caps
/// open files at `fs.nr_open`); the soft limit then becomes `fs.nr_open`'s
/// default, 1048576.
pub fn raise_nofile_limit() -> NofileLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_err() && limit.maximum.is_none() {
            let _ = setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(1 << 20),
                    maximum: None,
                },
            );
        }
    }
    let now = getrlimit(Resource::Nofile);
    NofileLimit {
        before: limit.current,
        now: now.current,
        hard: now.maximum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        let limit = raise_nofile_limit();
        match limit.hard {
            Some(hard) => assert_eq!(limit.now, Some(hard)),
            None => assert!(limit.now.is_some()),
        }
        // Raising again changes nothing and reports the raised limit.
        let again = raise_nofile_limit();
        assert_eq!(again.before, limit.now);
        assert_eq!(again.now, limit.now);
    }
}
