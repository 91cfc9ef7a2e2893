use super::*;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use std::os::fd::AsFd;

fn pair() -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn info(i: usize) -> ListenerInfo {
    ListenerInfo {
        name: format!("l{i}"),
        kind: [Kind::Tcp, Kind::Udp, Kind::Unix][i % 3],
        address: if i % 3 == 2 {
            format!("/tmp/dir with space/s{i}.sock")
        } else {
            format!("127.0.0.1:{}", 1000 + i)
        },
    }
}

#[test]
fn round_trips_every_message() {
    let msgs = [
        ToChild::Hello {
            version: BASE_VERSION,
            generation: 7,
            listeners: 300,
            max_version: VERSION,
        },
        ToChild::Hello {
            version: 1,
            generation: 1,
            listeners: 0,
            max_version: 1,
        },
        ToChild::Pause,
        ToChild::Resume,
        ToChild::Listeners {
            start: 252,
            entries: (0..5).map(info).collect(),
        },
        ToChild::Listeners {
            start: 0,
            entries: vec![],
        },
        ToChild::Drain {
            timeout: Duration::from_millis(1500),
        },
    ];
    for m in msgs {
        assert_eq!(ToChild::decode(&m.encode().unwrap()).unwrap(), m);
    }
    for m in [
        FromChild::Ready,
        FromChild::Status("warming up 3/4".into()),
        FromChild::Hello { version: 2 },
        FromChild::Unhealthy("database unreachable".into()),
    ] {
        assert_eq!(FromChild::decode(&m.encode().unwrap()).unwrap(), m);
    }
}

#[test]
fn exact_wire_format_is_stable() {
    let hello = ToChild::Hello {
        version: 1,
        generation: 2,
        listeners: 1,
        max_version: 1,
    };
    assert_eq!(
        hello.encode().unwrap(),
        b"HELLO version=1 generation=2 listeners=1"
    );
    let hello = ToChild::Hello {
        version: 1,
        generation: 2,
        listeners: 1,
        max_version: 2,
    };
    assert_eq!(
        hello.encode().unwrap(),
        b"HELLO version=1 generation=2 listeners=1 max_version=2"
    );
    assert_eq!(ToChild::Pause.encode().unwrap(), b"PAUSE");
    assert_eq!(ToChild::Resume.encode().unwrap(), b"RESUME");
    assert_eq!(
        FromChild::Hello { version: 2 }.encode().unwrap(),
        b"HELLO version=2"
    );
    assert_eq!(
        FromChild::Unhealthy("db down".into()).encode().unwrap(),
        b"UNHEALTHY db down"
    );
    let l = ToChild::Listeners {
        start: 0,
        entries: vec![info(0)],
    };
    assert_eq!(
        l.encode().unwrap(),
        b"LISTENERS start=0 count=1\ntcp l0 127.0.0.1:1000"
    );
    assert_eq!(
        ToChild::Drain {
            timeout: Duration::from_secs(30)
        }
        .encode()
        .unwrap(),
        b"DRAIN timeout_ms=30000"
    );
}

#[test]
fn unknown_fields_are_ignored_for_forward_compatibility() {
    let m = ToChild::decode(b"HELLO version=1 future=yes generation=3 listeners=0").unwrap();
    assert_eq!(
        m,
        ToChild::Hello {
            version: 1,
            generation: 3,
            listeners: 0,
            max_version: 1,
        }
    );
    assert_eq!(
        FromChild::decode(b"READY extra=1").unwrap(),
        FromChild::Ready
    );
}

#[test]
fn garbled_messages_are_errors() {
    assert_eq!(ToChild::decode(b""), Err(DecodeError::Empty));
    assert_eq!(FromChild::decode(b""), Err(DecodeError::Empty));
    assert_eq!(ToChild::decode(b"\xff\xfe"), Err(DecodeError::NotUtf8));
    assert_eq!(FromChild::decode(b"\xffREADY"), Err(DecodeError::NotUtf8));
    assert!(matches!(
        FromChild::decode(b"HELLO"),
        Err(DecodeError::MissingField { .. })
    ));
    assert!(matches!(
        FromChild::decode(b"PAUSE"),
        Err(DecodeError::UnknownVerb(_))
    ));
    assert!(matches!(
        FromChild::decode(b"UNHEALTHY bad\r"),
        Err(DecodeError::BadField { .. })
    ));
    assert!(matches!(
        ToChild::decode(b"HELLO version=1 generation=1 listeners=1 max_version=x"),
        Err(DecodeError::BadField { .. })
    ));
    assert!(matches!(
        ToChild::decode(b"HELLO version=x generation=1 listeners=1"),
        Err(DecodeError::BadField { .. })
    ));
    assert!(matches!(
        ToChild::decode(b"HELLO generation=1 listeners=1"),
        Err(DecodeError::MissingField { .. })
    ));
    // The version is read first: another framing's HELLO is refused as
    // such, whatever its other fields say (here, none that version 1 has).
    assert_eq!(
        ToChild::decode(b"HELLO  future=x version=7\nmore"),
        Err(DecodeError::UnsupportedVersion(7))
    );
    assert_eq!(
        ToChild::decode(b"HELLO version=2 generation=1 listeners=1"),
        Err(DecodeError::UnsupportedVersion(2))
    );
    assert!(matches!(
        ToChild::decode(b"LISTENERS start=0 count=2\ntcp a 1.2.3.4:5"),
        Err(DecodeError::CountMismatch {
            expected: 2,
            found: 1
        })
    ));
    assert!(matches!(
        ToChild::decode(b"LISTENERS start=0 count=1\nsctp a 1.2.3.4:5"),
        Err(DecodeError::BadListener(_))
    ));
    assert!(matches!(
        ToChild::decode(b"LISTENERS start=0 count=1\ntcp bad:name 1.2.3.4:5"),
        Err(DecodeError::BadListener(_))
    ));
    assert!(matches!(
        ToChild::decode(b"LISTENERS start=0 count=999"),
        Err(DecodeError::BadField { .. })
    ));
    let long = vec![b'A'; MAX_MESSAGE + 1];
    assert!(matches!(
        FromChild::decode(&long),
        Err(DecodeError::TooLong(_))
    ));
}

#[test]
fn encoding_rejects_what_would_break_framing() {
    let mut bad = info(2);
    bad.address = "/tmp/a\nINJECTED".into();
    assert!(matches!(
        ToChild::Listeners {
            start: 0,
            entries: vec![bad]
        }
        .encode(),
        Err(EncodeError::LineBreak(_))
    ));
    let mut bad = info(0);
    bad.name = "has space".into();
    assert!(matches!(
        ToChild::Listeners {
            start: 0,
            entries: vec![bad]
        }
        .encode(),
        Err(EncodeError::BadName(_))
    ));
    assert!(FromChild::Status("a\nb".into()).encode().is_err());
}

#[test]
fn names() {
    assert!(valid_name("http"));
    assert!(valid_name("admin-v2.sock_1"));
    assert!(!valid_name(""));
    assert!(!valid_name("a:b"));
    assert!(!valid_name("a b"));
    assert!(!valid_name(&"x".repeat(256)));
}

#[test]
fn chunks_hold_at_most_252_and_cover_everything() {
    let all: Vec<_> = (0..600).map(info).collect();
    let chunks = chunk_listeners(&all);
    assert_eq!(chunks.len(), 3);
    let mut seen = Vec::new();
    for (msg, range) in &chunks {
        let ToChild::Listeners { start, entries } = msg else {
            panic!("not LISTENERS")
        };
        assert!(entries.len() <= MAX_FDS_PER_MESSAGE);
        assert_eq!(*start, range.start);
        assert_eq!(entries.len(), range.len());
        assert!(msg.encode().unwrap().len() <= MAX_MESSAGE);
        seen.extend(entries.iter().cloned());
    }
    assert_eq!(seen, all);
    assert!(chunk_listeners(&[]).is_empty());
}

#[test]
fn fds_travel_with_their_message() {
    let (a, b) = pair();
    let files: Vec<std::fs::File> = (0..MAX_FDS_PER_MESSAGE)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let borrowed: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
    send(a.as_fd(), b"LISTENERS start=0 count=0", &borrowed).unwrap();
    let got = recv(b.as_fd(), false).unwrap();
    assert_eq!(got.bytes, b"LISTENERS start=0 count=0");
    assert_eq!(got.fds.len(), MAX_FDS_PER_MESSAGE);
    for fd in &got.fds {
        let flags = rustix::io::fcntl_getfd(fd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }
}

#[test]
fn too_many_fds_is_refused_before_sending() {
    let (a, _b) = pair();
    let files: Vec<std::fs::File> = (0..MAX_FDS_PER_MESSAGE + 1)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let borrowed: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
    assert!(send(a.as_fd(), b"x", &borrowed).is_err());
}

// Other tests open fds concurrently, so leak checks compare within a retry
// loop: a real leak of N fds shows on every attempt.
fn assert_no_leak(mut f: impl FnMut(), leak: usize) {
    for _ in 0..20 {
        let before = open_fds();
        f();
        if open_fds() < before + leak {
            return;
        }
    }
    panic!("fds leaked on every attempt");
}

#[test]
fn truncated_control_data_closes_every_fd() {
    // The kernel accepts 253 fds; our receiver holds 252, so the message
    // arrives with MSG_CTRUNC. The 252 that did arrive must be closed.
    assert_no_leak(
        || {
            let (a, b) = pair();
            let files: Vec<std::fs::File> = (0..253)
                .map(|_| std::fs::File::open("/dev/null").unwrap())
                .collect();
            let borrowed: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
            let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(253))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
            rustix::net::sendmsg(
                a.as_fd(),
                &[IoSlice::new(b"x")],
                &mut control,
                SendFlags::empty(),
            )
            .unwrap();
            drop(files);
            let r = recv(b.as_fd(), false);
            assert!(matches!(r, Err(RecvError::FdsTruncated)), "{r:?}");
        },
        200,
    );
}

#[test]
fn oversized_message_is_an_error_and_its_fds_are_closed() {
    assert_no_leak(
        || {
            let (a, b) = pair();
            rustix::net::sockopt::set_socket_send_buffer_size(&a, 1 << 20).unwrap();
            let files: Vec<std::fs::File> = (0..100)
                .map(|_| std::fs::File::open("/dev/null").unwrap())
                .collect();
            let borrowed: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
            send(a.as_fd(), &vec![b'x'; MAX_MESSAGE + 10], &borrowed).unwrap();
            drop(files);
            assert!(matches!(recv(b.as_fd(), false), Err(RecvError::Truncated)));
        },
        80,
    );
}

#[test]
fn closed_and_empty_channels() {
    let (a, b) = pair();
    assert!(matches!(recv(b.as_fd(), true), Err(RecvError::WouldBlock)));
    drop(a);
    assert!(matches!(recv(b.as_fd(), false), Err(RecvError::Closed)));
}
