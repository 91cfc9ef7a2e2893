//! Learning when to drain: `DRAIN` from the supervisor, the supervisor going
//! away, or `SIGTERM`/`SIGINT`.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use hotsup_protocol::{DecodeError, RecvError, ToChild};

/// Why the process is draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DrainReason {
    /// The supervisor sent `DRAIN`: a newer generation is ready, or the
    /// supervisor is stopping. The supervisor kills the process group when
    /// `timeout` (counted from the moment the message arrived) runs out.
    Supervisor {
        /// The time the supervisor granted.
        timeout: Duration,
    },
    /// The channel to the supervisor reached end-of-file or failed: the
    /// supervisor is gone, so nobody will hand this process's sockets to a
    /// successor or tell it to stop. There is no deadline.
    SupervisorGone,
    /// The process received this signal (`SIGTERM` or `SIGINT`). There is no
    /// deadline.
    Signal(i32),
}

#[derive(Debug, Default)]
struct State {
    reason: Option<DrainReason>,
    deadline: Option<Instant>,
}

/// The state shared by every [`Drain`] handle of one handoff (or of the
/// standalone process) and the threads that trigger it.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    #[cfg(feature = "tokio")]
    watch: ::tokio::sync::watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            #[cfg(feature = "tokio")]
            watch: ::tokio::sync::watch::Sender::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two plain fields; a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the process draining. The first reason is kept; a deadline only
    /// ever moves earlier.
    pub(crate) fn trigger(&self, reason: DrainReason) {
        let mut state = self.lock();
        if state.reason.is_none() {
            state.reason = Some(reason);
        }
        if let DrainReason::Supervisor { timeout } = reason {
            // A timeout too large for `Instant` is the same as none.
            if let Some(at) = Instant::now().checked_add(timeout) {
                state.deadline = Some(state.deadline.map_or(at, |d| d.min(at)));
            }
        }
        drop(state);
        self.changed.notify_all();
        #[cfg(feature = "tokio")]
        self.watch.send_replace(true);
    }
}

/// A handle on the drain state: tells the app when to stop accepting and by
/// when it must be gone.
///
/// Obtained from [`drain()`](crate::drain()) (the process-wide state, which
/// also reacts to `SIGTERM` and `SIGINT`) or from
/// [`Handoff::drain`](crate::Handoff::drain). Cheap to clone; every clone
/// observes the same state. Once draining, a process stays draining.
#[derive(Debug, Clone)]
pub struct Drain {
    shared: Arc<Shared>,
}

impl Drain {
    pub(crate) fn new(shared: Arc<Shared>) -> Drain {
        Drain { shared }
    }

    /// Whether the process should drain: stop accepting new connections,
    /// finish what is in flight, and exit.
    pub fn is_draining(&self) -> bool {
        self.shared.lock().reason.is_some()
    }

    /// Why the process is draining, or `None` if it is not.
    pub fn reason(&self) -> Option<DrainReason> {
        self.shared.lock().reason
    }

    /// When the supervisor will kill the process group, if it said so.
    ///
    /// `None` while not draining, and when draining for a reason that carries
    /// no deadline (a signal, or the supervisor going away); apps pick their
    /// own bound then.
    pub fn deadline(&self) -> Option<Instant> {
        self.shared.lock().deadline
    }

    /// Blocks the calling thread until the process is draining.
    pub fn wait(&self) {
        let mut state = self.shared.lock();
        while state.reason.is_none() {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until the process is draining or `timeout` has passed; returns
    /// whether it is draining.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let state = self.shared.lock();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| s.reason.is_none())
            .unwrap_or_else(|e| e.into_inner());
        state.reason.is_some()
    }

    /// Waits asynchronously until the process is draining.
    ///
    /// Cancel-safe; usable from any async runtime, although it needs the
    /// `tokio` feature.
    #[cfg(feature = "tokio")]
    pub async fn wait_async(&self) {
        let mut rx = self.shared.watch.subscribe();
        // The sender lives in `self.shared`, so the channel cannot close.
        let _ = rx.wait_for(|draining| *draining).await;
    }
}

/// Starts the thread that reads the channel after the handshake and turns
/// `DRAIN` and end-of-file into drain state.
pub(crate) fn spawn_watcher(channel: Arc<OwnedFd>, shared: Arc<Shared>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("hotsup-channel".into())
        .spawn(move || watch_channel(&channel, &shared))?;
    Ok(())
}

fn watch_channel(channel: &OwnedFd, shared: &Shared) {
    let mut complained = false;
    loop {
        let msg = match hotsup_protocol::recv(channel.as_fd(), false) {
            Ok(msg) => msg,
            Err(RecvError::WouldBlock) => {
                // Only if someone made the channel nonblocking behind our back.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(RecvError::Truncated | RecvError::FdsTruncated) => {
                complain(&mut complained, "an oversized message");
                continue;
            }
            Err(RecvError::Closed | RecvError::Io(_)) => {
                shared.trigger(DrainReason::SupervisorGone);
                return;
            }
        };
        // Any fds attached to a message after the handshake are closed when
        // `msg` is dropped.
        match ToChild::decode(&msg.bytes) {
            Ok(ToChild::Drain { timeout }) => shared.trigger(DrainReason::Supervisor { timeout }),
            Ok(other) => complain(&mut complained, &format!("an unexpected {other:?}")),
            // Unknown verbs are ignored: a newer supervisor may send messages
            // this version does not know.
            Err(DecodeError::UnknownVerb(_)) => {}
            Err(e) => complain(&mut complained, &e.to_string()),
        }
    }
}

fn complain(complained: &mut bool, what: &str) {
    if !*complained {
        *complained = true;
        eprintln!("hotsup-child: ignoring {what} from the supervisor (further ones silently)");
    }
}

/// Makes `SIGTERM` and `SIGINT` trigger `shared`, once per process.
pub(crate) fn install_signal_handlers(shared: &Arc<Shared>) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("hotsup-child: cannot handle SIGTERM/SIGINT: {e}");
                return;
            }
        };
        let shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("hotsup-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    shared.trigger(DrainReason::Signal(signal));
                }
            });
        if let Err(e) = spawned {
            eprintln!("hotsup-child: cannot start the signal thread: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_deadline_only_moves_earlier() {
        let shared = Shared::new();
        let drain = Drain::new(Arc::clone(&shared));
        assert!(!drain.is_draining());
        assert!(!drain.wait_timeout(Duration::from_millis(1)));
        shared.trigger(DrainReason::Signal(15));
        assert!(drain.is_draining());
        assert_eq!(drain.deadline(), None);
        shared.trigger(DrainReason::Supervisor {
            timeout: Duration::from_secs(10),
        });
        let late = drain.deadline().unwrap();
        shared.trigger(DrainReason::Supervisor {
            timeout: Duration::from_secs(1),
        });
        let early = drain.deadline().unwrap();
        assert!(early < late);
        shared.trigger(DrainReason::Supervisor {
            timeout: Duration::from_secs(100),
        });
        assert_eq!(drain.deadline(), Some(early));
        assert_eq!(drain.reason(), Some(DrainReason::Signal(15)));
        drain.wait();
        assert!(drain.wait_timeout(Duration::ZERO));
    }

    #[test]
    fn wait_wakes_up() {
        let shared = Shared::new();
        let drain = Drain::new(Arc::clone(&shared));
        let waiter = std::thread::spawn(move || drain.wait());
        std::thread::sleep(Duration::from_millis(20));
        shared.trigger(DrainReason::SupervisorGone);
        waiter.join().unwrap();
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn wait_async_wakes_up() {
        let shared = Shared::new();
        let drain = Drain::new(Arc::clone(&shared));
        let rt = ::tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let task = ::tokio::spawn(async move { drain.wait_async().await });
            ::tokio::task::yield_now().await;
            shared.trigger(DrainReason::SupervisorGone);
            task.await.unwrap();
        });
    }
}
