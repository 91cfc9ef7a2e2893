//! Socket activation (`LISTEN_FDS`, as systemd and `hotsup run --fds
//! systemd` pass sockets) and `NOTIFY_SOCKET`.
//!
//! The handoff happens once per process and needs the fds at fixed numbers,
//! so each `activation_*` test re-runs this test binary as a child process,
//! with the sockets placed at fds 3, 4, … and the environment a supervisor
//! would set, and has it run the matching ignored `child_*` test. Run
//! directly (without the marker variable), the `child_*` tests do nothing.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use hotsup_child::{DrainReason, Error, Kind, ListenerInfo};
use rustix::io::FdFlags;

/// Set in the child: which scenario it runs.
const MARKER: &str = "HSC_ACTIVATION_SCENARIO";
/// Set in the child: the listeners it must find, `kind name address` lines.
const EXPECT: &str = "HSC_ACTIVATION_EXPECT";

/// Every variable the crate must remove from the environment.
const SCRUBBED: [&str; 7] = [
    "HOTSUP_FD",
    "HOTSUP_GENERATION",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "LISTEN_FDS_FIRST_FD",
    "NOTIFY_SOCKET",
];

/// A fresh directory for Unix sockets.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hsc-act-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
    expect: Vec<ListenerInfo>,
}

impl Child<'_> {
    /// Runs the child to completion and panics, with its output, if it
    /// failed.
    fn run(self) {
        let exe = std::env::current_exe().unwrap();
        let test = format!("child_{}", self.scenario);
        let mut cmd = Command::new("/bin/sh");
        let script = if self.own_pid {
            r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#
        } else {
            r#"exec "$0" "$@""#
        };
        cmd.arg("-c").arg(script).arg(exe).args([
            &test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ]);
        for var in SCRUBBED {
            cmd.env_remove(var);
        }
        cmd.env(MARKER, self.scenario)
            .env(EXPECT, encode(&self.expect));
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
        cmd.stdin(Stdio::null());
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "child {test} failed: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
        // The child's harness prints this when the scenario really ran.
        assert!(
            stdout.contains("1 passed"),
            "child {test} did not run:\n{stdout}"
        );
    }
}

fn encode(listeners: &[ListenerInfo]) -> String {
    listeners
        .iter()
        .map(|l| format!("{} {} {}", l.kind, l.name, l.address))
        .collect::<Vec<_>>()
        .join("\n")
}

/// In the child: the listeners the parent says it passed.
fn expected() -> Vec<ListenerInfo> {
    let text = std::env::var(EXPECT).unwrap();
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let kind = match parts.next().unwrap() {
                "tcp" => Kind::Tcp,
                "udp" => Kind::Udp,
                "unix" => Kind::Unix,
                other => panic!("kind {other}"),
            };
            ListenerInfo {
                kind,
                name: parts.next().unwrap().into(),
                address: parts.next().unwrap().into(),
            }
        })
        .collect()
}

fn info(kind: Kind, name: &str, address: impl ToString) -> ListenerInfo {
    ListenerInfo {
        name: name.into(),
        kind,
        address: address.to_string(),
    }
}

/// In the child: whether this scenario should run. If so, the child fails
/// after 30 s rather than hang the parent.
fn scenario_is(name: &str) -> bool {
    let run = std::env::var(MARKER).is_ok_and(|s| s == name);
    if run {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(30));
            eprintln!("child scenario timed out");
            std::process::exit(3);
        });
    }
    run
}

fn assert_scrubbed() {
    for var in SCRUBBED {
        assert_eq!(std::env::var_os(var), None, "{var} must be removed");
    }
}

fn fd_flags(fd: RawFd) -> rustix::io::Result<FdFlags> {
    // SAFETY: only used for one `fcntl(F_GETFD)`, which fails harmlessly
    // with EBADF if the fd is not open.
    rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(fd) })
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
        info(Kind::Tcp, "web", web.local_addr().unwrap()),
        info(Kind::Udp, "udp1", dns.local_addr().unwrap()),
        info(Kind::Unix, "admin", admin_path.display()),
        // 3 ("conn") and 4 (/dev/null, unnamed: "other4") are unsupported.
        // 5 repeats the name "web": it gets the default name.
        info(Kind::Tcp, "tcp5", web2.local_addr().unwrap()),
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
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "run by activation_with_names_kinds_and_notify in a prepared process"]
fn child_full() {
    if !scenario_is("full") {
        return;
    }
    assert_eq!(
        std::env::var("LISTEN_PID").unwrap(),
        std::process::id().to_string(),
        "the parent sets LISTEN_PID to this process"
    );
    let expect = expected();
    let notify = std::env::var_os("NOTIFY_SOCKET").unwrap();

    hotsup_child::init().unwrap();
    assert_scrubbed();
    assert!(hotsup_child::is_supervised());
    assert_eq!(hotsup_child::generation(), Some(5));
    assert_eq!(hotsup_child::listeners(), &expect[..]);
    assert_eq!(hotsup_child::notify_socket(), Some(notify.as_os_str()));
    for fd in 3..=8 {
        assert!(
            fd_flags(fd).unwrap().contains(FdFlags::CLOEXEC),
            "fd {fd} must be close-on-exec"
        );
    }

    // The fallback is not used: the first TCP listener is.
    let web = hotsup_child::inherit_listener("127.0.0.1:1").unwrap();
    assert_eq!(web.local_addr().unwrap().to_string(), expect[0].address);
    assert!(matches!(
        hotsup_child::tcp_listener("web"),
        Err(Error::AlreadyTaken { .. })
    ));
    match hotsup_child::tcp_listener("conn") {
        Err(Error::UnsupportedInheritedFd { fd: 6, found }) => {
            assert_eq!(found, "inet stream socket, not listening");
        }
        other => panic!("expected UnsupportedInheritedFd, got {other:?}"),
    }
    match hotsup_child::take_socket("other4", Kind::Unix) {
        Err(Error::UnsupportedInheritedFd { fd: 7, found }) => assert_eq!(found, "not a socket"),
        other => panic!("expected UnsupportedInheritedFd, got {other:?}"),
    }
    assert!(matches!(
        hotsup_child::tcp_listener("udp1"),
        Err(Error::WrongKind { .. })
    ));
    assert!(matches!(
        hotsup_child::tcp_listener("nope"),
        Err(Error::NotFound { .. })
    ));
    // The unsupported fds stay open.
    assert!(fd_flags(6).is_ok() && fd_flags(7).is_ok());

    let udp = hotsup_child::udp_socket("udp1").unwrap();
    assert_eq!(udp.local_addr().unwrap().to_string(), expect[1].address);
    let admin = hotsup_child::unix_listener("admin").unwrap();
    let web2 = hotsup_child::tcp_listener_or_bind("tcp5", "127.0.0.1:1").unwrap();
    assert_eq!(web2.local_addr().unwrap().to_string(), expect[3].address);

    // They work.
    let mut client = TcpStream::connect(web.local_addr().unwrap()).unwrap();
    // The backlog also holds the connection fd 6 belongs to.
    let mut conn = loop {
        let (conn, peer) = web.accept().unwrap();
        if peer == client.local_addr().unwrap() {
            break conn;
        }
    };
    conn.write_all(b"hi").unwrap();
    let mut buf = [0; 2];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
    let _client = UnixStream::connect(&expect[2].address).unwrap();
    admin.accept().unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"x", udp.local_addr().unwrap()).unwrap();
    assert_eq!(udp.recv(&mut buf).unwrap(), 1);

    hotsup_child::ready().unwrap();
    hotsup_child::ready().unwrap();
    hotsup_child::status("warming up").unwrap();
    assert!(matches!(
        hotsup_child::status("two\nlines"),
        Err(Error::Encode(_))
    ));

    // The supervisor drains with a signal.
    let drain = hotsup_child::drain();
    assert!(!drain.is_draining());
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM)
        .unwrap();
    assert!(drain.wait_timeout(Duration::from_secs(5)));
    assert_eq!(drain.reason(), Some(DrainReason::Signal(15)));
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
#[ignore = "run by activation_for_another_pid_is_standalone in a prepared process"]
fn child_other_pid() {
    if !scenario_is("other_pid") {
        return;
    }
    let before = fd_flags(3).unwrap();
    hotsup_child::init().unwrap();
    assert_scrubbed();
    assert!(!hotsup_child::is_supervised());
    assert_eq!(hotsup_child::generation(), None);
    assert!(hotsup_child::listeners().is_empty());
    assert!(matches!(
        hotsup_child::tcp_listener("web"),
        Err(Error::NotFound { .. })
    ));
    // Binds the fallback; fd 3 is not ours and is left alone.
    let listener = hotsup_child::inherit_listener("127.0.0.1:0").unwrap();
    assert_ne!(listener.as_raw_fd(), 3);
    assert_eq!(fd_flags(3).unwrap(), before);
    assert!(!before.contains(FdFlags::CLOEXEC));
    hotsup_child::ready().unwrap();
}

#[test]
fn activation_at_another_first_fd_without_names() {
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let expect = vec![info(Kind::Tcp, "tcp0", web.local_addr().unwrap())];
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
#[ignore = "run by activation_at_another_first_fd_without_names in a prepared process"]
fn child_first_fd() {
    if !scenario_is("first_fd") {
        return;
    }
    let expect = expected();
    hotsup_child::init().unwrap();
    assert_scrubbed();
    // Under systemd: supervised, but no generation.
    assert!(hotsup_child::is_supervised());
    assert_eq!(hotsup_child::generation(), None);
    assert_eq!(hotsup_child::listeners(), &expect[..]);
    assert_eq!(hotsup_child::notify_socket(), None);
    let web = hotsup_child::tcp_listener("tcp0").unwrap();
    assert_eq!(web.as_raw_fd(), 10);
    // No NOTIFY_SOCKET: nothing to tell.
    hotsup_child::ready().unwrap();
    hotsup_child::status("fine").unwrap();
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

#[test]
#[ignore = "run by activation_with_a_missing_fd_fails in a prepared process"]
fn child_missing_fd() {
    if !scenario_is("missing_fd") {
        return;
    }
    match hotsup_child::init() {
        Err(Error::Handoff(inner)) => {
            assert!(matches!(*inner, Error::NotASocket { fd: 900 }), "{inner:?}");
        }
        other => panic!("expected Handoff(NotASocket), got {other:?}"),
    }
    assert_scrubbed();
    assert!(hotsup_child::is_supervised());
    assert!(hotsup_child::listeners().is_empty());
    assert!(matches!(
        hotsup_child::inherit_listener("127.0.0.1:0"),
        Err(Error::Handoff(_))
    ));
    assert!(matches!(hotsup_child::ready(), Err(Error::Handoff(_))));
}
