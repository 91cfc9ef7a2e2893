//! The process-global API without a supervisor. The only test in this
//! binary, because the handoff happens once per process.

use std::time::Duration;

use hotsup_child::{DrainReason, Error};

#[test]
fn standalone_process() {
    assert_eq!(std::env::var_os(hotsup_protocol::ENV_FD), None);
    hotsup_child::init().unwrap();
    assert!(!hotsup_child::is_supervised());
    assert_eq!(hotsup_child::generation(), None);
    assert!(hotsup_child::listeners().is_empty());

    let listener = hotsup_child::inherit_listener("127.0.0.1:0").unwrap();
    assert!(listener.local_addr().unwrap().port() != 0);
    assert!(matches!(
        hotsup_child::tcp_listener("web"),
        Err(Error::NotFound { name }) if name == "web"
    ));
    hotsup_child::tcp_listener_or_bind("web", "127.0.0.1:0").unwrap();
    hotsup_child::udp_socket_or_bind("dns", "127.0.0.1:0").unwrap();
    let dir = std::env::temp_dir().join(format!("hsc-standalone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    hotsup_child::unix_listener_or_bind("admin", dir.join("admin.sock")).unwrap();
    assert!(matches!(
        hotsup_child::unix_listener_or_bind("admin", dir.join("admin.sock")),
        Err(Error::Bind { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
    // Binding a taken port is a Bind error naming the address.
    let addr = listener.local_addr().unwrap();
    match hotsup_child::inherit_listener(addr) {
        Err(Error::Bind { address, .. }) => assert_eq!(address, addr.to_string()),
        other => panic!("expected a Bind error, got {other:?}"),
    }

    hotsup_child::ready().unwrap();
    hotsup_child::status("fine").unwrap();

    let drain = hotsup_child::drain();
    assert!(!drain.wait_timeout(Duration::from_millis(20)));
    // SIGTERM drains instead of killing the process.
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM)
        .unwrap();
    assert!(drain.wait_timeout(Duration::from_secs(5)));
    assert_eq!(drain.reason(), Some(DrainReason::Signal(15)));
    assert_eq!(drain.deadline(), None);
}
