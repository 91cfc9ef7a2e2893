//! `Handoff::receive` against an emulated supervisor on a socketpair.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hotsup_child::{DrainReason, Error, Handoff, Kind, ListenerInfo};
use hotsup_protocol::{DecodeError, RecvError, ToChild, chunk_listeners};
use rustix::io::FdFlags;
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};

/// The supervisor's end and the child's end of a channel. The child's end is
/// not close-on-exec, as a real supervisor would pass it.
fn channel() -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::empty(),
        None,
    )
    .unwrap()
}

fn send(sup: &OwnedFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    hotsup_protocol::send(sup.as_fd(), bytes, fds).unwrap();
}

fn send_msg(sup: &OwnedFd, msg: &ToChild, fds: &[BorrowedFd<'_>]) {
    send(sup, &msg.encode().unwrap(), fds);
}

fn hello(sup: &OwnedFd, generation: u64, listeners: usize) {
    send_msg(
        sup,
        &ToChild::Hello {
            version: 1,
            generation,
            listeners,
            max_version: 1,
        },
        &[],
    );
}

fn info(kind: Kind, name: &str, address: &str) -> ListenerInfo {
    ListenerInfo {
        name: name.into(),
        kind,
        address: address.into(),
    }
}

/// A fresh directory for Unix sockets.
fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hsc-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn is_nonblocking(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fcntl_getfl(fd)
        .unwrap()
        .contains(rustix::fs::OFlags::NONBLOCK)
}

fn is_cloexec(fd: BorrowedFd<'_>) -> bool {
    rustix::io::fcntl_getfd(fd)
        .unwrap()
        .contains(FdFlags::CLOEXEC)
}

/// A handoff with no listeners.
fn empty_handoff() -> (OwnedFd, Handoff) {
    let (sup, child) = channel();
    hello(&sup, 1, 0);
    (sup, Handoff::receive(child).unwrap())
}

#[test]
fn receives_300_listeners_of_every_kind() {
    let dir = temp_dir();
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    let mut unix = Vec::new();
    let mut infos = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    for i in 0..300 {
        match i % 3 {
            0 => {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                // The supervisor's copy is nonblocking; the child must not
                // inherit that assumption.
                l.set_nonblocking(true).unwrap();
                infos.push(info(
                    Kind::Tcp,
                    &format!("tcp-{i}"),
                    &l.local_addr().unwrap().to_string(),
                ));
                fds.push(l.as_fd().try_clone_to_owned().unwrap());
                tcp.push(l);
            }
            1 => {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_nonblocking(true).unwrap();
                infos.push(info(
                    Kind::Udp,
                    &format!("udp-{i}"),
                    &s.local_addr().unwrap().to_string(),
                ));
                fds.push(s.as_fd().try_clone_to_owned().unwrap());
                udp.push(s);
            }
            _ => {
                let path = dir.join(format!("s{i}"));
                let l = UnixListener::bind(&path).unwrap();
                infos.push(info(
                    Kind::Unix,
                    &format!("unix.{i}"),
                    path.to_str().unwrap(),
                ));
                fds.push(l.as_fd().try_clone_to_owned().unwrap());
                unix.push(l);
            }
        }
    }

    let (sup, child) = channel();
    let child_raw = child.as_raw_fd();
    let sent = infos.clone();
    let supervisor = std::thread::spawn(move || {
        hello(&sup, 42, sent.len());
        let chunks = chunk_listeners(&sent);
        assert_eq!(chunks.len(), 2);
        for (msg, range) in chunks {
            let borrowed: Vec<_> = fds[range].iter().map(|f| f.as_fd()).collect();
            send_msg(&sup, &msg, &borrowed);
        }
        // The supervisor keeps its copies; drop them here, the test keeps the
        // originals.
        drop(fds);
        sup
    });
    let handoff = Handoff::receive(child).unwrap();
    let sup = supervisor.join().unwrap();

    assert_eq!(handoff.generation(), 42);
    assert_eq!(handoff.listeners(), &infos[..]);
    // SAFETY: `handoff` owns this fd and is alive for the whole borrow.
    let channel_fd = unsafe { BorrowedFd::borrow_raw(child_raw) };
    assert!(
        is_cloexec(channel_fd),
        "the channel must be made close-on-exec"
    );

    for (i, l) in tcp.iter().enumerate() {
        let name = format!("tcp-{}", i * 3);
        let taken = handoff.take_tcp(&name).unwrap();
        assert_eq!(taken.local_addr().unwrap(), l.local_addr().unwrap());
        assert!(is_cloexec(taken.as_fd()));
        assert!(
            !is_nonblocking(taken.as_fd()),
            "taken listeners are blocking"
        );
        assert!(
            matches!(handoff.take_tcp(&name), Err(Error::AlreadyTaken { name: n }) if n == name)
        );
    }
    // Connect and accept through one of them.
    {
        let addr = tcp[0].local_addr().unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        client.write_all(b"x").unwrap();
        let (mut conn, _) = tcp[0].accept().unwrap_or_else(|_| {
            std::thread::sleep(Duration::from_millis(50));
            tcp[0].accept().unwrap()
        });
        let mut buf = [0; 1];
        conn.set_nonblocking(false).unwrap();
        conn.read_exact(&mut buf).unwrap();
    }
    for (i, s) in udp.iter().enumerate() {
        let name = format!("udp-{}", i * 3 + 1);
        let taken = handoff.take_udp(&name).unwrap();
        assert_eq!(taken.local_addr().unwrap(), s.local_addr().unwrap());
        assert!(!is_nonblocking(taken.as_fd()));
    }
    for (i, l) in unix.iter().enumerate() {
        let name = format!("unix.{}", i * 3 + 2);
        let taken = handoff.take_unix(&name).unwrap();
        assert_eq!(
            taken.local_addr().unwrap().as_pathname(),
            l.local_addr().unwrap().as_pathname()
        );
        assert!(!is_nonblocking(taken.as_fd()));
    }
    assert!(matches!(
        handoff.take_first_tcp(),
        Err(Error::AlreadyTaken { .. })
    ));
    assert!(matches!(handoff.take_tcp("nope"), Err(Error::NotFound { name }) if name == "nope"));
    drop(sup);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn take_checks_the_declared_and_the_actual_kind() {
    let dir = temp_dir();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
    let unix = UnixListener::bind(dir.join("u")).unwrap();
    let unix_stream = UnixStream::connect(dir.join("u")).unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let listeners = [
        info(Kind::Tcp, "real-tcp", "127.0.0.1:1"),
        info(Kind::Tcp, "udp-as-tcp", "127.0.0.1:2"),
        info(Kind::Tcp, "stream-as-tcp", "127.0.0.1:3"),
        info(Kind::Tcp, "unix-as-tcp", "127.0.0.1:4"),
        info(Kind::Tcp, "file-as-tcp", "127.0.0.1:5"),
        info(Kind::Unix, "stream-as-unix", "/x"),
        info(Kind::Udp, "tcp-as-udp", "127.0.0.1:6"),
    ];
    let fds = [
        tcp.as_fd(),
        udp.as_fd(),
        stream.as_fd(),
        unix.as_fd(),
        file.as_fd(),
        unix_stream.as_fd(),
        tcp.as_fd(),
    ];
    let (sup, child) = channel();
    hello(&sup, 1, listeners.len());
    for (msg, range) in chunk_listeners(&listeners) {
        send_msg(&sup, &msg, &fds[range]);
    }
    let handoff = Handoff::receive(child).unwrap();

    let wrong = |r: Result<(), Error>| match r {
        Err(Error::WrongKind { found, .. }) => found,
        other => panic!("expected WrongKind, got {other:?}"),
    };
    // Declared kind differs from the one asked for.
    let found = wrong(handoff.take_udp("real-tcp").map(drop));
    assert_eq!(found, "a tcp listener");
    let found = wrong(handoff.take_unix("real-tcp").map(drop));
    assert_eq!(found, "a tcp listener");
    // Declared right, but the socket is something else.
    assert_eq!(
        wrong(handoff.take_tcp("udp-as-tcp").map(drop)),
        "inet datagram socket"
    );
    assert_eq!(
        wrong(handoff.take_tcp("stream-as-tcp").map(drop)),
        "inet stream socket, not listening"
    );
    assert_eq!(
        wrong(handoff.take_tcp("unix-as-tcp").map(drop)),
        "unix stream socket"
    );
    assert_eq!(
        wrong(handoff.take_tcp("file-as-tcp").map(drop)),
        "not a socket"
    );
    assert_eq!(
        wrong(handoff.take_unix("stream-as-unix").map(drop)),
        "unix stream socket, not listening"
    );
    assert_eq!(
        wrong(handoff.take_udp("tcp-as-udp").map(drop)),
        "inet stream socket"
    );
    // A failed take leaves the listener in place.
    assert_eq!(
        wrong(handoff.take_tcp("udp-as-tcp").map(drop)),
        "inet datagram socket"
    );
    // The first TCP listener is the real one.
    let taken = handoff.take_first_tcp().unwrap();
    assert_eq!(taken.local_addr().unwrap(), tcp.local_addr().unwrap());
    drop(sup);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unsupported_version_is_a_typed_error() {
    let (sup, child) = channel();
    send(&sup, b"HELLO version=2 generation=1 listeners=0", &[]);
    assert!(matches!(
        Handoff::receive(child),
        Err(Error::UnsupportedVersion { version: 2 })
    ));
    // Even when the other fields of version 1 are missing.
    let (sup, child) = channel();
    send(&sup, b"HELLO version=9 something=else", &[]);
    assert!(matches!(
        Handoff::receive(child),
        Err(Error::UnsupportedVersion { version: 9 })
    ));
}

/// After `receive` fails, the listener it received must be closed: with the
/// test's own copy dropped as well, connecting is refused.
fn assert_closed(addr: std::net::SocketAddr) {
    match TcpStream::connect(addr) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused),
        Ok(_) => panic!("the listener at {addr} leaked"),
    }
}

#[test]
fn fd_count_mismatch_is_an_error_and_closes_the_fds() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let (sup, child) = channel();
    hello(&sup, 1, 2);
    send(
        &sup,
        b"LISTENERS start=0 count=2\ntcp a 127.0.0.1:1\ntcp b 127.0.0.1:2",
        &[tcp.as_fd()],
    );
    drop(tcp);
    assert!(matches!(
        Handoff::receive(child),
        Err(Error::FdCountMismatch {
            expected: 2,
            found: 1
        })
    ));
    assert_closed(addr);
}

#[test]
fn more_listeners_than_announced_is_an_error_and_closes_the_fds() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let addrs = [a.local_addr().unwrap(), b.local_addr().unwrap()];
    let (sup, child) = channel();
    hello(&sup, 1, 1);
    send(
        &sup,
        b"LISTENERS start=0 count=2\ntcp a 127.0.0.1:1\ntcp b 127.0.0.1:2",
        &[a.as_fd(), b.as_fd()],
    );
    drop((a, b));
    assert!(matches!(
        Handoff::receive(child),
        Err(Error::ListenerCountMismatch {
            expected: 1,
            found: 2
        })
    ));
    addrs.into_iter().for_each(assert_closed);
}

#[test]
fn lines_and_count_must_agree() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let (sup, child) = channel();
    hello(&sup, 1, 1);
    send(
        &sup,
        b"LISTENERS start=0 count=2\ntcp a 127.0.0.1:1",
        &[tcp.as_fd()],
    );
    assert!(matches!(
        Handoff::receive(child),
        Err(Error::Protocol(DecodeError::CountMismatch { .. }))
    ));
}

#[test]
fn chunks_must_come_in_order() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let (sup, child) = channel();
    hello(&sup, 1, 1);
    send(
        &sup,
        b"LISTENERS start=5 count=1\ntcp a 127.0.0.1:1",
        &[tcp.as_fd()],
    );
    assert!(matches!(
        Handoff::receive(child),
        Err(Error::OutOfOrder {
            expected: 0,
            found: 5
        })
    ));
}

#[test]
fn duplicate_names_are_rejected() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let (sup, child) = channel();
    hello(&sup, 1, 2);
    send(
        &sup,
        b"LISTENERS start=0 count=2\ntcp a 127.0.0.1:1\ntcp a 127.0.0.1:2",
        &[tcp.as_fd(), tcp.as_fd()],
    );
    assert!(matches!(
        Handoff::receive(child),
        Err(Error::DuplicateName { name }) if name == "a"
    ));
}

#[test]
fn handshake_errors() {
    // LISTENERS before HELLO.
    let (sup, child) = channel();
    send(&sup, b"LISTENERS start=0 count=0", &[]);
    assert!(matches!(
        Handoff::receive(child),
        Err(Error::UnexpectedMessage {
            expected: "HELLO",
            ..
        })
    ));
    // Garbage.
    let (sup, child) = channel();
    send(&sup, b"\xff\xfe", &[]);
    assert!(matches!(
        Handoff::receive(child),
        Err(Error::Protocol(DecodeError::NotUtf8))
    ));
    // A missing field.
    let (sup, child) = channel();
    send(&sup, b"HELLO version=1 generation=1", &[]);
    assert!(matches!(
        Handoff::receive(child),
        Err(Error::Protocol(DecodeError::MissingField { .. }))
    ));
    // The supervisor goes away in the middle.
    let (sup, child) = channel();
    hello(&sup, 1, 3);
    drop(sup);
    assert!(matches!(
        Handoff::receive(child),
        Err(Error::Channel(RecvError::Closed))
    ));
}

#[test]
fn the_channel_must_be_a_unix_seqpacket_socket() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(matches!(
        Handoff::receive(tcp.into()),
        Err(Error::NotSeqpacket { .. })
    ));
    let (_a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    assert!(matches!(
        Handoff::receive(b),
        Err(Error::NotSeqpacket { .. })
    ));
    let file = std::fs::File::open("/dev/null").unwrap();
    assert!(matches!(
        Handoff::receive(file.into()),
        Err(Error::NotASocket { .. })
    ));
}

#[test]
fn unknown_verbs_are_ignored_everywhere() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let (sup, child) = channel();
    send(&sup, b"FROBNICATE level=3", &[]);
    send(
        &sup,
        b"HELLO version=1 generation=3 listeners=1 future=yes",
        &[],
    );
    send(&sup, b"WHATEVER\nwith lines", &[tcp.as_fd()]);
    send(
        &sup,
        b"LISTENERS start=0 count=1 extra=1\ntcp web 127.0.0.1:80",
        &[tcp.as_fd()],
    );
    let handoff = Handoff::receive(child).unwrap();
    assert_eq!(handoff.generation(), 3);
    assert_eq!(handoff.listeners()[0].name, "web");
    let drain = handoff.drain();
    send(&sup, b"SOMETHING_NEW", &[]);
    send(&sup, b"\xff garbage", &[]);
    assert!(!drain.wait_timeout(Duration::from_millis(100)));
    send(&sup, b"DRAIN timeout_ms=1000", &[]);
    assert!(drain.wait_timeout(Duration::from_secs(5)));
}

#[test]
fn drain_sets_the_deadline() {
    let (sup, handoff) = empty_handoff();
    let drain = handoff.drain();
    assert!(!drain.is_draining());
    assert_eq!(drain.deadline(), None);
    assert_eq!(drain.reason(), None);
    let before = Instant::now();
    send_msg(
        &sup,
        &ToChild::Drain {
            timeout: Duration::from_millis(5000),
        },
        &[],
    );
    assert!(drain.wait_timeout(Duration::from_secs(5)));
    let after = Instant::now();
    assert_eq!(
        drain.reason(),
        Some(DrainReason::Supervisor {
            timeout: Duration::from_millis(5000)
        })
    );
    let deadline = drain.deadline().unwrap();
    assert!(deadline >= before + Duration::from_millis(5000));
    assert!(deadline <= after + Duration::from_millis(5000));
    // Clones share the state.
    assert!(drain.clone().is_draining());
    assert!(handoff.drain().is_draining());
}

#[test]
fn drain_during_the_handshake_is_kept() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let (sup, child) = channel();
    hello(&sup, 1, 1);
    send(&sup, b"DRAIN timeout_ms=700", &[]);
    send(
        &sup,
        b"LISTENERS start=0 count=1\ntcp web 127.0.0.1:80",
        &[tcp.as_fd()],
    );
    let handoff = Handoff::receive(child).unwrap();
    assert!(handoff.drain().is_draining());
    assert!(handoff.drain().deadline().is_some());
}

#[test]
fn end_of_file_drains_without_deadline() {
    let (sup, handoff) = empty_handoff();
    let drain = handoff.drain();
    assert!(!drain.wait_timeout(Duration::from_millis(50)));
    let waiter = {
        let drain = drain.clone();
        std::thread::spawn(move || drain.wait())
    };
    drop(sup);
    waiter.join().unwrap();
    assert_eq!(drain.reason(), Some(DrainReason::SupervisorGone));
    assert_eq!(drain.deadline(), None);
}

#[test]
fn ready_is_sent_once_and_status_is_sent() {
    let (sup, handoff) = empty_handoff();
    handoff.ready().unwrap();
    handoff.ready().unwrap();
    handoff.status("warming up").unwrap();
    assert!(matches!(
        handoff.status("two\nlines"),
        Err(Error::Encode(_))
    ));
    let recv = || hotsup_protocol::recv(sup.as_fd(), true).map(|m| m.bytes);
    assert_eq!(recv().unwrap(), b"READY");
    assert_eq!(recv().unwrap(), b"STATUS warming up");
    assert!(matches!(recv(), Err(RecvError::WouldBlock)));
}

#[test]
fn ready_fails_when_the_supervisor_is_gone() {
    let (sup, handoff) = empty_handoff();
    drop(sup);
    assert!(matches!(handoff.ready(), Err(Error::Io(_))));
}
