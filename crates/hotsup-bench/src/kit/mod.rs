//! The test kit: the real `hotsup` binary run under test, its log followed
//! as events, and everything it started cleaned up on every path (errors
//! and panics included), by pid only.
//!
//! The end-to-end tests (`tests/e2e/util.rs` re-exports it) and the
//! bench's scenarios drive hotsup through the same [`Hotsup`]. Waits come
//! in two flavours: the tests' panic past a bound ([`Hotsup::event`],
//! [`Hotsup::ready`], [`Log::wait_event`], ...), the bench's return an error
//! it reports and goes on ([`Hotsup::expect_event`], [`Hotsup::wait_for`],
//! ...).

pub mod events;

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal};
pub use serde_json::{Value, json};

use crate::procfs;
pub use events::{Event, Line, ts_ms};

/// Upper bound for any single wait of a test; a healthy run needs a
/// fraction of it, and a loaded 2-core CI machine must not turn slowness
/// into failure.
pub const WAIT: Duration = Duration::from_secs(30);

/// How often the bench's waits check whether hotsup is still alive.
const POLL: Duration = Duration::from_millis(50);

/// A binary cargo built beside the running executable: next to it (the
/// bench in target/release/), or one directory up (a test binary in
/// target/debug/deps/). `examples/NAME` for an example.
pub fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    let dir = match dir.file_name() {
        Some(d) if d == "deps" => dir.parent().unwrap_or(dir),
        _ => dir,
    };
    dir.join(name)
}

/// The `hotsup` binary built beside the running executable.
pub fn hotsup_bin() -> PathBuf {
    built("hotsup")
}

/// `hotsup run --log-format json ARGS -- COMMAND...` with every event
/// logged (`RUST_LOG=info`) and stdout and stderr piped, as [`Hotsup::run`]
/// spawns it; for a test that needs to change how hotsup itself starts.
pub fn hotsup_command<S: AsRef<OsStr>>(args: &[&str], command: &[S]) -> Command {
    let mut cmd = Command::new(hotsup_bin());
    cmd.arg("run")
        .args(["--log-format", "json"])
        .args(args)
        .arg("--")
        .args(command)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A runtime directory of one hotsup's own, so that a test or a bench run
/// never meets the supervisors a user runs on the same machine, nor leaves
/// anything in their directories: the default control socket goes there
/// (`HOTSUP_RUNTIME_DIR`; as root hotsup would otherwise use /run/hotsup
/// whatever `XDG_RUNTIME_DIR` says), and so do the children's notify
/// directory (`XDG_RUNTIME_DIR`) and any temporary file (`TMPDIR`). Removed
/// on drop.
pub struct Runtime(tempfile::TempDir);

/// The variables [`Runtime::apply`] sets.
const RUNTIME_VARS: [&str; 3] = ["HOTSUP_RUNTIME_DIR", "XDG_RUNTIME_DIR", "TMPDIR"];

impl Runtime {
    pub fn new() -> Runtime {
        Runtime::try_new().expect("a private runtime directory")
    }

    pub fn try_new() -> std::io::Result<Runtime> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("hotsup-rt-").tempdir()?;
        // Searchable, not listable, by others: children run with --user
        // reach their notify socket through it, as through /tmp.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
        Ok(Runtime(dir))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Points `cmd` at this directory, except for the variables the caller
    /// set itself.
    pub fn apply(&self, cmd: &mut Command) {
        let set: Vec<OsString> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
        for var in RUNTIME_VARS {
            if !set.iter().any(|k| k == var) {
                cmd.env(var, self.path());
            }
        }
    }

    /// What is left in the directory.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        let mut left: Vec<PathBuf> = std::fs::read_dir(self.path())
            .expect("read the runtime directory")
            .map(|e| e.expect("read the runtime directory").path())
            .collect();
        left.sort();
        left
    }
}

impl Default for Runtime {
    fn default() -> Runtime {
        Runtime::new()
    }
}

#[derive(Default)]
struct Lines {
    lines: Vec<Line>,
    closed: bool,
}

/// The lines of a child's stream (hotsup's log, say), collected by a
/// thread as they arrive; clones share them.
#[derive(Clone)]
pub struct Log(Arc<(Mutex<Lines>, Condvar)>);

/// Why a wait for a line ended without it.
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

impl Log {
    /// Follows `r`, echoing each line to stderr after `[echo]` (captured
    /// by the test harness, shown when a test fails).
    pub fn follow(r: impl Read + Send + 'static, echo: &'static str) -> Log {
        Log::reading(r, Some(echo))
    }

    /// Follows `r` without echoing it.
    pub fn quiet(r: impl Read + Send + 'static) -> Log {
        Log::reading(r, None)
    }

    /// A stream that has ended without a line.
    pub fn empty() -> Log {
        let log = Log(Arc::default());
        log.state().closed = true;
        log
    }

    fn reading(r: impl Read + Send + 'static, echo: Option<&'static str>) -> Log {
        let log = Log(Arc::default());
        let inner = log.clone();
        // Detached: it ends at EOF, when hotsup and every child that
        // inherited the pipe are gone.
        let spawned = thread::Builder::new()
            .name("hotsup-kit-log".into())
            .spawn(move || {
                let mut reader = BufReader::new(r);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let at = Instant::now();
                            // Children's output need not be UTF-8.
                            let text = String::from_utf8_lossy(&buf);
                            let raw = text.trim_end_matches(['\n', '\r']).to_owned();
                            if let Some(echo) = echo {
                                eprintln!("[{echo}] {raw}");
                            }
                            inner.state().lines.push(Line::parse(raw, at));
                            inner.0.1.notify_all();
                        }
                    }
                }
                inner.state().closed = true;
                inner.0.1.notify_all();
            });
        if spawned.is_err() {
            log.state().closed = true;
        }
        log
    }

    fn state(&self) -> MutexGuard<'_, Lines> {
        // A reader that panicked mid-push left whole lines behind.
        self.0.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lines read so far.
    pub fn len(&self) -> usize {
        self.state().lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the stream has ended.
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// Line `i`, which must have been read.
    pub fn line(&self, i: usize) -> Line {
        self.state().lines[i].clone()
    }

    /// The text of every line read so far.
    pub fn all(&self) -> Vec<String> {
        self.state().lines.iter().map(|l| l.raw.clone()).collect()
    }

    /// Every line that is a JSON event, as JSON.
    pub fn events(&self) -> Vec<Value> {
        self.state()
            .lines
            .iter()
            .filter_map(|l| l.json.clone())
            .collect()
    }

    /// The events at or after line `from`, typed.
    pub fn events_from(&self, from: usize) -> std::vec::IntoIter<Event> {
        let g = self.state();
        let events: Vec<Event> = g.lines[from.min(g.lines.len())..]
            .iter()
            .filter_map(|l| l.event.clone())
            .collect();
        events.into_iter()
    }

    /// The number of events `name` with these field values.
    pub fn count_events(&self, name: &str, fields: &[(&str, Value)]) -> usize {
        self.state()
            .lines
            .iter()
            .filter(|l| l.matches(name, fields))
            .count()
    }

    /// The last `n` lines, indented, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let g = self.state();
        g.lines[g.lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| format!("    {}", l.raw))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The index of the first line at or after `from` satisfying `pred`,
    /// waiting at most `timeout` for it; `Err(None)` past the timeout,
    /// `Err(Some(read))` when the stream ended after `read` lines.
    fn find(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Line) -> bool,
    ) -> Result<usize, Option<usize>> {
        let deadline = Instant::now() + timeout;
        let mut g = self.state();
        let mut i = from;
        loop {
            while i < g.lines.len() {
                if pred(&g.lines[i]) {
                    return Ok(i);
                }
                i += 1;
            }
            if g.closed {
                return Err(Some(g.lines.len()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(None);
            }
            g = self
                .0
                .1
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for a line, at or after index `from`, that contains every
    /// needle. Returns its index and text; panics past `timeout`.
    pub fn wait_from(&self, from: usize, needles: &[&str], timeout: Duration) -> (usize, String) {
        match self.find(from, timeout, |l| needles.iter().all(|n| l.raw.contains(n))) {
            Ok(i) => (i, self.line(i).raw),
            Err(_) => panic!(
                "no line with {needles:?} within {timeout:?}; got:\n{}",
                self.all().join("\n")
            ),
        }
    }

    /// Waits for the end of the stream (every process holding it has
    /// exited); panics past [`WAIT`].
    pub fn wait_closed(&self) {
        if let Err(None) | Ok(_) = self.find(self.len(), WAIT, |_| false) {
            panic!("the stream did not end within {WAIT:?}");
        }
    }

    pub fn wait(&self, needles: &[&str]) -> String {
        self.wait_from(0, needles, WAIT).1
    }

    /// Waits for the event `name`, at or after line `from`, whose fields
    /// equal `fields`. Returns its line index and the event; panics past
    /// `timeout`.
    pub fn wait_event_from(
        &self,
        from: usize,
        name: &str,
        fields: &[(&str, Value)],
        timeout: Duration,
    ) -> (usize, Value) {
        match self.find(from, timeout, |l| l.matches(name, fields)) {
            Ok(i) => (i, self.line(i).json.unwrap_or_default()),
            Err(_) => panic!(
                "no event {name} {fields:?} within {timeout:?}; got:\n{}",
                self.all().join("\n")
            ),
        }
    }

    pub fn wait_event(&self, name: &str, fields: &[(&str, Value)]) -> Value {
        self.wait_event_from(0, name, fields, WAIT).1
    }
}

/// How [`Hotsup::stop`] went.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stopped {
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    /// From SIGTERM to exit.
    #[serde(serialize_with = "secs")]
    pub took: Duration,
    /// hotsup did not exit in time and was killed.
    pub forced: bool,
    /// Children still running after hotsup exited (killed by the kit).
    pub leftovers: Vec<i32>,
}

/// Serializes a duration as seconds.
pub fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
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

/// A running `hotsup`. Dropped without [`Hotsup::stop`], it is stopped as
/// an operator would: gracefully (SIGTERM), then by force (a second
/// SIGTERM), and with SIGKILL and a kill of every generation's group only
/// if it does not exit in time.
pub struct Hotsup {
    child: Child,
    pub pid: i32,
    /// hotsup's stderr: its log, and its children's stderr.
    pub log: Log,
    /// hotsup's stdout, which its children share; empty unless piped.
    pub out: Log,
    status: Option<ExitStatus>,
    stopped: bool,
    runtime: Option<Runtime>,
}

/// How long dropping a [`Hotsup`] waits after each SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(3);

impl Hotsup {
    /// `hotsup run --log-format json ARGS -- COMMAND...`, see
    /// [`hotsup_command`].
    pub fn run<S: AsRef<OsStr>>(args: &[&str], command: &[S]) -> Hotsup {
        Hotsup::spawn(hotsup_command(args, command))
    }

    /// Spawns `cmd` (a `hotsup run` whose stdout and stderr are piped)
    /// with a private [`Runtime`] directory.
    pub fn spawn(mut cmd: Command) -> Hotsup {
        let runtime = Runtime::new();
        runtime.apply(&mut cmd);
        Hotsup::from_child(cmd.spawn().expect("spawn hotsup")).with_runtime(runtime)
    }

    /// Keeps `runtime`, the directory hotsup was started with, as long as
    /// hotsup.
    pub fn with_runtime(mut self, runtime: Runtime) -> Hotsup {
        self.runtime = Some(runtime);
        self
    }

    /// Asserts that hotsup, which must have exited, left nothing in its
    /// runtime directory: no control socket, no notify directory.
    pub fn assert_left_nothing(&mut self) {
        assert!(!self.is_running(), "hotsup is still running");
        let runtime = self
            .runtime
            .as_ref()
            .expect("started without a private runtime directory");
        let left = runtime.leftovers();
        assert!(left.is_empty(), "hotsup left {left:?} behind");
    }

    /// `hotsup run ARGS -- COMMAND...` (text log) with `stderr` as
    /// hotsup's stderr (shared with its children, as always): `log` stays
    /// empty.
    pub fn run_with_stderr<S: AsRef<OsStr>>(
        args: &[&str],
        command: &[S],
        stderr: impl Into<Stdio>,
    ) -> Hotsup {
        let mut cmd = Command::new(hotsup_bin());
        cmd.arg("run")
            .args(args)
            .arg("--")
            .args(command)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        Hotsup::spawn(cmd)
    }

    /// Follows an already spawned `hotsup`, echoing what it writes to the
    /// test's stderr: its stderr (if piped) as `log`, its stdout (if
    /// piped) as `out`. Prefer [`Hotsup::spawn`], which gives it a private
    /// runtime directory.
    pub fn from_child(child: Child) -> Hotsup {
        Hotsup::follow(child, true)
    }

    /// Follows an already spawned `hotsup`; `echo`: copy what it writes to
    /// the running program's stderr.
    pub fn follow(mut child: Child, echo: bool) -> Hotsup {
        let stream = |r: Option<Box<dyn Read + Send>>, name: &'static str| match r {
            Some(r) if echo => Log::follow(r, name),
            Some(r) => Log::quiet(r),
            None => Log::empty(),
        };
        let err = child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>);
        let out = child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>);
        Hotsup {
            pid: child.id() as i32,
            log: stream(err, "hotsup"),
            out: stream(out, "child"),
            child,
            status: None,
            stopped: false,
            runtime: None,
        }
    }

    /// hotsup's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for event `name` with these field values; panics past
    /// [`WAIT`].
    pub fn event(&self, name: &str, fields: &[(&str, Value)]) -> Value {
        self.log.wait_event(name, fields)
    }

    /// The bound address of listener `name`, from its `listening` event.
    pub fn addr(&self, name: &str) -> SocketAddr {
        let e = self.event("listening", &[("name", json!(name))]);
        e["address"]
            .as_str()
            .expect("address")
            .parse()
            .expect("address")
    }

    /// Waits until generation `g` is ready; returns its pid.
    pub fn ready(&self, g: u64) -> i32 {
        pid_of(&self.event("ready", &[("generation", json!(g))]))
    }

    /// The `NOTIFY_SOCKET` generation `g` was given.
    pub fn notify_path(&self, g: u64) -> String {
        let e = self.event("exec", &[("generation", json!(g))]);
        e["notify"].as_str().expect("notify").to_string()
    }

    /// The pid generation `g` was spawned with.
    pub fn spawned_pid(&self, g: u64) -> i32 {
        pid_of(&self.event("spawned", &[("generation", json!(g))]))
    }

    /// Sends `sig` to hotsup itself; panics if it cannot.
    pub fn signal(&self, sig: Signal) {
        rustix::process::kill_process(Pid::from_raw(self.pid).expect("pid"), sig)
            .expect("signal hotsup");
    }

    pub fn upgrade(&self) {
        self.signal(Signal::USR2);
    }

    /// Waits for hotsup to exit; panics past `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait_exit_within(timeout) {
            Some(s) => s,
            None => panic!(
                "hotsup did not exit within {timeout:?}; log:\n{}",
                self.log.all().join("\n")
            ),
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.exited().is_none()
    }

    /// fds hotsup holds open now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The fds hotsup holds once it holds no control connection (a
    /// client that has read its reply may exit before hotsup closed its
    /// end): waits for those to close, and panics if one stays open past
    /// [`WAIT`]. Then the fewest fds over a few samples, for what no event
    /// tells the end of: a generation's fds closed a moment after its last
    /// event.
    pub fn quiet_fds(&self) -> usize {
        let control = self
            .log
            .events()
            .into_iter()
            .find(|e| e["event"] == "control_socket")
            .and_then(|e| Some(PathBuf::from(e["path"].as_str()?)));
        if let Some(path) = control {
            let deadline = Instant::now() + WAIT;
            loop {
                let held = procfs::unix_connections(self.pid, &path);
                if held == 0 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "hotsup still holds {held} control connections after {WAIT:?}"
                );
                thread::sleep(Duration::from_millis(5));
            }
        }
        (0..20)
            .map(|_| {
                thread::sleep(Duration::from_millis(5));
                self.open_fds()
            })
            .min()
            .unwrap_or(0)
    }

    /// Whether hotsup has exited; reaps it if so.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.status = Some(status);
        }
        self.status
    }

    /// Waits at most `timeout` for hotsup to exit.
    pub fn wait_exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
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

    /// Sends `sig` to hotsup itself (never to a group).
    pub fn try_signal(&mut self, sig: Signal) -> Result<()> {
        if self.exited().is_some() {
            bail!("hotsup already exited");
        }
        let pid = Pid::from_raw(self.pid).context("hotsup has pid 0")?;
        rustix::process::kill_process(pid, sig)
            .with_context(|| format!("cannot signal hotsup (pid {})", self.pid))
    }

    /// Index of the first log line at or after `from` that satisfies
    /// `pred`, waiting at most `timeout` for it, and no longer than hotsup
    /// lives.
    pub fn wait_for(
        &mut self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Line) -> bool,
    ) -> Result<usize, WaitError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.find(from, left.min(POLL), &pred) {
                Ok(i) => return Ok(i),
                Err(Some(_)) => return Err(WaitError::Gone(self.exited())),
                Err(None) => {
                    // hotsup gone, but its children still hold the pipe:
                    // what it logged has been read by now.
                    if let Some(status) = self.exited() {
                        return self
                            .log
                            .find(from, Duration::ZERO, &pred)
                            .map_err(|_| WaitError::Gone(Some(status)));
                    }
                    if left.is_zero() {
                        return Err(WaitError::Timeout);
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
            Ok(i) => match self.log.line(i).event {
                Some(e) => Ok((i, e)),
                None => bail!("line {i} is no event"),
            },
            Err(e) => bail!(
                "waiting {:.1}s for event `{name}`: {e}\nlast hotsup log lines:\n{}",
                timeout.as_secs_f64(),
                self.log.tail(15)
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

    /// Graceful shutdown: SIGTERM, then waits up to `timeout`; past it,
    /// SIGTERM again (hotsup's "kill every generation now") and SIGKILL.
    /// Then kills what is left of the children hotsup had when this began,
    /// and reaps hotsup.
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
            let _ = self.try_signal(Signal::TERM);
            if self.wait_exit_within(timeout).is_none() {
                out.forced = true;
                let _ = self.try_signal(Signal::TERM);
                if self.wait_exit_within(Duration::from_secs(5)).is_none() {
                    let _ = self.child.kill();
                    let _ = self.wait_exit_within(Duration::from_secs(5));
                }
            }
        }
        out.took = began.elapsed();
        if let Some(s) = self.status {
            out.exit_code = s.code();
            out.exit_signal = s.signal();
        }
        out.leftovers = kill_leftovers(&children);
        out
    }
}

/// Kills each process of `children` (pid, start time) that still runs,
/// with its process group when it leads one. Returns the pids killed.
fn kill_leftovers(children: &[(i32, u64)]) -> Vec<i32> {
    let mut killed = Vec::new();
    for &(pid, start) in children {
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
            killed.push(pid);
        }
    }
    killed
}

impl Drop for Hotsup {
    fn drop(&mut self) {
        if self.stopped || self.exited().is_some() {
            return;
        }
        // As an operator would: a graceful stop lets hotsup remove its
        // sockets and directories; a second SIGTERM kills every generation
        // at once, the children that ignore SIGTERM on purpose included.
        for _ in 0..2 {
            let _ = self.try_signal(Signal::TERM);
            if self.wait_exit_within(STOP_GRACE).is_some() {
                return;
            }
        }
        // A hung hotsup. Its children get SIGTERM from PR_SET_PDEATHSIG,
        // but some test children ignore it: kill its live children, and
        // the groups they lead.
        let live = procfs::children(self.pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_leftovers(&live);
    }
}

/// The `pid` field of an event.
pub fn pid_of(e: &Value) -> i32 {
    e["pid"].as_i64().expect("pid") as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_waits_on_events_and_ends_with_its_stream() {
        let text = b"child banner\n\
            {\"ts\":\"2026-12-01T13:15:00.250Z\",\"level\":\"info\",\"event\":\"ready\",\"generation\":1,\"pid\":7}\n\
            {\"level\":\"info\",\"event\":\"ready\",\"generation\":2,\"pid\":8}\n\
            not \xff utf-8\n";
        let log = Log::quiet(&text[..]);
        let (i, e) = log.wait_event_from(0, "ready", &[("generation", json!(2))], WAIT);
        assert_eq!((i, pid_of(&e)), (2, 8));
        assert_eq!(log.wait_from(0, &["utf-8"], WAIT).0, 3);
        assert_eq!(log.count_events("ready", &[]), 2);
        assert_eq!(log.count_events("ready", &[("pid", json!(9))]), 0);
        let typed: Vec<u64> = log.events_from(2).filter_map(|e| e.generation).collect();
        assert_eq!(typed, [2]);
        // The stream has ended: a wait for what never came fails at once,
        // not past its bound.
        let missing = std::panic::catch_unwind(|| log.wait_event("drained", &[]));
        assert!(missing.is_err());
        assert!(log.is_closed());
        assert_eq!(log.find(0, WAIT, |l| l.raw == "nothing"), Err(Some(4)));
    }
}
