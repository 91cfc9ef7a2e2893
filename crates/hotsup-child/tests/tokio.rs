//! The `tokio` module, standalone. The only test in this binary, because it
//! raises a signal.
#![cfg(feature = "tokio")]

use std::os::fd::AsFd;
use std::time::Duration;

use hotsup_child::{DrainReason, Signal};

#[tokio::test]
async fn tokio_standalone() {
    let listener = hotsup_child::first_tcp()
        .or_bind("127.0.0.1:0")
        .tokio()
        .unwrap();
    let flags = rustix::fs::fcntl_getfl(listener.as_fd()).unwrap();
    assert!(flags.contains(rustix::fs::OFlags::NONBLOCK));
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move { tokio::net::TcpStream::connect(addr).await });
    let (_conn, _) = listener.accept().await.unwrap();
    client.await.unwrap().unwrap();
    hotsup_child::udp("dns")
        .or_bind("127.0.0.1:0")
        .tokio()
        .unwrap();

    let drain = hotsup_child::lifecycle();
    assert!(
        tokio::time::timeout(Duration::from_millis(20), drain.drained())
            .await
            .is_err()
    );
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::INT).unwrap();
    tokio::time::timeout(Duration::from_secs(5), drain.drained())
        .await
        .unwrap();
    assert_eq!(drain.drain_reason(), Some(DrainReason::Signal(Signal::Int)));
}
