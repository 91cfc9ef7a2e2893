//! The `tokio` module, standalone. The only test in this binary, because it
//! raises a signal.
#![cfg(feature = "tokio")]

use std::os::fd::AsFd;
use std::time::Duration;

use hotsup_child::DrainReason;

#[tokio::test]
async fn tokio_standalone() {
    let listener = hotsup_child::tokio::inherit_listener("127.0.0.1:0").unwrap();
    let flags = rustix::fs::fcntl_getfl(listener.as_fd()).unwrap();
    assert!(flags.contains(rustix::fs::OFlags::NONBLOCK));
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move { tokio::net::TcpStream::connect(addr).await });
    let (_conn, _) = listener.accept().await.unwrap();
    client.await.unwrap().unwrap();
    hotsup_child::tokio::udp_socket_or_bind("dns", "127.0.0.1:0").unwrap();

    let drain = hotsup_child::drain();
    assert!(
        tokio::time::timeout(Duration::from_millis(20), drain.wait_async())
            .await
            .is_err()
    );
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::INT).unwrap();
    tokio::time::timeout(Duration::from_secs(5), drain.wait_async())
        .await
        .unwrap();
    assert_eq!(drain.reason(), Some(DrainReason::Signal(2)));
}
