//! The process-global API under an emulated supervisor. The only test in
//! this binary, because the handoff happens once per process.

use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use hotsup_child::{DrainReason, Error};
use hotsup_protocol::{ENV_FD, ENV_GENERATION, Kind, ListenerInfo, ToChild, chunk_listeners};
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};

#[test]
fn supervised_process() {
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let dns = UdpSocket::bind("127.0.0.1:0").unwrap();
    let infos = vec![
        ListenerInfo {
            name: "web".into(),
            kind: Kind::Tcp,
            address: web.local_addr().unwrap().to_string(),
        },
        ListenerInfo {
            name: "dns".into(),
            kind: Kind::Udp,
            address: dns.local_addr().unwrap().to_string(),
        },
    ];
    let (sup, child) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::empty(),
        None,
    )
    .unwrap();
    let hello = ToChild::Hello {
        version: 1,
        generation: 7,
        listeners: infos.len(),
        max_version: 1,
    };
    hotsup_protocol::send(sup.as_fd(), &hello.encode().unwrap(), &[]).unwrap();
    let fds = [web.as_fd(), dns.as_fd()];
    for (msg, range) in chunk_listeners(&infos) {
        hotsup_protocol::send(sup.as_fd(), &msg.encode().unwrap(), &fds[range]).unwrap();
    }

    // SAFETY: this is the only test of this binary and no other thread of
    // the harness reads the environment while it runs.
    unsafe {
        std::env::set_var(ENV_FD, child.as_raw_fd().to_string());
        std::env::set_var(ENV_GENERATION, "7");
    }
    // The library owns the child's end from now on.
    std::mem::forget(child);

    assert!(hotsup_child::is_supervised());
    hotsup_child::init().unwrap();
    // Only read: removing needs `scrub_env`, which is unsafe.
    assert!(std::env::var_os(ENV_FD).is_some());
    assert_eq!(hotsup_child::generation(), Some(7));
    let described: Vec<String> = hotsup_child::listeners()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        described,
        [
            "tcp web ".to_owned() + &infos[0].address,
            "udp dns ".to_owned() + &infos[1].address
        ]
    );
    // The handle has one owner: a second adoption is refused.
    assert!(matches!(
        hotsup_child::Handoff::from_env(),
        Err(hotsup_child::StartupError::AlreadyAdopted)
    ));

    // The fallback is not used under hotsup.
    let listener = hotsup_child::first_tcp()
        .or_bind("127.0.0.1:1")
        .blocking()
        .unwrap();
    assert_eq!(listener.local_addr().unwrap(), web.local_addr().unwrap());
    assert!(matches!(
        hotsup_child::tcp("web").blocking(),
        Err(Error::AlreadyTaken { .. })
    ));
    assert!(matches!(
        hotsup_child::tcp("other").or_bind("127.0.0.1:0").blocking(),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        hotsup_child::tcp("dns").blocking(),
        Err(Error::WrongKind { .. })
    ));
    let udp = hotsup_child::udp("dns")
        .or_bind("127.0.0.1:0")
        .blocking()
        .unwrap();

    // SAFETY: the harness runs this binary's only test; no other thread
    // uses the environment now.
    unsafe { hotsup_child::scrub_env() };
    assert_eq!(std::env::var_os(ENV_FD), None, "HOTSUP_FD must be scrubbed");
    assert_eq!(std::env::var_os(ENV_GENERATION), None);
    assert_eq!(hotsup_child::generation(), Some(7));
    assert_eq!(udp.local_addr().unwrap(), dns.local_addr().unwrap());

    let mut client = TcpStream::connect(web.local_addr().unwrap()).unwrap();
    let (conn, _) = listener.accept().unwrap();
    drop(conn);
    assert_eq!(client.read(&mut [0; 1]).unwrap(), 0);

    hotsup_child::ready().unwrap();
    hotsup_child::ready().unwrap();
    let msg = hotsup_protocol::recv(sup.as_fd(), false).unwrap();
    assert_eq!(msg.bytes, b"READY");
    assert!(hotsup_protocol::recv(sup.as_fd(), true).is_err());

    let drain = hotsup_child::lifecycle();
    assert!(!drain.is_draining());
    let msg = ToChild::Drain {
        timeout: Duration::from_secs(3),
    };
    hotsup_protocol::send(sup.as_fd(), &msg.encode().unwrap(), &[]).unwrap();
    assert!(drain.wait_drain_timeout(Duration::from_secs(5)));
    assert_eq!(
        drain.drain_reason(),
        Some(DrainReason::Supervisor {
            timeout: Duration::from_secs(3)
        })
    );
    assert!(drain.deadline().is_some());
}
