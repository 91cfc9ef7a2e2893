//! Drives `hotsup_child::Handoff::from_channel` (the child's side of the
//! handshake) with arbitrary messages from a fake supervisor.
//!
//! Input format: the first byte is the number of messages; each message is a
//! 2-byte little-endian length followed by that many bytes (cut short at the
//! end of the input). The messages are sent, without fds, on one end of an
//! `AF_UNIX` `SOCK_SEQPACKET` socketpair, which is then closed; `from_channel`
//! reads the other end. Sending stops early if the socket buffer is full.
//!
//! Properties: `from_channel` returns (it never blocks, since the peer is closed),
//! never panics, and leaves exactly as many fds open as there were before
//! (on success, once the handoff is dropped and its watcher thread has seen
//! end-of-file).
#![no_main]

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

fn messages(data: &[u8]) -> Vec<&[u8]> {
    let Some((&n, mut rest)) = data.split_first() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = match rest {
            [a, b, tail @ ..] => {
                rest = tail;
                u16::from_le_bytes([*a, *b]) as usize
            }
            _ => break,
        };
        let (msg, tail) = rest.split_at(len.min(rest.len()));
        out.push(msg);
        rest = tail;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let before = open_fds();
    {
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .expect("socketpair");
        for msg in messages(data) {
            match hotsup_protocol::send(ours.as_fd(), msg, &[]) {
                Ok(()) => {}
                // The buffer is full: the supervisor would block here; the
                // rest of the input is not sent.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        drop(ours);
        match hotsup_child::Handoff::from_channel(theirs) {
            Ok(handoff) => {
                // No fds were sent, so only an empty handoff can succeed.
                assert!(handoff.listeners().is_empty());
                let lifecycle = handoff.lifecycle();
                drop(handoff);
                // The watcher thread sees end-of-file and drops its end.
                assert!(
                    lifecycle.wait_drain_timeout(Duration::from_secs(5)),
                    "watcher did not see end-of-file"
                );
            }
            Err(_) => {}
        }
    }
    // The watcher thread drops the channel just after triggering the drain.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let after = open_fds();
        if after == before {
            break;
        }
        assert!(
            Instant::now() < deadline && after > before,
            "fd count went from {before} to {after}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
});
