//! `Handoff::receive` against an emulated supervisor on a socketpair.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hotsup_child::{DrainReason, Error, Handoff, StartupError, State};
use hotsup_protocol::{
    Kind as WireKind, ListenerInfo as WireInfo, RecvError, ToChild, chunk_listeners,
};
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

fn info(kind: WireKind, name: &str, address: &str) -> WireInfo {
    WireInfo {
        name: name.into(),
        kind,
        address: address.into(),
    }
}

/// The listeners a handoff holds, as `kind name address` lines.
fn described(handoff: &Handoff) -> Vec<String> {
    handoff
        .listeners()
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn wire_described(infos: &[WireInfo]) -> Vec<String> {
    infos
        .iter()
        .map(|i| format!("{} {} {}", i.kind, i.name, i.address))
        .collect()
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
    (sup, Handoff::from_channel(child).unwrap())
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
                    WireKind::Tcp,
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
                    WireKind::Udp,
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
                    WireKind::Unix,
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
    let handoff = Handoff::from_channel(child).unwrap();
    let sup = supervisor.join().unwrap();

    assert_eq!(handoff.generation(), Some(42));
    assert_eq!(described(&handoff), wire_described(&infos));
    // SAFETY: `handoff` owns this fd and is alive for the whole borrow.
    let channel_fd = unsafe { BorrowedFd::borrow_raw(child_raw) };
    assert!(
        is_cloexec(channel_fd),
        "the channel must be made close-on-exec"
    );

    for (i, l) in tcp.iter().enumerate() {
        let name = format!("tcp-{}", i * 3);
        let taken = handoff.tcp(&name).blocking().unwrap();
        assert_eq!(taken.local_addr().unwrap(), l.local_addr().unwrap());
        assert!(is_cloexec(taken.as_fd()));
        assert!(
            !is_nonblocking(taken.as_fd()),
            "taken listeners are blocking"
        );
        assert!(
            matches!(handoff.tcp(&name).blocking(), Err(Error::AlreadyTaken { name: n }) if n == name)
        );
    }
    // Connect and accept through one of them. Taking it made the shared
    // open file description blocking, so this `accept` waits for the
    // connection to be queued instead of racing the handshake.
    {
        let addr = tcp[0].local_addr().unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        client.write_all(b"x").unwrap();
        assert!(!is_nonblocking(tcp[0].as_fd()));
        let (mut conn, _) = tcp[0].accept().unwrap();
        let mut buf = [0; 1];
        conn.set_nonblocking(false).unwrap();
        conn.read_exact(&mut buf).unwrap();
    }
    for (i, s) in udp.iter().enumerate() {
        let name = format!("udp-{}", i * 3 + 1);
        let taken = handoff.udp(&name).blocking().unwrap();
        assert_eq!(taken.local_addr().unwrap(), s.local_addr().unwrap());
        assert!(!is_nonblocking(taken.as_fd()));
    }
    for (i, l) in unix.iter().enumerate() {
        let name = format!("unix.{}", i * 3 + 2);
        let taken = handoff.unix(&name).blocking().unwrap();
        assert_eq!(
            taken.local_addr().unwrap().as_pathname(),
            l.local_addr().unwrap().as_pathname()
        );
        assert!(!is_nonblocking(taken.as_fd()));
    }
    assert!(matches!(
        handoff.first_tcp().blocking(),
        Err(Error::AlreadyTaken { .. })
    ));
    assert!(
        matches!(handoff.tcp("nope").blocking(), Err(Error::NotFound { name }) if name == "nope")
    );
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
        info(WireKind::Tcp, "real-tcp", "127.0.0.1:1"),
        info(WireKind::Tcp, "udp-as-tcp", "127.0.0.1:2"),
        info(WireKind::Tcp, "stream-as-tcp", "127.0.0.1:3"),
        info(WireKind::Tcp, "unix-as-tcp", "127.0.0.1:4"),
        info(WireKind::Tcp, "file-as-tcp", "127.0.0.1:5"),
        info(WireKind::Unix, "stream-as-unix", "/x"),
        info(WireKind::Udp, "tcp-as-udp", "127.0.0.1:6"),
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
    let handoff = Handoff::from_channel(child).unwrap();

    let wrong = |r: Result<(), Error>| match r {
        Err(Error::WrongKind { found, .. }) => found,
        other => panic!("expected WrongKind, got {other:?}"),
    };
    // Declared kind differs from the one asked for.
    let found = wrong(handoff.udp("real-tcp").blocking().map(drop));
    assert_eq!(found, "a tcp listener");
    let found = wrong(handoff.unix("real-tcp").blocking().map(drop));
    assert_eq!(found, "a tcp listener");
    // Declared right, but the socket is something else.
    assert_eq!(
        wrong(handoff.tcp("udp-as-tcp").blocking().map(drop)),
        "an inet datagram socket"
    );
    assert_eq!(
        wrong(handoff.tcp("stream-as-tcp").blocking().map(drop)),
        "an inet stream socket, not listening"
    );
    assert_eq!(
        wrong(handoff.tcp("unix-as-tcp").blocking().map(drop)),
        "a unix stream socket"
    );
    assert_eq!(
        wrong(handoff.tcp("file-as-tcp").blocking().map(drop)),
        "not a socket"
    );
    assert_eq!(
        wrong(handoff.unix("stream-as-unix").blocking().map(drop)),
        "a unix stream socket, not listening"
    );
    assert_eq!(
        wrong(handoff.udp("tcp-as-udp").blocking().map(drop)),
        "an inet stream socket"
    );
    // A failed take leaves the listener in place.
    assert_eq!(
        wrong(handoff.tcp("udp-as-tcp").blocking().map(drop)),
        "an inet datagram socket"
    );
    // The first TCP listener is the real one.
    let taken = handoff.first_tcp().blocking().unwrap();
    assert_eq!(taken.local_addr().unwrap(), tcp.local_addr().unwrap());
    drop(sup);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unsupported_version_is_a_typed_error() {
    let (sup, child) = channel();
    send(&sup, b"HELLO version=2 generation=1 listeners=0", &[]);
    assert!(matches!(
        Handoff::from_channel(child),
        Err(StartupError::UnsupportedVersion { version: 2 })
    ));
    // Even when the other fields of version 1 are missing.
    let (sup, child) = channel();
    send(&sup, b"HELLO version=9 something=else", &[]);
    assert!(matches!(
        Handoff::from_channel(child),
        Err(StartupError::UnsupportedVersion { version: 9 })
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
        Handoff::from_channel(child),
        Err(StartupError::FdCountMismatch {
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
        Handoff::from_channel(child),
        Err(StartupError::ListenerCountMismatch {
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
        Handoff::from_channel(child),
        Err(StartupError::Malformed { .. })
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
        Handoff::from_channel(child),
        Err(StartupError::OutOfOrder {
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
        Handoff::from_channel(child),
        Err(StartupError::DuplicateName { name }) if name == "a"
    ));
}

#[test]
fn handshake_errors() {
    // LISTENERS before HELLO.
    let (sup, child) = channel();
    send(&sup, b"LISTENERS start=0 count=0", &[]);
    assert!(matches!(
        Handoff::from_channel(child),
        Err(StartupError::UnexpectedMessage {
            expected: "HELLO",
            ..
        })
    ));
    // Garbage.
    let (sup, child) = channel();
    send(&sup, b"\xff\xfe", &[]);
    assert!(matches!(
        Handoff::from_channel(child),
        Err(StartupError::Malformed { .. })
    ));
    // A missing field.
    let (sup, child) = channel();
    send(&sup, b"HELLO version=1 generation=1", &[]);
    assert!(matches!(
        Handoff::from_channel(child),
        Err(StartupError::Malformed { .. })
    ));
    // The supervisor goes away in the middle.
    let (sup, child) = channel();
    hello(&sup, 1, 3);
    drop(sup);
    assert!(matches!(
        Handoff::from_channel(child),
        Err(StartupError::ChannelClosed)
    ));
}

#[test]
fn the_channel_must_be_a_unix_seqpacket_socket() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(matches!(
        Handoff::from_channel(tcp.into()),
        Err(StartupError::NotSeqpacket { .. })
    ));
    let (_a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    assert!(matches!(
        Handoff::from_channel(b),
        Err(StartupError::NotSeqpacket { .. })
    ));
    let file = std::fs::File::open("/dev/null").unwrap();
    assert!(matches!(
        Handoff::from_channel(file.into()),
        Err(StartupError::NotASocket { .. })
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
    let handoff = Handoff::from_channel(child).unwrap();
    assert_eq!(handoff.generation(), Some(3));
    assert_eq!(handoff.listeners()[0].name(), "web");
    let drain = handoff.lifecycle();
    send(&sup, b"SOMETHING_NEW", &[]);
    send(&sup, b"\xff garbage", &[]);
    assert!(!drain.wait_drain_timeout(Duration::from_millis(100)));
    send(&sup, b"DRAIN timeout_ms=1000", &[]);
    assert!(drain.wait_drain_timeout(Duration::from_secs(5)));
}

#[test]
fn drain_sets_the_deadline() {
    let (sup, handoff) = empty_handoff();
    let drain = handoff.lifecycle();
    assert!(!drain.is_draining());
    assert_eq!(drain.deadline(), None);
    assert_eq!(drain.drain_reason(), None);
    let before = Instant::now();
    send_msg(
        &sup,
        &ToChild::Drain {
            timeout: Duration::from_millis(5000),
        },
        &[],
    );
    assert!(drain.wait_drain_timeout(Duration::from_secs(5)));
    let after = Instant::now();
    assert_eq!(
        drain.drain_reason(),
        Some(DrainReason::Supervisor {
            timeout: Duration::from_millis(5000)
        })
    );
    let deadline = drain.deadline().unwrap();
    assert!(deadline >= before + Duration::from_millis(5000));
    assert!(deadline <= after + Duration::from_millis(5000));
    // Clones share the state.
    assert!(drain.clone().is_draining());
    assert!(handoff.lifecycle().is_draining());
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
    let handoff = Handoff::from_channel(child).unwrap();
    assert!(handoff.lifecycle().is_draining());
    assert!(handoff.lifecycle().deadline().is_some());
}

#[test]
fn end_of_file_drains_without_deadline() {
    let (sup, handoff) = empty_handoff();
    let drain = handoff.lifecycle();
    assert!(!drain.wait_drain_timeout(Duration::from_millis(50)));
    let waiter = {
        let drain = drain.clone();
        std::thread::spawn(move || drain.wait_drain())
    };
    drop(sup);
    waiter.join().unwrap();
    assert_eq!(drain.drain_reason(), Some(DrainReason::SupervisorGone));
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
        Err(Error::InvalidText { .. })
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
    assert!(matches!(
        handoff.ready(),
        Err(Error::Send {
            message: "READY",
            ..
        })
    ));
}

/// A handoff whose supervisor offers version 2, with one TCP listener
/// `web`; returns the supervisor's end and its own copy of the listener.
fn v2_handoff() -> (OwnedFd, TcpListener, Handoff) {
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let infos = [info(
        WireKind::Tcp,
        "web",
        &web.local_addr().unwrap().to_string(),
    )];
    let (sup, child) = channel();
    send_msg(
        &sup,
        &ToChild::Hello {
            version: 1,
            generation: 2,
            listeners: 1,
            max_version: 2,
        },
        &[],
    );
    for (msg, range) in chunk_listeners(&infos) {
        let fds: Vec<_> = [web.as_fd()][range].to_vec();
        send_msg(&sup, &msg, &fds);
    }
    let handoff = Handoff::from_channel(child).unwrap();
    (sup, web, handoff)
}

fn next_message(sup: &OwnedFd) -> Vec<u8> {
    hotsup_protocol::recv(sup.as_fd(), false).unwrap().bytes
}

#[test]
fn version_2_is_answered_only_when_the_app_enables_pause() {
    let (sup, _web, handoff) = v2_handoff();
    assert_eq!(handoff.protocol_version(), Some(1));
    // Before the answer, PAUSE is not for this child: ignored.
    send_msg(&sup, &ToChild::Pause, &[]);
    handoff.ready().unwrap();
    assert_eq!(next_message(&sup), b"READY");
    assert_eq!(handoff.lifecycle().state(), State::Serving);
    // Not negotiated: no UNHEALTHY, a status line instead.
    assert!(!handoff.unhealthy("db down").unwrap());
    assert_eq!(next_message(&sup), b"STATUS unhealthy: db down");

    assert!(handoff.enable_pause().unwrap());
    assert!(handoff.enable_pause().unwrap());
    assert_eq!(next_message(&sup), b"HELLO version=2", "answered once");
    assert_eq!(handoff.protocol_version(), Some(2));
    assert!(handoff.unhealthy("db down").unwrap());
    assert_eq!(next_message(&sup), b"UNHEALTHY db down");
    assert!(matches!(
        hotsup_protocol::recv(sup.as_fd(), true),
        Err(RecvError::WouldBlock)
    ));

    // A version 1 supervisor gets no answer.
    let (sup, handoff) = empty_handoff();
    assert!(!handoff.enable_pause().unwrap());
    assert_eq!(handoff.protocol_version(), Some(1));
    assert!(matches!(
        hotsup_protocol::recv(sup.as_fd(), true),
        Err(RecvError::WouldBlock)
    ));
}

#[test]
fn pause_holds_back_accept_and_resume_releases_it() {
    let (sup, web, handoff) = v2_handoff();
    handoff.enable_pause().unwrap();
    assert_eq!(next_message(&sup), b"HELLO version=2");
    let listener = handoff.tcp("web").nonblocking().unwrap();
    let lifecycle = handoff.lifecycle();

    send_msg(&sup, &ToChild::Pause, &[]);
    let bound = Some(Duration::from_secs(30));
    assert_eq!(lifecycle.wait_change(State::Serving, bound), State::Paused);
    let accepting = {
        let lifecycle = lifecycle.clone();
        std::thread::spawn(move || {
            let (conn, peer) = lifecycle.accept(&listener).unwrap().unwrap();
            drop(conn);
            peer
        })
    };
    // A connection made while paused can be taken by another holder of the
    // same socket (the supervisor's copy here). That the paused child does
    // not take it first is shown by tests/e2e/child_v2.rs, which gives the
    // child a round trip's time to do so.
    let early = TcpStream::connect(web.local_addr().unwrap()).unwrap();
    let (_taken, peer) = lifecycle_free_accept(&web);
    assert_eq!(peer, early.local_addr().unwrap());

    let late = TcpStream::connect(web.local_addr().unwrap()).unwrap();
    send_msg(&sup, &ToChild::Resume, &[]);
    assert_eq!(accepting.join().unwrap(), late.local_addr().unwrap());
    assert_eq!(lifecycle.state(), State::Serving);

    // Draining while paused ends the accept loop.
    send_msg(&sup, &ToChild::Pause, &[]);
    assert_eq!(lifecycle.wait_change(State::Serving, bound), State::Paused);
    let listener = {
        // The same socket again, as a second listener handle.
        TcpListener::from(web.as_fd().try_clone_to_owned().unwrap())
    };
    let waiting = {
        let lifecycle = lifecycle.clone();
        std::thread::spawn(move || lifecycle.accept(&listener).is_none())
    };
    send_msg(
        &sup,
        &ToChild::Drain {
            timeout: Duration::from_secs(5),
        },
        &[],
    );
    assert!(waiting.join().unwrap());
    assert_eq!(lifecycle.state(), State::Draining);
}

/// Accepts on a nonblocking listener, waiting with `poll` (bounded).
fn lifecycle_free_accept(listener: &TcpListener) -> (TcpStream, std::net::SocketAddr) {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match listener.accept() {
            Ok(accepted) => return accepted,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        assert!(Instant::now() < deadline, "no connection to accept");
        let mut fds = [PollFd::new(listener, PollFlags::IN)];
        let wait = Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        let _ = rustix::event::poll(&mut fds, Some(&wait));
    }
}

#[cfg(feature = "tokio")]
#[test]
fn async_accept_follows_the_state_without_a_runtime_of_its_own() {
    let (sup, _web, handoff) = v2_handoff();
    handoff.enable_pause().unwrap();
    let lifecycle = handoff.lifecycle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = handoff.tcp("web").tokio().unwrap();
        let addr = listener.local_addr().unwrap();
        // Made before the message is sent: it then cannot miss the change.
        let changed = lifecycle.changed();
        send_msg(&sup, &ToChild::Pause, &[]);
        changed.await;
        assert_eq!(lifecycle.state(), State::Paused);
        let accepting = lifecycle.accept_async(|| listener.accept());
        let resume = async {
            let client = tokio::net::TcpStream::connect(addr).await.unwrap();
            send_msg(&sup, &ToChild::Resume, &[]);
            client
        };
        let (accepted, client) = tokio::join!(accepting, resume);
        let (_conn, peer) = accepted.unwrap().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());

        // The owned future suits `with_graceful_shutdown`-style APIs.
        let drained = tokio::spawn(lifecycle.drained());
        send_msg(
            &sup,
            &ToChild::Drain {
                timeout: Duration::from_secs(5),
            },
            &[],
        );
        drained.await.unwrap();
        assert!(lifecycle.accept_async(|| listener.accept()).await.is_none());
    });
}

/// Socket activation without a subprocess: the handle takes the fds as
/// values, so no fd needs to sit at a fixed number.
#[test]
fn activation_handoff_in_process() {
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let dns = UdpSocket::bind("127.0.0.1:0").unwrap();
    let conn = TcpStream::connect(web.local_addr().unwrap()).unwrap();
    let expect = [
        format!("tcp web {}", web.local_addr().unwrap()),
        format!("udp udp1 {}", dns.local_addr().unwrap()),
    ];
    let handoff = Handoff::from_activation(
        vec![
            web.as_fd().try_clone_to_owned().unwrap(),
            dns.as_fd().try_clone_to_owned().unwrap(),
            conn.into(),
        ],
        Some(std::ffi::OsStr::new("web::web")),
    );
    assert!(handoff.is_supervised());
    assert_eq!(handoff.generation(), None);
    assert_eq!(handoff.protocol_version(), None);
    assert_eq!(described(&handoff), expect);
    assert!(matches!(
        handoff.tcp("other2").blocking(),
        Err(Error::UnsupportedInheritedFd { .. })
    ));
    assert!(matches!(
        handoff.tcp("web").or_bind("127.0.0.1:0").nonblocking(),
        Ok(l) if l.local_addr().unwrap() == web.local_addr().unwrap()
    ));
    assert!(is_nonblocking(web.as_fd()), "the mode is shared");
    assert!(!handoff.enable_pause().unwrap(), "no channel, no PAUSE");
    // Without NOTIFY_SOCKET there is nobody to tell.
    handoff.ready().unwrap();
}
