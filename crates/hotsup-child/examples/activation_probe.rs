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

use hotsup_child::{DrainReason, Error, Kind};
use rustix::io::FdFlags;

#[path = "../tests/common/activation.rs"]
mod common;

use common::{assert_scrubbed, expected, fd_flags};

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

fn other_pid() {
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

fn first_fd() {
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

fn missing_fd() {
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
