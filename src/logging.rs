//! hotsup's log on stderr, written so that it can neither stop nor kill the
//! supervisor.
//!
//! stderr is not safe to write to. Its reader can go away (a pipe to `head`,
//! a closed terminal: EPIPE, EIO); nobody may read it (a full pipe blocks a
//! write); a child can make the open file description it shares with hotsup
//! non-blocking and fill it (EAGAIN). A blocking write on the runtime's only
//! thread would stop every signal, reap and deadline, and tracing-subscriber
//! reports a failed write with `eprintln!`, which panics on a broken stderr:
//! with `panic = "abort"` and PR_SET_PDEATHSIG, one log line would take the
//! whole service down. So:
//!
//! - Events are formatted where they happen and handed to a writer thread
//!   through a bounded queue of [`QUEUE_LINES`] lines (tracing-appender's
//!   lossy non-blocking writer): logging never waits for stderr. A line that
//!   finds the queue full is dropped and counted.
//! - The writer thread gives stderr at most [`WRITABLE_WAIT`] to accept a
//!   line (poll(2), then write(2) in pieces of at most `PIPE_BUF`), and
//!   drops it otherwise; after that it drops lines at once until stderr
//!   accepts writes again, so a stuck stderr costs no time per line and no
//!   CPU. Write errors are counted, never printed and never fatal.
//! - The next line that does get written is preceded by a `WARN` line
//!   saying how many were dropped; [`dropped_lines`] is the total, shown by
//!   `hotsup status`.
//! - The writer thread blocks every signal: they are the supervisor's (see
//!   [`crate::signals`]). It never spawns anything: children are spawned by
//!   the runtime's thread, whose lifetime PR_SET_PDEATHSIG ties them to.
//!
//! Client commands do not log; they print with [`print`] and [`report`],
//! which never panic either.

use std::fmt::Display;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Lines waiting for the writer thread; more are dropped. The queue's slots
/// are allocated up front, so this stays small (about 32 KiB).
const QUEUE_LINES: usize = 1024;
/// How long the writer thread waits for stderr to accept a line before it
/// drops it.
const WRITABLE_WAIT: Duration = Duration::from_secs(1);
/// How long exiting waits for queued lines to be written.
const FLUSH_WAIT: Duration = Duration::from_secs(2);
/// Writes up to this size are atomic on a pipe, and fit once poll(2) says
/// it is writable.
const PIPE_BUF: usize = rustix::pipe::PIPE_BUF;

static QUEUE: OnceLock<NonBlocking> = OnceLock::new();
/// `--log-format json`: the notice of dropped lines is a JSON line too.
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Lines handed to the queue.
static SUBMITTED: AtomicU64 = AtomicU64::new(0);
/// Lines the writer thread took off the queue, written or not.
static HANDLED: AtomicU64 = AtomicU64::new(0);
/// Lines the writer thread could not write.
static UNWRITTEN: AtomicU64 = AtomicU64::new(0);

/// Log lines lost so far: the queue was full, or stderr did not take them.
pub fn dropped_lines() -> u64 {
    let full = QUEUE
        .get()
        .map_or(0, |q| q.error_counter().dropped_lines() as u64);
    UNWRITTEN.load(Ordering::SeqCst) + full
}

/// The running log; dropping it writes what is queued, for a bounded time.
pub struct Logging {
    guard: Option<WorkerGuard>,
}

/// Starts logging for `hotsup run`: `-v`/`-q` pick the level, `RUST_LOG`
/// overrides it (`LEVEL` and `TARGET=LEVEL` directives, comma-separated,
/// as tracing-subscriber's `Targets` reads them: span and field filters
/// would need its regex-based `EnvFilter`; a value that does not parse is
/// ignored); `format` is `--log-format`.
pub fn init(verbose: u8, quiet: u8, format: crate::cli::LogFormat) -> Logging {
    let level = match (verbose, quiet) {
        (0, 0) => LevelFilter::INFO,
        (1, _) => LevelFilter::DEBUG,
        (v, _) if v >= 2 => LevelFilter::TRACE,
        (_, 1) => LevelFilter::WARN,
        _ => LevelFilter::ERROR,
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(level));
    let (queue, guard) = with_signals_blocked(|| {
        NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(QUEUE_LINES)
            .thread_name("hotsup-log")
            .finish(Stderr::default())
    });
    let _ = QUEUE.set(queue);
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(Queue)
        .with_target(false)
        .log_internal_errors(false);
    let _ = match format {
        crate::cli::LogFormat::Json => {
            JSON.store(true, Ordering::SeqCst);
            builder
                .event_format(crate::events::JsonLines)
                .finish()
                .with(filter)
                .try_init()
        }
        // journald stamps lines itself, and shows no colours.
        crate::cli::LogFormat::Text if under_journald() => builder
            .without_time()
            .with_ansi(false)
            .finish()
            .with(filter)
            .try_init(),
        crate::cli::LogFormat::Text => builder
            .with_ansi(rustix::termios::isatty(io::stderr()))
            .finish()
            .with(filter)
            .try_init(),
    };
    Logging { guard: Some(guard) }
}

impl Drop for Logging {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let deadline = Instant::now() + FLUSH_WAIT;
        loop {
            let full = QUEUE
                .get()
                .map_or(0, |q| q.error_counter().dropped_lines() as u64);
            if HANDLED.load(Ordering::SeqCst) + full >= SUBMITTED.load(Ordering::SeqCst) {
                // The queue is empty, so the guard's shutdown message goes
                // through at once and its thread ends with a flush that
                // cannot fail: neither of its error paths (a `println!`
                // when the queue stays full, an `eprintln!` when the flush
                // fails) can run.
                drop(guard);
                return;
            }
            if Instant::now() >= deadline {
                // stderr is stuck: exit without the lines still queued.
                std::mem::forget(guard);
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Waits, at most `wait`, until the writer thread has taken every line
/// queued so far. For `hotsup upgrade --self` just before `execve`, which
/// ends that thread with whatever it had not written: a bounded wait at a
/// moment when the loop stops anyway.
pub fn drain_queue(wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        let full = QUEUE
            .get()
            .map_or(0, |q| q.error_counter().dropped_lines() as u64);
        if HANDLED.load(Ordering::SeqCst) + full >= SUBMITTED.load(Ordering::SeqCst)
            || Instant::now() >= deadline
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Writes `hotsup: MSG` on stderr: through the writer thread once logging
/// runs, so that it cannot block the supervisor; directly before that. It
/// never fails: there is nowhere left to report a failure to.
pub fn report(msg: impl Display) {
    let line = format!("hotsup: {msg}\n");
    if QUEUE.get().is_some() {
        enqueue(line.as_bytes());
    } else {
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }
}

/// Writes `text` on stdout. A reader that went away (EPIPE, as with
/// `| head`) is not an error: the output was not wanted any more. Other
/// errors are returned.
pub fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn enqueue(line: &[u8]) {
    if let Some(q) = QUEUE.get() {
        SUBMITTED.fetch_add(1, Ordering::SeqCst);
        // Lossy: never blocks, and never fails (a full queue is counted).
        let _ = q.clone().write_all(line);
    }
}

/// The subscriber's writer: one queued message per event (the fmt layer
/// writes each formatted event with one `write_all`).
struct Queue;

impl<'a> MakeWriter<'a> for Queue {
    type Writer = Queue;
    fn make_writer(&'a self) -> Queue {
        Queue
    }
}

impl Write for Queue {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        enqueue(buf);
        Ok(buf.len())
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        enqueue(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writer thread's end: stderr, written without blocking for long,
/// without errors and without panics. tracing-appender's worker stops at
/// nothing on a write error but never counts it, and prints with
/// `eprintln!` when a final flush fails: so this reports no error at all,
/// and counts instead.
#[derive(Default)]
struct Stderr {
    /// The last line was not written: drop lines at once until stderr
    /// takes one again.
    stalled: bool,
    /// A line was cut short: the next one must start on a new line.
    torn: bool,
    /// `dropped_lines()` when the last notice was written.
    announced: u64,
    notice: Vec<u8>,
}

impl Write for Stderr {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.line(line);
        HANDLED.fetch_add(1, Ordering::SeqCst);
        Ok(line.len())
    }
    fn write_all(&mut self, line: &[u8]) -> io::Result<()> {
        self.write(line).map(drop)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stderr {
    fn line(&mut self, line: &[u8]) {
        let dropped = dropped_lines();
        if dropped > self.announced {
            let mut notice = std::mem::take(&mut self.notice);
            notice.clear();
            if self.torn {
                notice.push(b'\n');
            }
            if JSON.load(Ordering::Relaxed) {
                let _ = writeln!(
                    notice,
                    r#"{{"event":"log_lines_dropped","level":"warn","dropped":{},"total":{dropped}}}"#,
                    dropped - self.announced
                );
            } else {
                // The timestamp of the line that follows (with its colours
                // on a terminal), so that the notice reads like any other
                // line.
                if line
                    .first()
                    .is_some_and(|b| b.is_ascii_digit() || *b == 0x1b)
                    && let Some(stamp) = line.split(|b| *b == b' ').next()
                {
                    notice.extend_from_slice(stamp);
                    notice.extend_from_slice(b"  ");
                }
                let _ = writeln!(
                    notice,
                    "WARN log_lines_dropped dropped={} total={dropped}",
                    dropped - self.announced
                );
            }
            let written = self.deliver(&notice);
            self.notice = notice;
            if !written {
                UNWRITTEN.fetch_add(1, Ordering::SeqCst);
                return;
            }
            self.announced = dropped;
        }
        if !self.deliver(line) {
            UNWRITTEN.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Writes all of `bytes`, or gives up after at most `WRITABLE_WAIT`
    /// (at once while stalled).
    fn deliver(&mut self, bytes: &[u8]) -> bool {
        let wait = if self.stalled {
            Duration::ZERO
        } else {
            WRITABLE_WAIT
        };
        let deadline = Instant::now() + wait;
        let stderr = io::stderr();
        let fd = stderr.as_fd();
        let mut rest = bytes;
        let mut eagain = 0;
        while !rest.is_empty() {
            if !writable(fd, deadline) {
                return self.failed(rest.len() < bytes.len());
            }
            let piece = &rest[..rest.len().min(PIPE_BUF)];
            match rustix::io::write(fd, piece) {
                Ok(n) if n > 0 => rest = &rest[n..],
                Err(Errno::INTR) => {}
                // Someone else filled it between poll and write; poll again,
                // a few times: a non-blocking stderr must not make this spin.
                Err(Errno::AGAIN) if eagain < 3 => eagain += 1,
                _ => return self.failed(rest.len() < bytes.len()),
            }
        }
        self.stalled = false;
        self.torn = false;
        true
    }

    fn failed(&mut self, partial: bool) -> bool {
        self.stalled = true;
        self.torn |= partial;
        false
    }
}

/// Waits until `fd` can take a write, at most until `deadline`.
fn writable(fd: BorrowedFd<'_>, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::OUT)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) => return false,
            Ok(_) => {
                let revents = fds[0].revents();
                return revents.contains(PollFlags::OUT)
                    && !revents.intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL);
            }
            // Bounded: the deadline passes.
            Err(Errno::INTR) => {}
            Err(_) => return false,
        }
    }
}

/// Runs `f` (which starts the writer thread) with every signal blocked, so
/// that the thread it starts inherits that mask and never takes a signal
/// meant for the supervisor.
pub(crate) fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    let old = crate::sys::block_all_signals();
    let out = f();
    if let Ok(old) = old {
        crate::sys::restore_signals(&old);
    }
    out
}

/// Whether stderr is the journal: `JOURNAL_STREAM` names its device and
/// inode (systemd.exec(5)).
fn under_journald() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(io::stderr()) else {
        return false;
    };
    stream.to_str() == Some(&format!("{}:{}", st.st_dev, st.st_ino))
}
