//! The hotsup process under test: starting it, reading its log, signalling
//! it, and cleaning up after it on every path (including errors and
//! panics), by pid only.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal};

use super::logline::{self, Kind, LogLine};
use super::procfs;

/// How often waits check whether hotsup is still alive.
const POLL: Duration = Duration::from_millis(50);

enum Msg {
    Line(LogLine),
    Eof,
}

/// Why a wait for a log line ended without it.
#[derive(Debug)]
pub enum WaitError {
    Timeout,
    /// hotsup exited (or closed its stderr).
    Gone(Option<ExitStatus>),
}

impl std::fmt::Display for WaitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitError::Timeout => f.write_str("timed out"),
            WaitError::Gone(Some(s)) => write!(f, "hotsup exited ({s})"),
            WaitError::Gone(None) => f.write_str("hotsup closed its stderr"),
        }
    }
}

/// A running `hotsup run ...` with its log.
pub struct Hotsup {
    child: Child,
    pid: i32,
    /// File name of the supervised program (`http`), to recognise its
    /// processes when sweeping leftovers.
    program_comm: String,
    rx: Receiver<Msg>,
    eof: bool,
    exit: Option<ExitStatus>,
    /// Every line read so far, in order.
    pub lines: Vec<LogLine>,
}

impl Hotsup {
    /// Starts `hotsup run -l 127.0.0.1:0 --drain-timeout DRAIN -- PROGRAM`
    /// with stderr piped to a reader thread.
    pub fn start(hotsup: &Path, program: &Path, drain_timeout: Duration) -> Result<Hotsup> {
        Hotsup::start_with_listeners(hotsup, program, drain_timeout, 1)
    }

    /// Like [`Hotsup::start`] with `listeners` times `-l 127.0.0.1:0`.
    pub fn start_with_listeners(
        hotsup: &Path,
        program: &Path,
        drain_timeout: Duration,
        listeners: usize,
    ) -> Result<Hotsup> {
        let mut cmd = Command::new(hotsup);
        let bench_pid = rustix::process::getpid();
        // SAFETY: the closure runs in the forked child before exec, where
        // only async-signal-safe calls are allowed: it makes two raw
        // syscalls (prctl, getppid) on a value captured by copy, and
        // allocates nothing (a raw OS error needs no allocation).
        unsafe {
            cmd.pre_exec(move || {
                // If the bench dies in any way (even SIGKILL), hotsup gets
                // SIGTERM and shuts its generations down. The spawning
                // thread is the main thread, which lives as long as the
                // bench.
                rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
                if rustix::process::getppid() != Some(bench_pid) {
                    // The bench died before the prctl took effect.
                    return Err(std::io::Error::from_raw_os_error(
                        rustix::io::Errno::SRCH.raw_os_error(),
                    ));
                }
                Ok(())
            });
        }
        let mut child = cmd
            .arg("run")
            .args((0..listeners.max(1)).flat_map(|_| ["-l", "127.0.0.1:0"]))
            .arg("--drain-timeout")
            .arg(format!("{}ms", drain_timeout.as_millis()))
            .arg("--")
            .arg(program)
            // The parser needs the INFO lines, whatever the caller's RUST_LOG.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            // The children inherit it: keep their banners off the report.
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", hotsup.display()))?;
        let pid = child.id() as i32;
        let stderr = child.stderr.take();
        let (tx, rx) = mpsc::channel();
        let program_comm = program
            .file_name()
            .map(|n| n.to_string_lossy().chars().take(15).collect())
            .unwrap_or_default();
        // From here on, an early return drops `hs`, which stops hotsup.
        let hs = Hotsup {
            child,
            pid,
            program_comm,
            rx,
            eof: false,
            exit: None,
            lines: Vec::new(),
        };
        let Some(stderr) = stderr else {
            bail!("hotsup's stderr was not piped");
        };
        // Detached: it ends at EOF, i.e. when hotsup and every child that
        // inherited its stderr are gone (or with the bench).
        thread::Builder::new()
            .name("hotsup-log".into())
            .spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let at = Instant::now();
                            let text = String::from_utf8_lossy(&buf);
                            let line = logline::parse(text.trim_end_matches(['\n', '\r']), at);
                            if tx.send(Msg::Line(line)).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = tx.send(Msg::Eof);
            })
            .context("cannot spawn the log reader thread")?;
        Ok(hs)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Moves the lines the reader has delivered so far into `lines`.
    pub fn pump(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            self.accept(msg);
        }
    }

    fn accept(&mut self, msg: Msg) {
        match msg {
            Msg::Line(l) => self.lines.push(l),
            Msg::Eof => self.eof = true,
        }
    }

    /// Whether hotsup has exited; reaps it if so.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit = Some(status);
        }
        self.exit
    }

    /// Index of the first line at or after `from` that satisfies `pred`,
    /// waiting at most `timeout` for it.
    pub fn wait_for(
        &mut self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&LogLine) -> bool,
    ) -> Result<usize, WaitError> {
        let deadline = Instant::now() + timeout;
        let mut i = from;
        loop {
            while i < self.lines.len() {
                if pred(&self.lines[i]) {
                    return Ok(i);
                }
                i += 1;
            }
            if self.eof {
                return Err(WaitError::Gone(self.exited()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WaitError::Timeout);
            }
            match self.rx.recv_timeout(left.min(POLL)) {
                Ok(msg) => self.accept(msg),
                Err(RecvTimeoutError::Disconnected) => self.eof = true,
                Err(RecvTimeoutError::Timeout) => {
                    // hotsup gone but its children still hold the pipe:
                    // give the last lines a moment, then give up.
                    if let Some(status) = self.exited() {
                        self.pump();
                        if !self.lines[i..].iter().any(&pred) {
                            return Err(WaitError::Gone(Some(status)));
                        }
                    }
                }
            }
        }
    }

    /// Like [`Hotsup::wait_for`] with an error naming `what` (one line,
    /// then the last log lines).
    pub fn expect(
        &mut self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&LogLine) -> bool,
    ) -> Result<usize> {
        self.wait_for(from, timeout, pred).map_err(|e| {
            anyhow::anyhow!(
                "waiting {} for {what}: {e}\nlast hotsup log lines:\n{}",
                fmt_secs(timeout),
                self.tail(15)
            )
        })
    }

    /// Waits for the first `listening` line (described as `what` in the
    /// error) and checks that its address is on loopback; returns the
    /// line's index and the address.
    pub fn expect_listening(
        &mut self,
        timeout: Duration,
        what: &str,
    ) -> Result<(usize, SocketAddr)> {
        let i = self.expect(0, timeout, what, |l| {
            matches!(l.kind, Kind::Listening { .. })
        })?;
        let Kind::Listening { address } = &self.lines[i].kind else {
            unreachable!("matched above")
        };
        let addr: SocketAddr = address
            .parse()
            .with_context(|| format!("hotsup logged an unparsable address {address:?}"))?;
        if !addr.ip().is_loopback() {
            bail!("hotsup listens on {addr}, not on loopback");
        }
        Ok((i, addr))
    }

    /// Waits for `ready generation=1` at or after line `from`; returns its
    /// index.
    pub fn expect_first_ready(&mut self, from: usize, timeout: Duration) -> Result<usize> {
        self.expect(from, timeout, "`ready generation=1`", |l| {
            l.kind == Kind::Ready && l.generation == Some(1)
        })
    }

    /// The last `n` log lines, indented, for error messages.
    pub fn tail(&mut self, n: usize) -> String {
        self.pump();
        let start = self.lines.len().saturating_sub(n);
        self.lines[start..]
            .iter()
            .map(|l| format!("    {}", l.raw))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sends `sig` to hotsup itself (never to a group).
    pub fn signal(&self, sig: Signal) -> Result<()> {
        if self.exit.is_some() {
            bail!("hotsup already exited");
        }
        let pid = Pid::from_raw(self.pid).context("hotsup has pid 0")?;
        rustix::process::kill_process(pid, sig)
            .with_context(|| format!("cannot signal hotsup (pid {})", self.pid))
    }

    /// Waits at most `timeout` for hotsup to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Pids of the generations hotsup reported spawning.
    fn generation_pids(&mut self) -> Vec<i32> {
        self.pump();
        self.lines
            .iter()
            .filter(|l| l.kind == Kind::Spawned)
            .filter_map(|l| l.pid)
            .collect()
    }

    /// Kills (SIGKILL, by process group) every generation hotsup spawned
    /// that is still running; returns their pids. A pid counts as ours only
    /// while it still leads its own group and runs the supervised program,
    /// so a recycled pid is left alone.
    pub fn kill_leftover_generations(&mut self) -> Vec<i32> {
        let mut killed = Vec::new();
        for pid in self.generation_pids() {
            let Ok(st) = procfs::stat(pid) else { continue };
            if st.pgrp != pid || st.comm != self.program_comm || st.state == 'Z' {
                continue;
            }
            if let Some(p) = Pid::from_raw(pid) {
                let _ = rustix::process::kill_process_group(p, Signal::KILL);
                killed.push(pid);
            }
        }
        killed
    }

    /// Stops hotsup if it still runs: SIGTERM twice (graceful, then
    /// hotsup's "kill every generation now"), SIGKILL if it lingers; then
    /// kills any generation left behind, and returns their pids. Used on
    /// error paths and by Drop.
    pub fn cleanup(&mut self) -> Vec<i32> {
        if self.pid == 0 {
            return Vec::new();
        }
        if self.exited().is_none() {
            let _ = self.signal(Signal::TERM);
            thread::sleep(Duration::from_millis(50));
            if self.exited().is_none() {
                let _ = self.signal(Signal::TERM);
            }
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.wait_exit(Duration::from_secs(5));
            }
        }
        self.pid = 0;
        self.kill_leftover_generations()
    }
}

impl Drop for Hotsup {
    fn drop(&mut self) {
        let killed = self.cleanup();
        if !killed.is_empty() {
            eprintln!("hotsup-bench: killed leftover generation process groups {killed:?}");
        }
    }
}

pub fn fmt_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The binaries the bench drives, next to its own executable.
pub struct Binaries {
    pub hotsup: PathBuf,
    pub http: PathBuf,
    /// `examples/listenfd_app`, if it was built.
    pub listenfd_app: Option<PathBuf>,
}

impl Binaries {
    /// Finds `hotsup` and `examples/http` in the directory of the running
    /// executable (target/release/ under `cargo run --release`).
    pub fn locate() -> Result<Binaries> {
        let exe = std::env::current_exe().context("cannot find the bench's own executable")?;
        let dir = exe
            .parent()
            .context("the bench's executable has no parent directory")?;
        let bins = Binaries {
            hotsup: dir.join("hotsup"),
            http: dir.join("examples").join("http"),
            listenfd_app: Some(dir.join("examples").join("listenfd_app")).filter(|p| p.is_file()),
        };
        let missing: Vec<String> = [&bins.hotsup, &bins.http]
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} not found; build {} first: cargo build --release --bin hotsup --examples",
                missing.join(" and "),
                if missing.len() == 1 { "it" } else { "them" }
            );
        }
        Ok(bins)
    }
}
