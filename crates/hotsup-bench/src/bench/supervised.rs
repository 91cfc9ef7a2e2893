//! The hotsup process under test: starting it, reading its log as events,
//! signalling it, and cleaning up after it on every path (including errors
//! and panics), by pid only.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hotsup_bench::procfs;
use rustix::process::{Pid, Signal};

use super::events::{Event, Line};
use super::procs::die_with_bench;

/// How often waits check whether hotsup is still alive.
const POLL: Duration = Duration::from_millis(50);
/// `--drain-timeout` given to hotsup unless a scenario says otherwise.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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

/// How to start `hotsup run`.
#[derive(Debug, Clone)]
pub struct Launch {
    pub hotsup: PathBuf,
    /// One `-l` each.
    pub listen: Vec<String>,
    /// More options of `hotsup run`.
    pub args: Vec<String>,
    /// COMMAND and its arguments.
    pub command: Vec<OsString>,
    pub drain_timeout: Duration,
    /// `--log-format json`; false for a hotsup from before it (its log is
    /// then only counted, never read).
    pub json: bool,
}

impl Launch {
    /// `hotsup run -l 127.0.0.1:0 --drain-timeout 10s --log-format json --
    /// PROGRAM`.
    pub fn new(hotsup: &Path, program: &Path) -> Launch {
        Launch {
            hotsup: hotsup.to_path_buf(),
            listen: vec!["127.0.0.1:0".into()],
            args: Vec::new(),
            command: vec![program.into()],
            drain_timeout: DRAIN_TIMEOUT,
            json: true,
        }
    }

    pub fn listeners(mut self, k: usize) -> Launch {
        self.listen = vec!["127.0.0.1:0".into(); k.max(1)];
        self
    }

    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Launch {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Every argument of hotsup.
    pub fn argv(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec!["run".into()];
        for l in &self.listen {
            v.extend(["-l".into(), l.into()]);
        }
        v.extend([
            "--drain-timeout".into(),
            format!("{}ms", self.drain_timeout.as_millis()).into(),
        ]);
        if self.json {
            v.extend(["--log-format".into(), "json".into()]);
        }
        v.extend(self.args.iter().map(OsString::from));
        v.push("--".into());
        v.extend(self.command.iter().cloned());
        v
    }

    pub fn start(&self) -> Result<Hotsup> {
        Hotsup::start(self)
    }
}

/// How [`Hotsup::stop`] went.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stopped {
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    /// From SIGTERM to exit.
    #[serde(serialize_with = "super::report::secs")]
    pub took: Duration,
    /// hotsup did not exit in time and was killed.
    pub forced: bool,
    /// Children still running after hotsup exited (killed by the bench).
    pub leftovers: Vec<i32>,
}

impl Stopped {
    pub fn describe(&self) -> String {
        let mut out = match (self.exit_code, self.exit_signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "did not exit".to_owned(),
        };
        if self.forced {
            out.push_str(", had to be killed");
        }
        out
    }

    pub fn clean(&self) -> bool {
        !self.forced && self.exit_code == Some(0) && self.leftovers.is_empty()
    }
}

enum Msg {
    Line(Line),
    Eof,
}

/// A running `hotsup run ...` with its log.
pub struct Hotsup {
    child: Child,
    pid: i32,
    rx: Receiver<Msg>,
    eof: bool,
    exit: Option<ExitStatus>,
    stopped: bool,
    /// Every line read so far, in order.
    pub lines: Vec<Line>,
}

impl Hotsup {
    fn start(launch: &Launch) -> Result<Hotsup> {
        let mut cmd = Command::new(&launch.hotsup);
        // hotsup gets SIGTERM if the bench dies in any way (even SIGKILL),
        // and shuts its generations down.
        die_with_bench(&mut cmd, Signal::TERM);
        let mut child = cmd
            .args(launch.argv())
            // Every event is at INFO or above, whatever the caller's RUST_LOG.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            // The children inherit it: keep their banners off the report.
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", launch.hotsup.display()))?;
        let pid = child.id() as i32;
        let stderr = child.stderr.take();
        let (tx, rx) = mpsc::channel();
        // From here on, an early return drops `hs`, which stops hotsup.
        let hs = Hotsup {
            child,
            pid,
            rx,
            eof: false,
            exit: None,
            stopped: false,
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
                            let raw = text.trim_end_matches(['\n', '\r']).to_owned();
                            if tx.send(Msg::Line(Line::parse(raw, at))).is_err() {
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

    /// Moves the lines the reader has delivered so far into `lines`;
    /// returns how many there are.
    pub fn pump(&mut self) -> usize {
        while let Ok(msg) = self.rx.try_recv() {
            self.accept(msg);
        }
        self.lines.len()
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
        pred: impl Fn(&Line) -> bool,
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

    /// Waits for event `name` at or after line `from` that satisfies
    /// `pred`; returns its line index and the event. The error names the
    /// event and shows the last log lines.
    pub fn expect_event(
        &mut self,
        from: usize,
        timeout: Duration,
        name: &str,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<(usize, Event)> {
        match self.wait_for(from, timeout, |l| l.named(name).is_some_and(&pred)) {
            Ok(i) => match self.lines[i].event.clone() {
                Some(e) => Ok((i, e)),
                None => bail!("line {i} is no event"),
            },
            Err(e) => bail!(
                "waiting {:.1}s for event `{name}`: {e}\nlast hotsup log lines:\n{}",
                timeout.as_secs_f64(),
                self.tail(15)
            ),
        }
    }

    /// Waits for the `ready` event of generation `g`.
    pub fn expect_ready(
        &mut self,
        from: usize,
        g: u64,
        timeout: Duration,
    ) -> Result<(usize, Event)> {
        self.expect_event(from, timeout, "ready", |e| e.generation == Some(g))
    }

    /// The address of the first `listening` event, checked to be on
    /// loopback.
    pub fn expect_listening(&mut self, timeout: Duration) -> Result<SocketAddr> {
        let (_, e) = self.expect_event(0, timeout, "listening", |_| true)?;
        let address = e.str("address").unwrap_or_default();
        let addr: SocketAddr = address
            .parse()
            .with_context(|| format!("hotsup logged an unparsable address {address:?}"))?;
        if !addr.ip().is_loopback() {
            bail!("hotsup listens on {addr}, not on loopback");
        }
        Ok(addr)
    }

    /// The events at or after line `from`.
    pub fn events_from(&self, from: usize) -> impl Iterator<Item = &Event> {
        self.lines[from.min(self.lines.len())..]
            .iter()
            .filter_map(|l| l.event.as_ref())
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
    pub fn signal(&mut self, sig: Signal) -> Result<()> {
        if self.exited().is_some() {
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

    /// Graceful shutdown: SIGTERM, then waits up to `timeout`; past it,
    /// SIGTERM again (hotsup's "kill every generation now") and SIGKILL.
    /// Then kills what is left of the children hotsup had when this began
    /// (each by process group when it leads one), and reaps hotsup.
    pub fn stop(&mut self, timeout: Duration) -> Stopped {
        if self.stopped {
            return Stopped::default();
        }
        self.stopped = true;
        // Identified by pid and start time, so that a recycled pid is left
        // alone.
        let children = procfs::children(self.pid);
        let mut out = Stopped::default();
        let began = Instant::now();
        if self.exited().is_none() {
            let _ = self.signal(Signal::TERM);
            if self.wait_exit(timeout).is_none() {
                out.forced = true;
                let _ = self.signal(Signal::TERM);
                if self.wait_exit(Duration::from_secs(5)).is_none() {
                    let _ = self.child.kill();
                    let _ = self.wait_exit(Duration::from_secs(5));
                }
            }
        }
        out.took = began.elapsed();
        if let Some(s) = self.exit {
            out.exit_code = s.code();
            out.exit_signal = s.signal();
        }
        for (pid, start) in children {
            let Ok(st) = procfs::stat(pid) else { continue };
            if st.starttime != start || matches!(st.state, 'Z' | 'X') {
                continue;
            }
            if let Some(p) = Pid::from_raw(pid) {
                let _ = if st.pgrp == pid {
                    rustix::process::kill_process_group(p, Signal::KILL)
                } else {
                    rustix::process::kill_process(p, Signal::KILL)
                };
                out.leftovers.push(pid);
            }
        }
        out
    }
}

impl Drop for Hotsup {
    fn drop(&mut self) {
        let s = self.stop(Duration::from_millis(50));
        if !s.leftovers.is_empty() {
            eprintln!("hotsup-bench: killed leftover children {:?}", s.leftovers);
        }
    }
}

/// The binaries the bench drives, next to its own executable.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub hotsup: PathBuf,
    pub http: PathBuf,
    /// `examples/listenfd_app`, if it was built.
    pub listenfd_app: Option<PathBuf>,
    pub testchild: PathBuf,
    pub cpu: PathBuf,
    /// `--old-hotsup`: a hotsup built from an older commit, to measure
    /// beside this one, with its own `examples/http`.
    pub old: Option<OldBuild>,
}

#[derive(Debug, Clone)]
pub struct OldBuild {
    pub hotsup: PathBuf,
    pub http: PathBuf,
}

impl Binaries {
    /// Finds the binaries in the directory of the running executable
    /// (target/release/ under `cargo run --release`).
    pub fn locate(old: Option<&Path>) -> Result<Binaries> {
        let exe = std::env::current_exe().context("cannot find the bench's own executable")?;
        let dir = exe
            .parent()
            .context("the bench's executable has no parent directory")?;
        let example = |name: &str| dir.join("examples").join(name);
        let bins = Binaries {
            hotsup: dir.join("hotsup"),
            http: example("http"),
            listenfd_app: Some(example("listenfd_app")).filter(|p| p.is_file()),
            testchild: example("testchild"),
            cpu: example("cpu"),
            old: old.map(|h| OldBuild {
                hotsup: h.to_path_buf(),
                http: h
                    .parent()
                    .map(|d| d.join("examples").join("http"))
                    .unwrap_or_default(),
            }),
        };
        let mut needed = vec![&bins.hotsup, &bins.http, &bins.testchild, &bins.cpu];
        if let Some(o) = &bins.old {
            needed.extend([&o.hotsup, &o.http]);
        }
        let missing: Vec<String> = needed
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} not found; build with: cargo build --release --bin hotsup --examples",
                missing.join(", ")
            );
        }
        Ok(bins)
    }
}
