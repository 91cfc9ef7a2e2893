//! The process's lifecycle as the supervisor drives it: serving, paused
//! (protocol version 2) or draining, plus the work still in flight.
//!
//! One [`Shared`] state per handoff; the channel thread and the signal
//! thread change it, every [`Lifecycle`] handle observes it. Waiting works
//! three ways: blocking (a condition variable), async with any runtime (the
//! futures below keep their wakers here), and around a std listener's
//! `accept` (which polls the listener with short timeouts).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long [`Lifecycle::accept`] waits on a listener before it looks at
/// the state again, should no eventfd be available to wake it at once.
const ACCEPT_SLICE: Duration = Duration::from_millis(20);

/// What the app should be doing with its listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Accept new connections.
    Serving,
    /// Accept nothing new, but keep the listeners, the process and every
    /// open connection: the supervisor may resume this process at any
    /// moment (`PAUSE`, protocol version 2, only after
    /// [`Handoff::enable_pause`](crate::Handoff::enable_pause)).
    Paused,
    /// Stop accepting for good, finish the work in flight and exit, before
    /// [`Lifecycle::deadline`] if there is one.
    Draining,
}

/// A signal that starts a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// `SIGTERM`: what service managers (and `hotsup run --fds systemd`)
    /// send to stop a process.
    Term,
    /// `SIGINT`: Ctrl-C.
    Int,
}

impl Signal {
    /// The conventional name: `SIGTERM` or `SIGINT`.
    pub fn name(self) -> &'static str {
        // hotsup-os names every standard signal; its tests cover these two.
        hotsup_os::signals::name(self.number()).unwrap_or("SIGTERM")
    }

    /// The signal's number on this platform.
    pub fn number(self) -> i32 {
        match self {
            Signal::Term => signal_hook::consts::SIGTERM,
            Signal::Int => signal_hook::consts::SIGINT,
        }
    }

    fn from_number(n: i32) -> Option<Signal> {
        [Signal::Term, Signal::Int]
            .into_iter()
            .find(|s| s.number() == n)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the process is draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DrainReason {
    /// The supervisor sent `DRAIN`: a newer generation is ready, or the
    /// supervisor is stopping. It kills the process group when `timeout`
    /// (counted from the moment the message arrived) runs out.
    Supervisor {
        /// The time the supervisor granted.
        timeout: Duration,
    },
    /// The channel to the supervisor reached end-of-file or failed: the
    /// supervisor is gone, so nobody will hand this process's sockets to a
    /// successor or tell it to stop. There is no deadline.
    SupervisorGone,
    /// The process received this signal. There is no deadline.
    Signal(Signal),
}

impl fmt::Display for DrainReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrainReason::Supervisor { timeout } => {
                write!(f, "the supervisor asked to drain within {timeout:?}")
            }
            DrainReason::SupervisorGone => f.write_str("the supervisor is gone"),
            DrainReason::Signal(s) => write!(f, "{s} received"),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    paused: bool,
    reason: Option<DrainReason>,
    deadline: Option<Instant>,
    in_flight: usize,
    /// Bumped on every change, so that a waiter can tell "changed since I
    /// looked" from "the same".
    epoch: u64,
    wakers: HashMap<u64, Waker>,
    next_waiter: u64,
}

impl Inner {
    fn state(&self) -> State {
        if self.reason.is_some() {
            State::Draining
        } else if self.paused {
            State::Paused
        } else {
            State::Serving
        }
    }
}

/// The state every [`Lifecycle`] handle of one handoff shares.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl Shared {
    pub(crate) fn new() -> Arc<Shared> {
        Arc::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain fields, each write complete: a panic elsewhere cannot leave
        // them half-updated.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` and wakes every waiter if it changed anything.
    fn update(&self, change: impl FnOnce(&mut Inner) -> bool) {
        self.wake_if(true, change);
    }

    /// Like [`update`](Self::update); `bump` says whether the change is one
    /// of the lifecycle (state, deadline) that [`Lifecycle::changed`]
    /// reports, rather than of the work in flight.
    fn wake_if(&self, bump: bool, change: impl FnOnce(&mut Inner) -> bool) {
        let mut inner = self.lock();
        if !change(&mut inner) {
            return;
        }
        if bump {
            inner.epoch += 1;
        }
        let wakers: Vec<Waker> = inner.wakers.drain().map(|(_, w)| w).collect();
        drop(inner);
        self.changed.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Marks the process draining. The first reason is kept; a deadline only
    /// ever moves earlier.
    pub(crate) fn drain(&self, reason: DrainReason) {
        self.update(|inner| {
            let mut changed = false;
            if inner.reason.is_none() {
                inner.reason = Some(reason);
                changed = true;
            }
            if let DrainReason::Supervisor { timeout } = reason {
                // A timeout too large for `Instant` is the same as none.
                if let Some(at) = Instant::now().checked_add(timeout)
                    && inner.deadline.is_none_or(|d| at < d)
                {
                    inner.deadline = Some(at);
                    changed = true;
                }
            }
            changed
        });
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        self.update(|inner| std::mem::replace(&mut inner.paused, paused) != paused);
    }

    fn enter(&self) {
        self.lock().in_flight += 1;
    }

    fn leave(&self) {
        self.wake_if(false, |inner| {
            inner.in_flight = inner.in_flight.saturating_sub(1);
            inner.in_flight == 0
        });
    }

    /// Blocks until `done` holds or `timeout` (if any) passes; returns the
    /// state at that point and whether `done` held.
    fn wait_until(
        &self,
        timeout: Option<Duration>,
        done: impl Fn(&Inner) -> bool,
    ) -> (State, bool) {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut inner = self.lock();
        loop {
            if done(&inner) {
                return (inner.state(), true);
            }
            inner = match deadline {
                None => self.changed.wait(inner).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return (inner.state(), false);
                    }
                    self.changed
                        .wait_timeout(inner, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// A handle on the lifecycle: whether to accept, pause or drain, by when to
/// be gone, and how much work is still in flight.
///
/// Obtained from [`Handoff::lifecycle`](crate::Handoff::lifecycle) or
/// [`lifecycle()`](crate::lifecycle()). Cheap to clone; every clone observes
/// the same state. The state goes from [`State::Serving`] to
/// [`State::Paused`] and back as the supervisor says, and once
/// [`State::Draining`], it stays there.
///
/// ```
/// # fn demo(lifecycle: hotsup_child::Lifecycle, listener: std::net::TcpListener) {
/// // A blocking accept loop that honours PAUSE, RESUME and DRAIN.
/// while let Some(accepted) = lifecycle.accept(&listener) {
///     match accepted {
///         Ok((conn, _)) => { /* hand `conn` to a worker */ }
///         Err(e) => eprintln!("accept: {e}"),
///     }
/// }
/// // Draining: finish the work in flight, then exit.
/// lifecycle.wait_idle_until(lifecycle.exit_by(std::time::Duration::from_secs(10)));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Lifecycle {
    shared: Arc<Shared>,
}

impl Lifecycle {
    pub(crate) fn new(shared: Arc<Shared>) -> Lifecycle {
        Lifecycle { shared }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.shared.lock().state()
    }

    /// Whether the process should drain: stop accepting new connections,
    /// finish what is in flight, and exit.
    pub fn is_draining(&self) -> bool {
        self.state() == State::Draining
    }

    /// Whether the supervisor paused this process (and it is not draining).
    pub fn is_paused(&self) -> bool {
        self.state() == State::Paused
    }

    /// Why the process is draining, or `None` if it is not.
    pub fn drain_reason(&self) -> Option<DrainReason> {
        self.shared.lock().reason
    }

    /// When the supervisor will kill the process group, if it said so.
    ///
    /// `None` while not draining, and when draining for a reason that carries
    /// no deadline (a signal, or the supervisor going away).
    pub fn deadline(&self) -> Option<Instant> {
        self.shared.lock().deadline
    }

    /// When to be gone: shortly before [`deadline`](Self::deadline) (a tenth
    /// of the time left, at most 200 ms, so that the supervisor sees a clean
    /// exit rather than having to kill), or `default` from now when there is
    /// no deadline.
    pub fn exit_by(&self, default: Duration) -> Instant {
        let now = Instant::now();
        match self.deadline() {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(now);
                deadline - (left / 10).min(Duration::from_millis(200))
            }
            None => now.checked_add(default).unwrap_or(now),
        }
    }

    /// Blocks the calling thread until the process is draining.
    pub fn wait_drain(&self) {
        self.shared.wait_until(None, |i| i.reason.is_some());
    }

    /// Blocks until the process is draining or `timeout` has passed; returns
    /// whether it is draining.
    pub fn wait_drain_timeout(&self, timeout: Duration) -> bool {
        self.shared
            .wait_until(Some(timeout), |i| i.reason.is_some())
            .1
    }

    /// Blocks until the state differs from `seen` or `timeout` (if any)
    /// passes; returns the state then.
    ///
    /// Changes quicker than the caller looks can be merged: a pause and a
    /// resume in between two calls are not seen.
    pub fn wait_change(&self, seen: State, timeout: Option<Duration>) -> State {
        self.shared.wait_until(timeout, |i| i.state() != seen).0
    }

    /// Blocks while paused; returns [`State::Serving`] or
    /// [`State::Draining`].
    pub fn wait_serving(&self) -> State {
        self.shared
            .wait_until(None, |i| i.state() != State::Paused)
            .0
    }

    /// Accepts one connection from a std listener while serving; waits
    /// while paused; returns `None` once draining.
    ///
    /// Works with the listener in either mode, but see
    /// [Blocking mode](crate#blocking-mode): it waits with `poll(2)` for a
    /// connection or a change of state, whichever comes first, so that a
    /// pause or a drain is noticed at once. With a nonblocking listener, a
    /// connection that another generation took first is simply waited for
    /// again; a blocking listener would block in `accept` until the next
    /// one.
    ///
    /// Errors of `accept` are returned as they are (`EINTR` and
    /// `ECONNABORTED` are retried); an app usually logs them and goes on.
    pub fn accept<L: Accept>(&self, listener: &L) -> Option<io::Result<(L::Conn, L::Addr)>> {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let wake = FdWaker::for_this_thread();
        loop {
            // Taken before the state is read, so no change in between is
            // missed; it wakes `wake` when the state changes.
            let mut changed = self.changed();
            match self.state() {
                State::Draining => return None,
                State::Paused => {
                    self.wait_change(State::Paused, None);
                    continue;
                }
                _ => {}
            }
            let woken = match &wake {
                Some(wake) => {
                    let waker = Waker::from(Arc::clone(wake));
                    if Pin::new(&mut changed)
                        .poll(&mut Context::from_waker(&waker))
                        .is_ready()
                    {
                        continue;
                    }
                    let mut fds = [
                        PollFd::new(listener, PollFlags::IN),
                        PollFd::new(&wake.fd, PollFlags::IN),
                    ];
                    let polled = rustix::event::poll(&mut fds, None);
                    let woken = !fds[1].revents().is_empty();
                    if woken {
                        wake.reset();
                    }
                    polled.map(|_| woken)
                }
                // No eventfd: look at the state again every slice.
                None => {
                    let slice = Timespec {
                        tv_sec: 0,
                        tv_nsec: ACCEPT_SLICE.as_nanos() as _,
                    };
                    let mut fds = [PollFd::new(listener, PollFlags::IN)];
                    rustix::event::poll(&mut fds, Some(&slice)).map(|n| n == 0)
                }
            };
            match woken {
                Ok(true) | Err(rustix::io::Errno::INTR) => continue,
                Ok(false) => {}
                Err(e) => return Some(Err(e.into())),
            }
            // A pause or drain that arrived meanwhile wins over the
            // connection: it stays in the backlog for another generation.
            if self.state() != State::Serving {
                continue;
            }
            match listener.accept() {
                Ok(accepted) => return Some(Ok(accepted)),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Runs `accept` while serving, waits while paused, returns `None` once
    /// draining: the async form of [`accept`](Self::accept), for any
    /// runtime.
    ///
    /// `accept` makes the future of one accept, such as
    /// `|| listener.accept()` with tokio. When the state changes while that
    /// future is pending, it is dropped (tokio's `accept` is cancel-safe: no
    /// connection is lost) and the state looked at again.
    ///
    /// ```no_run
    /// # async fn demo(lifecycle: hotsup_child::Lifecycle, listener: tokio::net::TcpListener) {
    /// while let Some(accepted) = lifecycle.accept_async(|| listener.accept()).await {
    ///     if let Ok((conn, _)) = accepted {
    ///         tokio::spawn(async move { drop(conn) });
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn accept_async<F: Future>(
        &self,
        mut accept: impl FnMut() -> F,
    ) -> Option<F::Output> {
        loop {
            // Taken before the state is read, so no change in between is
            // missed.
            let changed = self.changed();
            match self.state() {
                State::Draining => return None,
                State::Paused => changed.await,
                State::Serving => {
                    let mut accepting = std::pin::pin!(accept());
                    let mut changed = std::pin::pin!(changed);
                    let accepted = std::future::poll_fn(|cx| {
                        if let Poll::Ready(v) = accepting.as_mut().poll(cx) {
                            return Poll::Ready(Some(v));
                        }
                        changed.as_mut().poll(cx).map(|()| None)
                    })
                    .await;
                    if accepted.is_some() {
                        return accepted;
                    }
                }
            }
        }
    }

    /// A future that completes once the process is draining.
    ///
    /// Owned (`'static`, `Send`) and runtime-agnostic, so it can be handed to
    /// APIs such as axum's `with_graceful_shutdown` or hyper-util's, and
    /// awaited from any executor.
    pub fn drained(&self) -> Wait {
        Wait::new(&self.shared, Cond::Draining)
    }

    /// A future that completes at the next change of [`state`](Self::state)
    /// (or of the drain deadline) after this call. It may also be woken
    /// (and stay pending) when the work in flight ends.
    pub fn changed(&self) -> Wait {
        let epoch = self.shared.lock().epoch;
        Wait::new(&self.shared, Cond::ChangedSince(epoch))
    }

    /// A future that completes when the process is not paused: it is
    /// serving or draining.
    pub fn serving(&self) -> Wait {
        Wait::new(&self.shared, Cond::NotPaused)
    }

    /// Counts one piece of work (a request, a connection) as in flight until
    /// the returned guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.shared.enter();
        InFlight {
            shared: Arc::clone(&self.shared),
        }
    }

    /// How many [`InFlight`] guards are alive.
    pub fn in_flight_count(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// Blocks until no work is in flight or `deadline` passes; returns
    /// whether everything finished.
    pub fn wait_idle_until(&self, deadline: Instant) -> bool {
        let timeout = deadline.saturating_duration_since(Instant::now());
        self.shared
            .wait_until(Some(timeout), |i| i.in_flight == 0)
            .1
    }

    /// A future that completes when no work is in flight (see
    /// [`in_flight`](Self::in_flight)); bound it with your runtime's timeout
    /// and [`exit_by`](Self::exit_by).
    pub fn idle(&self) -> Wait {
        Wait::new(&self.shared, Cond::Idle)
    }
}

/// A listener that [`Lifecycle::accept`] can wait on.
pub trait Accept: AsFd {
    /// An accepted connection.
    type Conn;
    /// The peer's address.
    type Addr;
    /// The listener's own `accept`.
    fn accept(&self) -> io::Result<(Self::Conn, Self::Addr)>;
}

impl Accept for std::net::TcpListener {
    type Conn = std::net::TcpStream;
    type Addr = std::net::SocketAddr;
    fn accept(&self) -> io::Result<(Self::Conn, Self::Addr)> {
        std::net::TcpListener::accept(self)
    }
}

impl Accept for std::os::unix::net::UnixListener {
    type Conn = std::os::unix::net::UnixStream;
    type Addr = std::os::unix::net::SocketAddr;
    fn accept(&self) -> io::Result<(Self::Conn, Self::Addr)> {
        std::os::unix::net::UnixListener::accept(self)
    }
}

/// Wakes a thread blocked in `poll(2)` through an eventfd: how
/// [`Lifecycle::accept`] waits for a connection and a change of state at
/// once.
struct FdWaker {
    fd: std::os::fd::OwnedFd,
}

impl FdWaker {
    /// One per thread, made on first use; `None` if no eventfd can be had.
    fn for_this_thread() -> Option<Arc<FdWaker>> {
        thread_local! {
            static WAKE: Option<Arc<FdWaker>> = {
                use rustix::event::{EventfdFlags, eventfd};
                eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
                    .ok()
                    .map(|fd| Arc::new(FdWaker { fd }))
            };
        }
        WAKE.with(Clone::clone)
    }

    fn reset(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut buf);
    }
}

impl std::task::Wake for FdWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // A full counter (never, at 2^64 - 2) still reads as readable.
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }
}

/// Counts as work in flight while alive; see [`Lifecycle::in_flight`].
#[derive(Debug)]
#[must_use = "the work counts as in flight only while the guard lives"]
pub struct InFlight {
    shared: Arc<Shared>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.leave();
    }
}

#[derive(Debug, Clone, Copy)]
enum Cond {
    Draining,
    NotPaused,
    Idle,
    ChangedSince(u64),
}

impl Cond {
    fn holds(self, inner: &Inner) -> bool {
        match self {
            Cond::Draining => inner.reason.is_some(),
            Cond::NotPaused => inner.state() != State::Paused,
            Cond::Idle => inner.in_flight == 0,
            Cond::ChangedSince(epoch) => inner.epoch != epoch,
        }
    }
}

/// A future that waits for a condition of the [`Lifecycle`]; returned by
/// [`Lifecycle::drained`], [`changed`](Lifecycle::changed),
/// [`serving`](Lifecycle::serving) and [`idle`](Lifecycle::idle).
///
/// `Send`, `'static`, cancel-safe, and independent of any runtime: it keeps
/// its waker in the shared state, which the crate's threads wake.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Wait {
    shared: Arc<Shared>,
    cond: Cond,
    /// Its slot among the wakers, once it has registered one.
    id: Option<u64>,
}

impl Wait {
    fn new(shared: &Arc<Shared>, cond: Cond) -> Wait {
        Wait {
            shared: Arc::clone(shared),
            cond,
            id: None,
        }
    }
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut inner = this.shared.lock();
        if this.cond.holds(&inner) {
            if let Some(id) = this.id.take() {
                inner.wakers.remove(&id);
            }
            return Poll::Ready(());
        }
        let id = *this.id.get_or_insert_with(|| {
            inner.next_waiter += 1;
            inner.next_waiter
        });
        match inner.wakers.get_mut(&id) {
            Some(w) if w.will_wake(cx.waker()) => {}
            Some(w) => w.clone_from(cx.waker()),
            None => {
                inner.wakers.insert(id, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.shared.lock().wakers.remove(&id);
        }
    }
}

/// Makes `SIGTERM` and `SIGINT` drain `shared` (and every other state
/// registered before), installing the handlers once per process.
pub(crate) fn drain_on_signals(shared: &Arc<Shared>) {
    static TARGETS: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());
    static INSTALL: Once = Once::new();
    {
        let mut targets = TARGETS.lock().unwrap_or_else(|e| e.into_inner());
        targets.retain(|t| t.strong_count() > 0);
        if !targets.iter().any(|t| t.as_ptr() == Arc::as_ptr(shared)) {
            targets.push(Arc::downgrade(shared));
        }
    }
    INSTALL.call_once(|| {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) {
            Ok(s) => s,
            Err(e) => {
                crate::warn(format_args!("cannot handle SIGTERM/SIGINT: {e}"));
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("hotsup-signals".into())
            .spawn(move || {
                for number in signals.forever() {
                    let Some(signal) = Signal::from_number(number) else {
                        continue;
                    };
                    let targets: Vec<Arc<Shared>> = TARGETS
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .filter_map(Weak::upgrade)
                        .collect();
                    for target in targets {
                        target.drain(DrainReason::Signal(signal));
                    }
                }
            });
        if let Err(e) = spawned {
            crate::warn(format_args!("cannot start the signal thread: {e}"));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(fut: &mut Wait, waker: &Arc<Count>) -> Poll<()> {
        let waker = Waker::from(Arc::clone(waker));
        Pin::new(fut).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn first_reason_wins_and_deadline_only_moves_earlier() {
        let shared = Shared::new();
        let lc = Lifecycle::new(Arc::clone(&shared));
        assert_eq!(lc.state(), State::Serving);
        assert!(!lc.wait_drain_timeout(Duration::from_millis(1)));
        shared.drain(DrainReason::Signal(Signal::Term));
        assert!(lc.is_draining());
        assert_eq!(lc.deadline(), None);
        shared.drain(DrainReason::Supervisor {
            timeout: Duration::from_secs(10),
        });
        let late = lc.deadline().unwrap();
        shared.drain(DrainReason::Supervisor {
            timeout: Duration::from_secs(1),
        });
        let early = lc.deadline().unwrap();
        assert!(early < late);
        shared.drain(DrainReason::Supervisor {
            timeout: Duration::from_secs(100),
        });
        assert_eq!(lc.deadline(), Some(early));
        assert_eq!(lc.drain_reason(), Some(DrainReason::Signal(Signal::Term)));
        assert!(lc.exit_by(Duration::ZERO) < early);
        lc.wait_drain();
        assert!(lc.wait_drain_timeout(Duration::ZERO));
    }

    #[test]
    fn pause_resume_and_draining_wins() {
        let shared = Shared::new();
        let lc = Lifecycle::new(Arc::clone(&shared));
        shared.set_paused(true);
        assert_eq!(lc.state(), State::Paused);
        assert_eq!(
            lc.wait_change(State::Paused, Some(Duration::from_millis(1))),
            State::Paused
        );
        shared.set_paused(false);
        assert_eq!(lc.wait_serving(), State::Serving);
        shared.set_paused(true);
        shared.drain(DrainReason::SupervisorGone);
        assert_eq!(lc.state(), State::Draining);
        // A resume after the drain changes nothing visible.
        shared.set_paused(false);
        assert_eq!(lc.wait_serving(), State::Draining);
    }

    #[test]
    fn futures_wake_on_their_condition_only() {
        let shared = Shared::new();
        let lc = Lifecycle::new(Arc::clone(&shared));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let mut drained = lc.drained();
        let mut changed = lc.changed();
        let mut serving = lc.serving();
        assert!(poll(&mut serving, &count).is_ready());
        assert!(poll(&mut drained, &count).is_pending());
        assert!(poll(&mut changed, &count).is_pending());
        // Polling again does not register twice.
        assert!(poll(&mut drained, &count).is_pending());
        assert_eq!(shared.lock().wakers.len(), 2);

        shared.set_paused(true);
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "both woken once");
        assert!(poll(&mut changed, &count).is_ready());
        assert!(poll(&mut drained, &count).is_pending());
        let mut serving = lc.serving();
        assert!(poll(&mut serving, &count).is_pending());
        drop(serving);
        assert_eq!(shared.lock().wakers.len(), 1, "a dropped future leaves");

        shared.drain(DrainReason::SupervisorGone);
        assert!(poll(&mut drained, &count).is_ready());
        assert!(shared.lock().wakers.is_empty());
    }

    #[test]
    fn in_flight_work_is_counted() {
        let shared = Shared::new();
        let lc = Lifecycle::new(Arc::clone(&shared));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let a = lc.in_flight();
        let b = lc.in_flight();
        assert_eq!(lc.in_flight_count(), 2);
        let mut idle = lc.idle();
        assert!(poll(&mut idle, &count).is_pending());
        assert!(!lc.wait_idle_until(Instant::now()));
        drop(a);
        assert!(poll(&mut idle, &count).is_pending());
        let waiter = {
            let lc = lc.clone();
            std::thread::spawn(move || lc.wait_idle_until(Instant::now() + Duration::from_secs(30)))
        };
        drop(b);
        assert!(waiter.join().unwrap());
        assert!(poll(&mut idle, &count).is_ready());
        assert_eq!(lc.in_flight_count(), 0);
        // The end of the work is no change of state.
        let mut changed = lc.changed();
        assert!(poll(&mut changed, &count).is_pending());
        drop(lc.in_flight());
        assert!(poll(&mut changed, &count).is_pending());
    }

    #[test]
    fn blocking_waits_wake_up() {
        let shared = Shared::new();
        let lc = Lifecycle::new(Arc::clone(&shared));
        shared.set_paused(true);
        let waiter = {
            let lc = lc.clone();
            std::thread::spawn(move || (lc.wait_serving(), lc.wait_drain()))
        };
        shared.set_paused(false);
        shared.drain(DrainReason::SupervisorGone);
        let (state, ()) = waiter.join().unwrap();
        assert!(matches!(state, State::Serving | State::Draining));
    }

    #[test]
    fn signal_names() {
        assert_eq!(Signal::Term.to_string(), "SIGTERM");
        assert_eq!(Signal::Int.to_string(), "SIGINT");
        assert_eq!(Signal::from_number(2), Some(Signal::Int));
        assert_eq!(
            DrainReason::Signal(Signal::Int).to_string(),
            "SIGINT received"
        );
    }
}
