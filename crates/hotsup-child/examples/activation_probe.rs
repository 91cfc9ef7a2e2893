//! Not an example to copy: the process `tests/activation.rs` runs with
//! sockets placed at fds 3, 4, … and the environment a supervisor (or
//! systemd) would set. The handoff happens once per process, so each
//! scenario needs a fresh one. Exits 0 and prints `scenario NAME ok` when
//! every check of the scenario passed; a failed check panics (exit 101).

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use hotsup_child::{DrainReason, Error, Signal, StartupError};
use rustix::io::FdFlags;

#[path = "../tests/common/activation.rs"]
mod common;

use common::{SCRUBBED, address, assert_scrubbed, expected, fd_flags, found};

fn main() {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    // Fail rather than hang the test that waits for us.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(30));
        eprintln!("activation_probe: scenario timed out");
        std::process::exit(3);
    });
    match scenario.as_str() {
        "full" => full(),
        "other_pid" => other_pid(),
        "first_fd" => first_fd(),
        "missing_fd" => missing_fd(),
        other => {
            eprintln!("activation_probe: unknown scenario {other:?}");
            std::process::exit(2);
        }
    }
    println!("scenario {scenario} ok");
}

fn full() {
    assert_eq!(
        std::env::var("LISTEN_PID").unwrap(),
        std::process::id().to_string(),
        "the parent sets LISTEN_PID to this process"
    );
    let expect = expected();
    let notify = std::env::var_os("NOTIFY_SOCKET").unwrap();

    hotsup_child::init().unwrap();
    // The handoff only reads the environment.
    for var in ["LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET"] {
        assert!(std::env::var_os(var).is_some(), "{var} must be left alone");
    }
    // SAFETY: the only other thread of this process (the time-out above)
    // only sleeps and never touches the environment.
    unsafe { hotsup_child::scrub_env() };
    assert_scrubbed();
    assert!(hotsup_child::is_supervised());
    assert_eq!(hotsup_child::generation(), Some(5));
    assert_eq!(found(), expect);
    assert_eq!(hotsup_child::notify_socket(), Some(notify.as_os_str()));
    for fd in 3..=8 {
        assert!(
            fd_flags(fd).unwrap().contains(FdFlags::CLOEXEC),
            "fd {fd} must be close-on-exec"
        );
    }

    // The fallback is not used: the first TCP listener is.
    let web = hotsup_child::first_tcp()
        .or_bind("127.0.0.1:1")
        .blocking()
        .unwrap();
    assert_eq!(web.local_addr().unwrap().to_string(), address(&expect[0]));
    assert!(matches!(
        hotsup_child::tcp("web").blocking(),
        Err(Error::AlreadyTaken { .. })
    ));
    match hotsup_child::tcp("conn").blocking() {
        Err(Error::UnsupportedInheritedFd { fd: 6, found, .. }) => {
            assert_eq!(found, "an inet stream socket, not listening");
        }
        other => panic!("expected UnsupportedInheritedFd, got {other:?}"),
    }
    match hotsup_child::unix("other4").fd() {
        Err(Error::UnsupportedInheritedFd { fd: 7, found, .. }) => {
            assert_eq!(found, "not a socket")
        }
        other => panic!("expected UnsupportedInheritedFd, got {other:?}"),
    }
    assert!(matches!(
        hotsup_child::tcp("udp1").blocking(),
        Err(Error::WrongKind { .. })
    ));
    assert!(matches!(
        hotsup_child::tcp("nope").blocking(),
        Err(Error::NotFound { .. })
    ));
    // The unsupported fds stay open.
    assert!(fd_flags(6).is_ok() && fd_flags(7).is_ok());

    let udp = hotsup_child::udp("udp1").blocking().unwrap();
    assert_eq!(udp.local_addr().unwrap().to_string(), address(&expect[1]));
    let admin = hotsup_child::unix("admin").blocking().unwrap();
    let web2 = hotsup_child::tcp("tcp5")
        .or_bind("127.0.0.1:1")
        .blocking()
        .unwrap();
    assert_eq!(web2.local_addr().unwrap().to_string(), address(&expect[3]));

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
    let _client = UnixStream::connect(address(&expect[2])).unwrap();
    admin.accept().unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"x", udp.local_addr().unwrap()).unwrap();
    assert_eq!(udp.recv(&mut buf).unwrap(), 1);

    hotsup_child::ready().unwrap();
    hotsup_child::ready().unwrap();
    hotsup_child::status("warming up").unwrap();
    assert!(matches!(
        hotsup_child::status("two\nlines"),
        Err(Error::InvalidText { .. })
    ));

    // The supervisor drains with a signal.
    let drain = hotsup_child::lifecycle();
    assert!(!drain.is_draining());
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM)
        .unwrap();
    assert!(drain.wait_drain_timeout(Duration::from_secs(5)));
    assert_eq!(
        drain.drain_reason(),
        Some(DrainReason::Signal(Signal::Term))
    );
}

fn other_pid() {
    let before = fd_flags(3).unwrap();
    hotsup_child::init().unwrap();
    assert!(!hotsup_child::is_supervised());
    assert_eq!(hotsup_child::generation(), None);
    assert!(hotsup_child::listeners().is_empty());
    assert!(matches!(
        hotsup_child::tcp("web").blocking(),
        Err(Error::NoFallback { .. })
    ));
    // Binds the fallback; fd 3 is not ours and is left alone.
    let listener = hotsup_child::tcp("web")
        .or_bind("127.0.0.1:0")
        .blocking()
        .unwrap();
    assert_ne!(listener.as_raw_fd(), 3);
    assert_eq!(fd_flags(3).unwrap(), before);
    assert!(!before.contains(FdFlags::CLOEXEC));
    hotsup_child::ready().unwrap();
}

fn first_fd() {
    let expect = expected();
    hotsup_child::init().unwrap();
    // Under systemd: supervised, but no generation.
    assert!(hotsup_child::is_supervised());
    assert_eq!(hotsup_child::generation(), None);
    assert_eq!(found(), expect);
    assert_eq!(hotsup_child::notify_socket(), None);
    let web = hotsup_child::tcp("tcp0").nonblocking().unwrap();
    assert_eq!(web.as_raw_fd(), 10);
    // No NOTIFY_SOCKET: nothing to tell.
    hotsup_child::ready().unwrap();
    hotsup_child::status("fine").unwrap();
}

fn missing_fd() {
    match hotsup_child::init() {
        Err(Error::Startup(inner)) => {
            assert!(
                matches!(*inner, StartupError::NotASocket { fd: 900 }),
                "{inner:?}"
            );
        }
        other => panic!("expected Startup(NotASocket), got {other:?}"),
    }
    assert!(hotsup_child::is_supervised());
    assert!(hotsup_child::listeners().is_empty());
    assert!(matches!(
        hotsup_child::first_tcp().or_bind("127.0.0.1:0").blocking(),
        Err(Error::Startup(_))
    ));
    assert!(matches!(hotsup_child::ready(), Err(Error::Startup(_))));
    // The variables stay; a program started with `remove_env` sees none.
    let mut cmd = std::process::Command::new("/usr/bin/env");
    hotsup_child::remove_env(&mut cmd);
    let env = cmd.output().unwrap().stdout;
    let env = String::from_utf8_lossy(&env);
    assert!(std::env::var_os("LISTEN_FDS").is_some());
    for var in SCRUBBED {
        assert!(!env.contains(&format!("{var}=")), "{var} reached the child");
    }
}
