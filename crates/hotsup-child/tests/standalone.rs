//! The process-global API without a supervisor. The only test in this
//! binary, because the handoff happens once per process.

use std::time::Duration;

use hotsup_child::{DrainReason, Error, Signal};

#[test]
fn standalone_process() {
    assert_eq!(std::env::var_os(hotsup_protocol::ENV_FD), None);
    hotsup_child::init().unwrap();
    assert!(!hotsup_child::is_supervised());
    assert_eq!(hotsup_child::generation(), None);
    assert!(hotsup_child::listeners().is_empty());

    let listener = hotsup_child::first_tcp()
        .or_bind("127.0.0.1:0")
        .nonblocking()
        .unwrap();
    assert!(listener.local_addr().unwrap().port() != 0);
    let flags = rustix::fs::fcntl_getfl(&listener).unwrap();
    assert!(flags.contains(rustix::fs::OFlags::NONBLOCK));
    assert!(matches!(
        hotsup_child::tcp("web").blocking(),
        Err(Error::NoFallback { name }) if name == "web"
    ));
    hotsup_child::tcp("web")
        .or_bind("127.0.0.1:0")
        .blocking()
        .unwrap();
    hotsup_child::udp("dns")
        .or_bind("127.0.0.1:0")
        .fd()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("hsc-standalone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    hotsup_child::unix("admin")
        .or_bind(dir.join("admin.sock"))
        .blocking()
        .unwrap();
    assert!(matches!(
        hotsup_child::unix("admin")
            .or_bind(dir.join("admin.sock"))
            .blocking(),
        Err(Error::Bind { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
    // Binding a taken port is a Bind error naming the address.
    let addr = listener.local_addr().unwrap();
    match hotsup_child::first_tcp().or_bind(addr).blocking() {
        Err(Error::Bind { address, .. }) => assert_eq!(address, addr.to_string()),
        other => panic!("expected a Bind error, got {other:?}"),
    }

    hotsup_child::ready().unwrap();
    hotsup_child::status("fine").unwrap();
    assert!(!hotsup_child::enable_pause().unwrap());
    assert!(!hotsup_child::unhealthy("nobody to tell").unwrap());

    let drain = hotsup_child::lifecycle();
    assert!(!drain.wait_drain_timeout(Duration::from_millis(20)));
    // SIGTERM drains instead of killing the process.
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM)
        .unwrap();
    assert!(drain.wait_drain_timeout(Duration::from_secs(5)));
    assert_eq!(
        drain.drain_reason(),
        Some(DrainReason::Signal(Signal::Term))
    );
    assert_eq!(drain.deadline(), None);
}
