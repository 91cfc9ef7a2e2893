//! The end-to-end tests' helpers. The harness itself (a running `hotsup`,
//! its log as events, cleanup, a private runtime directory) is the test
//! kit the bench uses too, `hotsup_bench::kit`, re-exported here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub use hotsup_bench::kit::{
    Hotsup, Log as Stream, Runtime, Value, WAIT, hotsup_command, json, pid_of,
};
use hotsup_bench::procfs;

pub fn hotsup_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hotsup")
}

/// An example binary, built by `cargo test` next to the test binary.
pub fn example(name: &str) -> PathBuf {
    let path = hotsup_bench::kit::built(&format!("examples/{name}"));
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
    procfs::alive(pid)
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

/// The live processes whose parent is `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    procfs::children(pid).into_iter().map(|(p, _)| p).collect()
}

/// Zombie children of `pid`.
pub fn zombies_of(pid: i32) -> Vec<i32> {
    procfs::zombie_children(pid)
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
    procfs::rss_kib(pid).unwrap_or_else(|e| panic!("RSS of {pid}: {e}"))
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
    procfs::environ_var(pid, name).unwrap_or_else(|e| panic!("/proc/{pid}/environ: {e}"))
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
