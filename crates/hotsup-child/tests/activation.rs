//! Socket activation (`LISTEN_FDS`, as systemd and `hotsup run --fds
//! systemd` pass sockets) and `NOTIFY_SOCKET`.
//!
//! The handoff happens once per process and needs the fds at fixed numbers,
//! so each test runs `examples/activation_probe` (built by `cargo test`) as
//! a child process, with the sockets placed at fds 3, 4, … and the
//! environment a supervisor would set, and checks that the probe's checks
//! of that scenario passed.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};

mod common;

use common::activation::{EXPECT, SCRUBBED, encode, line};

/// The probe, next to this test binary's directory.
fn probe() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let probe = dir.join("examples").join("activation_probe");
    assert!(
        probe.exists(),
        "{} is missing: `cargo test -p hotsup-child` builds it",
        probe.display()
    );
    probe
}

/// A fresh directory for Unix sockets, removed on drop (also when the
/// test fails).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("hsc-act-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// How to start the child.
struct Child<'a> {
    scenario: &'a str,
    /// (fd in the parent, number in the child)
    fds: Vec<(OwnedFd, RawFd)>,
    env: Vec<(&'a str, String)>,
    /// Set `LISTEN_PID` to the child's own pid (through `sh`, whose pid the
    /// test binary keeps across `exec`).
    own_pid: bool,
    expect: Vec<String>,
}

impl Child<'_> {
    /// Runs the child to completion and panics, with its output, if it
    /// failed.
    fn run(self) {
        let probe = probe();
        let mut cmd = Command::new("/bin/sh");
        let script = if self.own_pid {
            r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#
        } else {
            r#"exec "$0" "$@""#
        };
        cmd.arg("-c").arg(script).arg(&probe).arg(self.scenario);
        for var in SCRUBBED {
            cmd.env_remove(var);
        }
        cmd.env(EXPECT, encode(&self.expect));
        for (var, value) in &self.env {
            cmd.env(var, value);
        }
        let mappings = self
            .fds
            .into_iter()
            .map(|(parent_fd, child_fd)| FdMapping {
                parent_fd,
                child_fd,
            })
            .collect();
        cmd.fd_mappings(mappings).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        // Read both pipes while the probe runs, so that a chatty probe
        // cannot fill one and block.
        let readers = [
            drain_pipe(child.stdout.take().unwrap()),
            drain_pipe(child.stderr.take().unwrap()),
        ];
        // The probe stops itself after 30 s; this bound is the test's own.
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let [stdout, stderr] = readers.map(|r| r.join().unwrap());
        assert!(
            status.success(),
            "scenario {} failed: {status}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            self.scenario,
        );
        // The probe prints this only when every check of the scenario ran.
        assert!(
            stdout.contains(&format!("scenario {} ok", self.scenario)),
            "scenario {} did not run:\n{stdout}",
            self.scenario
        );
    }
}

/// Reads a pipe to its end on a thread.
fn drain_pipe(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Reads every datagram that arrived, without waiting.
fn datagrams(socket: &UnixDatagram) -> Vec<String> {
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0; 4096];
    let mut out = Vec::new();
    while let Ok(n) = socket.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

#[test]
fn activation_with_names_kinds_and_notify() {
    let dir = temp_dir("full");
    let dir = &dir.0;
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let dns = UdpSocket::bind("127.0.0.1:0").unwrap();
    let admin_path = dir.join("admin.sock");
    let admin = UnixListener::bind(&admin_path).unwrap();
    // A connected stream socket, as `Accept=yes` would pass.
    let conn = TcpStream::connect(web.local_addr().unwrap()).unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let web2 = TcpListener::bind("127.0.0.1:0").unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();

    let expect = vec![
        line("tcp", "web", web.local_addr().unwrap()),
        line("udp", "udp1", dns.local_addr().unwrap()),
        line("unix", "admin", admin_path.display()),
        // 3 ("conn") and 4 (/dev/null, unnamed: "other4") are unsupported.
        // 5 repeats the name "web": it gets the default name.
        line("tcp", "tcp5", web2.local_addr().unwrap()),
    ];
    Child {
        scenario: "full",
        fds: vec![
            (web.into(), 3),
            (dns.into(), 4),
            (admin.into(), 5),
            (conn.into(), 6),
            (null.into(), 7),
            (web2.into(), 8),
        ],
        env: vec![
            ("LISTEN_FDS", "6".into()),
            ("LISTEN_FDNAMES", "web::admin:conn::web".into()),
            ("HOTSUP_GENERATION", "5".into()),
            ("NOTIFY_SOCKET", notify_path.display().to_string()),
        ],
        own_pid: true,
        expect,
    }
    .run();
    assert_eq!(
        datagrams(&notify),
        ["READY=1\n", "STATUS=warming up\n"],
        "READY=1 once, then the status"
    );
}

#[test]
fn activation_for_another_pid_is_standalone() {
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let name = format!("hsc-act-notify-{}", std::process::id());
    let notify =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    Child {
        scenario: "other_pid",
        fds: vec![(web.into(), 3)],
        env: vec![
            ("LISTEN_FDS", "1".into()),
            ("LISTEN_PID", "1".into()),
            ("LISTEN_FDNAMES", "web".into()),
            ("NOTIFY_SOCKET", format!("@{name}")),
        ],
        own_pid: false,
        expect: Vec::new(),
    }
    .run();
    // Standalone, READY=1 still goes to NOTIFY_SOCKET (abstract here).
    assert_eq!(datagrams(&notify), ["READY=1\n"]);
}

#[test]
fn activation_at_another_first_fd_without_names() {
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let expect = vec![line("tcp", "tcp0", web.local_addr().unwrap())];
    Child {
        scenario: "first_fd",
        fds: vec![(web.into(), 10)],
        env: vec![
            ("LISTEN_FDS", "1".into()),
            ("LISTEN_PID", String::new()),
            ("LISTEN_FDS_FIRST_FD", "10".into()),
        ],
        own_pid: false,
        expect,
    }
    .run();
}

#[test]
fn activation_with_a_missing_fd_fails() {
    Child {
        scenario: "missing_fd",
        fds: Vec::new(),
        env: vec![
            ("LISTEN_FDS", "2".into()),
            ("LISTEN_FDS_FIRST_FD", "900".into()),
        ],
        own_pid: true,
        expect: Vec::new(),
    }
    .run();
}
