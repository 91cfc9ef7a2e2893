//! A small harness: run the real `hotsup` binary, follow its log, find the
//! example servers, and check processes.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use serde_json::{Value, json};

/// Upper bound for any single wait; a healthy run needs a fraction of it,
/// and a loaded 2-core CI machine must not turn slowness into failure.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn hotsup_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hotsup")
}

/// An example binary, built by `cargo test` next to the test binary.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples (cargo test builds them)",
        path.display()
    );
    path
}

/// A fresh private directory, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hotsup-e2e-")
        .tempdir()
        .expect("tempdir")
}

/// A runtime directory of one hotsup's own, so that a test never meets the
/// supervisors a user runs on the same machine, nor leaves anything in
/// their directories: the default control socket goes there
/// (`HOTSUP_RUNTIME_DIR`; as root hotsup would otherwise use /run/hotsup
/// whatever `XDG_RUNTIME_DIR` says), and so do the children's notify
/// directory (`XDG_RUNTIME_DIR`) and any temporary file (`TMPDIR`). Removed
/// on drop.
pub struct Runtime(tempfile::TempDir);

/// The variables [`Runtime::apply`] sets.
const RUNTIME_VARS: [&str; 3] = ["HOTSUP_RUNTIME_DIR", "XDG_RUNTIME_DIR", "TMPDIR"];

impl Runtime {
    pub fn new() -> Runtime {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("hotsup-rt-")
            .tempdir()
            .expect("tempdir");
        // Searchable, not listable, by others: children run with --user
        // reach their notify socket through it, as through /tmp.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod the runtime directory");
        Runtime(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Points `cmd` at this directory, except for the variables the test
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

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

/// Lines of a child's stream, collected by a thread as they arrive.
#[derive(Clone)]
pub struct Stream(Arc<(Mutex<Lines>, Condvar)>);

impl Stream {
    pub fn follow(r: impl std::io::Read + Send + 'static, echo: &'static str) -> Stream {
        let s = Stream(Arc::default());
        let inner = s.0.clone();
        thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{echo}] {line}");
                let (m, cv) = &*inner;
                m.lock().unwrap().lines.push(line);
                cv.notify_all();
            }
            let (m, cv) = &*inner;
            m.lock().unwrap().closed = true;
            cv.notify_all();
        });
        s
    }

    pub fn all(&self) -> Vec<String> {
        self.0.0.lock().unwrap().lines.clone()
    }

    /// Waits for a line, at or after index `from`, that contains every
    /// needle. Returns its index and text.
    pub fn wait_from(&self, from: usize, needles: &[&str], timeout: Duration) -> (usize, String) {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.0;
        let mut g = m.lock().unwrap();
        loop {
            if let Some((i, l)) = g
                .lines
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, l)| needles.iter().all(|n| l.contains(n)))
            {
                return (i, l.clone());
            }
            let now = Instant::now();
            if now >= deadline || g.closed {
                let all = g.lines.join("\n");
                drop(g);
                panic!("no line with {needles:?} within {timeout:?}; got:\n{all}");
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    pub fn wait(&self, needles: &[&str]) -> String {
        self.wait_from(0, needles, WAIT).1
    }

    /// Every line that is a JSON event (hotsup runs with
    /// `--log-format json`).
    pub fn events(&self) -> Vec<Value> {
        self.all().iter().filter_map(|l| parse_event(l)).collect()
    }

    /// Waits for the event `name`, at or after line `from`, whose fields
    /// equal `fields`. Returns its line index and the event.
    pub fn wait_event_from(
        &self,
        from: usize,
        name: &str,
        fields: &[(&str, Value)],
        timeout: Duration,
    ) -> (usize, Value) {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.0;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(found) = g
                .lines
                .iter()
                .enumerate()
                .skip(from)
                .filter_map(|(i, l)| Some((i, parse_event(l)?)))
                .find(|(_, e)| matches_event(e, name, fields))
            {
                return found;
            }
            let now = Instant::now();
            if now >= deadline || g.closed {
                let all = g.lines.join("\n");
                drop(g);
                panic!("no event {name} {fields:?} within {timeout:?}; got:\n{all}");
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    pub fn wait_event(&self, name: &str, fields: &[(&str, Value)]) -> Value {
        self.wait_event_from(0, name, fields, WAIT).1
    }

    pub fn count_events(&self, name: &str, fields: &[(&str, Value)]) -> usize {
        self.events()
            .iter()
            .filter(|e| matches_event(e, name, fields))
            .count()
    }
}

fn parse_event(line: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(line).ok()?;
    v.get("event")?.as_str()?;
    Some(v)
}

fn matches_event(e: &Value, name: &str, fields: &[(&str, Value)]) -> bool {
    e["event"] == name && fields.iter().all(|(k, v)| &e[*k] == v)
}

/// The command [`Hotsup::run`] spawns, for a test that needs to change how
/// hotsup itself is started (its environment, umask or signals).
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

/// A running `hotsup`, stopped on drop: gracefully (SIGTERM), then by
/// force (a second SIGTERM), and with SIGKILL and a kill of every
/// generation's group only if it does not exit in time.
pub struct Hotsup {
    child: Child,
    pub pid: i32,
    pub log: Stream,
    pub out: Stream,
    status: Option<ExitStatus>,
    runtime: Option<Runtime>,
}

/// How long dropping a [`Hotsup`] waits after each SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(3);

impl Hotsup {
    /// `hotsup run ARGS -- COMMAND...`
    pub fn run<S: AsRef<OsStr>>(args: &[&str], command: &[S]) -> Hotsup {
        Hotsup::spawn(hotsup_command(args, command))
    }

    /// Spawns `cmd` (a `hotsup run` whose stdout and stderr are piped)
    /// with a private [`Runtime`] directory.
    pub fn spawn(mut cmd: Command) -> Hotsup {
        let runtime = Runtime::new();
        runtime.apply(&mut cmd);
        let mut h = Hotsup::from_child(cmd.spawn().expect("spawn hotsup"));
        h.runtime = Some(runtime);
        h
    }

    /// Follows an already spawned `hotsup` whose stdout and stderr are
    /// piped. Prefer [`Hotsup::spawn`], which gives it a private runtime
    /// directory.
    pub fn from_child(mut child: Child) -> Hotsup {
        let log = Stream::follow(child.stderr.take().expect("piped stderr"), "hotsup");
        let out = Stream::follow(child.stdout.take().expect("piped stdout"), "child");
        let pid = child.id() as i32;
        Hotsup {
            child,
            pid,
            log,
            out,
            status: None,
            runtime: None,
        }
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

    /// Waits for event `name` with these field values.
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

    pub fn signal(&self, sig: rustix::process::Signal) {
        rustix::process::kill_process(rustix::process::Pid::from_raw(self.pid).unwrap(), sig)
            .expect("signal hotsup");
    }

    pub fn upgrade(&self) {
        self.signal(rustix::process::Signal::USR2);
    }

    /// Waits for hotsup to exit, bounded.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.status = Some(s);
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "hotsup did not exit within {timeout:?}; log:\n{}",
                self.log.all().join("\n")
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.status.is_none() && self.child.try_wait().unwrap().is_none()
    }

    /// fds hotsup holds open now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Hotsup {
    fn drop(&mut self) {
        if self.status.is_some() || !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // As an operator would: a graceful stop lets hotsup remove its
        // sockets and directories; a second SIGTERM kills every generation
        // at once, the children that ignore SIGTERM on purpose included.
        let pid = rustix::process::Pid::from_raw(self.pid).expect("pid");
        for _ in 0..2 {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
        // A hung hotsup. Its children get SIGTERM from PR_SET_PDEATHSIG,
        // but some test children ignore it: kill the groups of its live
        // children. Only live ones: the pid of one already reaped may
        // belong to another test's process by now.
        let live = children_of(self.pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in live.into_iter().filter_map(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The processes whose parent is `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()?
                        .split_whitespace()
                        .nth(1)?
                        .parse::<i32>()
                        .ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Runs a command to completion with captured output, killing it past
/// [`WAIT`].
pub fn output_bounded(mut cmd: Command) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let deadline = Instant::now() + WAIT;
    let mut child = loop {
        match cmd.spawn() {
            Ok(child) => break child,
            // A binary a test has just written stays open for writing in
            // any process another test forks meanwhile, until that one
            // execs: running it fails with ETXTBSY until then.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("spawn {cmd:?}: {e}"),
        }
    };
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {WAIT:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    std::process::Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// The `pid` field of an event.
pub fn pid_of(e: &Value) -> i32 {
    e["pid"].as_i64().expect("pid") as i32
}

/// The value of `key=value` in a line (quotes stripped).
pub fn field(line: &str, key: &str) -> String {
    let pat = format!("{key}=");
    let start = line
        .match_indices(&pat)
        .find(|(i, _)| *i == 0 || line.as_bytes()[i - 1] == b' ')
        .map(|(i, _)| i + pat.len())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"));
    line[start..]
        .split(' ')
        .next()
        .unwrap()
        .trim_matches('"')
        .to_string()
}

/// Whether a process is alive: it exists and is not a zombie. A killed
/// orphan is reparented to init, which may reap it late; as a zombie it no
/// longer runs or holds sockets.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// Waits until `pid` is dead, bounded.
pub fn wait_dead(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    !alive(pid)
}

/// Zombie children of `pid`.
pub fn zombies_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if rest.first() == Some(&"Z") && rest.get(1) == Some(&pid.to_string().as_str()) {
            out.push(p);
        }
    }
    out
}

/// Runs `hotsup ARGS` to completion (for bad-input cases), bounded.
pub fn run_to_end(args: &[&str]) -> (i32, String) {
    let runtime = Runtime::new();
    let mut cmd = Command::new(hotsup_bin());
    runtime.apply(&mut cmd);
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hotsup");
    let stderr = child.stderr.take().unwrap();
    let reader = thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hotsup {args:?} did not exit");
        }
        thread::sleep(Duration::from_millis(5));
    };
    (status.code().unwrap_or(-1), reader.join().unwrap())
}

impl Hotsup {
    /// `hotsup run ARGS -- COMMAND...` with `stderr` as hotsup's stderr
    /// (shared with its children, as always): `log` stays empty.
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
        let runtime = Runtime::new();
        runtime.apply(&mut cmd);
        let mut child = cmd.spawn().expect("spawn hotsup");
        let out = Stream::follow(child.stdout.take().unwrap(), "child");
        let pid = child.id() as i32;
        Hotsup {
            child,
            pid,
            log: Stream::follow(std::io::empty(), "hotsup"),
            out,
            status: None,
            runtime: Some(runtime),
        }
    }

    /// The fewest fds hotsup held over a few samples: a control connection
    /// may still be closing.
    pub fn quiet_fds(&self) -> usize {
        (0..20)
            .map(|_| {
                thread::sleep(Duration::from_millis(5));
                self.open_fds()
            })
            .min()
            .unwrap_or(0)
    }
}

/// `hotsup ARGS --control SOCK`, run to completion, bounded.
pub fn client(sock: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(hotsup_bin());
    cmd.args(args).arg("--control").arg(sock);
    output_bounded(cmd)
}

/// A command's stdout and stderr, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Resident memory of `pid`, in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Writes an executable script (mode 0755) at `path`.
pub fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Polls `check` every 10 ms until it holds, for at most [`WAIT`].
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "never true: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Whether hotsup gave its generations cgroups. When it could not, says so
/// on stderr and the test skips, unless `HOTSUP_REQUIRE_CGROUP` is set (as
/// in CI, which runs as root), where that is a failure.
pub fn has_cgroups(h: &Hotsup, test: &str) -> bool {
    // Both are logged before the first spawn.
    h.log.wait_event_from(0, "spawned", &[], WAIT);
    if h.log.count_events("cgroups", &[]) == 1 {
        return true;
    }
    let why = h
        .log
        .events()
        .into_iter()
        .find(|e| e["event"] == "cgroups_unavailable")
        .map(|e| e["reason"].to_string())
        .unwrap_or_else(|| "--cgroup off".into());
    assert!(
        std::env::var_os("HOTSUP_REQUIRE_CGROUP").is_none(),
        "{test}: no cgroups ({why}) but HOTSUP_REQUIRE_CGROUP is set"
    );
    eprintln!("skipped: {test}: hotsup has no cgroups here ({why})");
    false
}

/// Whether the test may go on: it needs root (to bind ports below 1024, or
/// to run processes as other users). Otherwise it says why it is skipped,
/// on stderr past libtest's capture, so a skip is never a silent pass.
pub fn root_or_skip(test: &str, why: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    skip(test, why);
    false
}

/// Says that `test` (or a part of it) is skipped, and why, on stderr past
/// libtest's capture, so a skip is never a silent pass.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// A field of `/proc/PID/status`, such as `Uid` or `SigIgn`, trimmed.
pub fn proc_status(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// A variable of a process's environment as it was at exec.
pub fn environ_var(pid: i32, name: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/environ: {e}"));
    env.split(|b| *b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(name)?.strip_prefix('=').map(str::to_string)
    })
}

/// One `GET /` with `Connection: close`; the whole response.
pub fn http_get(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read the response");
    reply
}

/// `hotsup status --json` once it answers with a serving generation, for
/// tests that cannot read hotsup's log. Panics past [`WAIT`].
pub fn wait_serving(sock: &Path) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = client(sock, &["status", "--json"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
            if v["serving"].is_object() {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "hotsup at {} did not serve within {WAIT:?}: {}",
            sock.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A pipe, both ends close-on-exec (the one handed to a child as its stdio
/// is dup'ed onto 0-2 without it).
pub fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe")
}

/// Fills the pipe whose read end is `read` until it takes no more byte,
/// through an open file description of its own: the flags of the one
/// others share (blocking or not) stay as they are. Returns the bytes
/// written.
pub fn fill_pipe(read: &std::os::fd::OwnedFd) -> usize {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}", read.as_raw_fd());
    let w = rustix::fs::open(
        path.as_str(),
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .expect("reopen the pipe for writing");
    let mut n = 0;
    // Pages first, then single bytes into what is left.
    for size in [4096, 1] {
        let chunk = vec![b'x'; size];
        // Bounded by the pipe's capacity (at most 1 MiB by default).
        for _ in 0..(2 << 20) {
            match rustix::io::write(&w, &chunk) {
                Ok(k) => n += k,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(e) => panic!("filling the pipe: {e}"),
            }
        }
    }
    n
}

/// The value of `key` in `hotsup status --json`, as a number.
pub fn status_u64(sock: &Path, key: &str) -> u64 {
    let out = client(sock, &["status", "--json"]);
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// Follows the lines of `r` (a pipe read end, say) as they arrive.
pub fn follow_lines(r: impl std::io::Read + Send + 'static, echo: &'static str) -> Stream {
    Stream::follow(r, echo)
}

/// Runs `cmd` (stdin, stderr set here; stdout as the caller set it) to
/// completion, killing it past [`WAIT`]. Returns its status and stderr.
pub fn status_and_stderr_bounded(mut cmd: Command) -> (ExitStatus, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let err = child.stderr.take().unwrap();
    let reader = thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {WAIT:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    (status, reader.join().unwrap())
}
