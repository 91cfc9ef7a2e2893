//! The bundled examples against an emulated version 2 supervisor: they
//! answer `HELLO version=2`, and testchild pauses, resumes and reports
//! itself unhealthy as the protocol says. (The real supervisor's use of
//! PAUSE, standby and probation is tested with it.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use hotsup_protocol::{Kind, ListenerInfo, ToChild, chunk_listeners};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};

use crate::util::{WAIT, example};

/// A child started as a supervisor would, with one TCP listener `http`.
struct Emulated {
    child: Child,
    /// The supervisor's end of the channel.
    sup: OwnedFd,
    /// The supervisor's copy of the listener (nonblocking), as another
    /// holder of the same socket.
    listener: TcpListener,
    lines: Receiver<String>,
}

impl Emulated {
    /// Starts `example ARGS`, offering protocol `max_version`.
    fn start(example_name: &str, args: &[&str], max_version: u32) -> Emulated {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let (sup, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .expect("socketpair");
        let mut cmd = Command::new(example(example_name));
        cmd.args(args)
            .env("HOTSUP_FD", "3")
            .env("HOTSUP_GENERATION", "2")
            .env_remove("LISTEN_FDS")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd.fd_mappings(vec![FdMapping {
            parent_fd: theirs,
            child_fd: 3,
        }])
        .expect("fd mapping");
        let mut child = cmd.spawn().expect("spawn");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[child] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let emulated = Emulated {
            child,
            sup,
            listener,
            lines,
        };
        let infos = [ListenerInfo {
            name: "http".into(),
            kind: Kind::Tcp,
            address: emulated.listener.local_addr().unwrap().to_string(),
        }];
        emulated.send(&ToChild::Hello {
            version: 1,
            generation: 2,
            listeners: 1,
            max_version,
        });
        for (msg, _) in chunk_listeners(&infos) {
            hotsup_protocol::send(
                emulated.sup.as_fd(),
                &msg.encode().unwrap(),
                &[emulated.listener.as_fd()],
            )
            .expect("send LISTENERS");
        }
        emulated
    }

    fn send(&self, msg: &ToChild) {
        hotsup_protocol::send(self.sup.as_fd(), &msg.encode().unwrap(), &[]).expect("send");
    }

    /// The next message from the child, within [`WAIT`].
    fn recv(&self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match hotsup_protocol::recv(self.sup.as_fd(), true) {
                Ok(msg) => return String::from_utf8(msg.bytes).expect("UTF-8"),
                Err(hotsup_protocol::RecvError::WouldBlock) => {}
                Err(e) => panic!("receiving from the child: {e}"),
            }
            assert!(Instant::now() < deadline, "no message within {WAIT:?}");
            wait_readable(&self.sup, deadline);
        }
    }

    /// Waits for a stdout line containing `needle`.
    fn wait_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {needle:?} within {WAIT:?}"),
            }
        }
    }

    /// Drains the child and checks it exits 0, within [`WAIT`].
    fn drain(mut self) {
        self.send(&ToChild::Drain {
            timeout: Duration::from_secs(5),
        });
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "the child did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(0));
    }
}

impl Drop for Emulated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_readable(fd: &impl AsFd, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = Timespec {
        tv_sec: left.as_secs() as _,
        tv_nsec: left.subsec_nanos() as _,
    };
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let _ = rustix::event::poll(&mut fds, Some(&timeout));
}

/// One `GET /` on `conn` (keep-alive); the response head and body.
fn get(conn: &mut TcpStream) -> String {
    conn.set_read_timeout(Some(WAIT)).unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 1024];
    // testchild's body ends with a newline after `generation=<g>`.
    while !got.ends_with(b"\n") || !got.windows(11).any(|w| w == b"generation=") {
        let n = conn.read(&mut buf).expect("read the response");
        assert!(n > 0, "closed before the response was complete");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn testchild_pauses_keeps_its_connections_and_resumes() {
    let child = Emulated::start("testchild", &[], 2);
    assert_eq!(child.recv(), "HELLO version=2", "answered before READY");
    assert_eq!(child.recv(), "READY");
    let ready = child.wait_line("testchild ready");
    let pid = ready
        .split("pid=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let addr = child.listener.local_addr().unwrap();

    let mut kept = TcpStream::connect(addr).unwrap();
    assert!(get(&mut kept).contains(&format!("pid={pid} ")));

    child.send(&ToChild::Pause);
    child.wait_line(&format!("testchild paused pid={pid}"));
    // An open keep-alive connection is still served.
    assert!(get(&mut kept).starts_with("HTTP/1.1 200"));
    // A new one stays in the backlog, for another generation: the
    // supervisor's copy of the listener takes it. It takes it only after a
    // request through the child has gone there and back, so that a child
    // that wrongly accepts while paused has had every chance to take it
    // first (then nothing is left to take, and this fails).
    let newcomer = TcpStream::connect(addr).unwrap();
    assert!(get(&mut kept).starts_with("HTTP/1.1 200"));
    let deadline = Instant::now() + WAIT;
    let peer = loop {
        match child.listener.accept() {
            Ok((_, peer)) => break peer,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "the connection was taken");
                wait_readable(&child.listener, deadline);
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    assert_eq!(peer, newcomer.local_addr().unwrap());

    child.send(&ToChild::Resume);
    child.wait_line(&format!("testchild resumed pid={pid}"));
    let mut fresh = TcpStream::connect(addr).unwrap();
    assert!(get(&mut fresh).contains(&format!("pid={pid} ")));
    drop((kept, fresh));
    child.drain();
}

#[test]
fn testchild_reports_itself_unhealthy() {
    let child = Emulated::start("testchild", &["--unhealthy-after-ms", "0"], 2);
    assert_eq!(child.recv(), "HELLO version=2");
    assert_eq!(child.recv(), "READY");
    assert_eq!(child.recv(), "UNHEALTHY testchild unhealthy");
    assert!(
        child
            .wait_line("testchild unhealthy")
            .ends_with("sent=true")
    );
    child.drain();
}

#[test]
fn testchild_as_version_1_never_answers() {
    let child = Emulated::start(
        "testchild",
        &["--protocol", "1", "--unhealthy-after-ms", "0"],
        2,
    );
    // READY comes first: no HELLO before it, and none after.
    assert_eq!(child.recv(), "READY");
    // Without version 2 there is no UNHEALTHY: a status line instead.
    assert_eq!(child.recv(), "STATUS unhealthy: testchild unhealthy");
    assert!(
        child
            .wait_line("testchild unhealthy")
            .ends_with("sent=false")
    );
    child.drain();
}

#[test]
fn examples_answer_only_a_version_2_supervisor() {
    for example in ["testchild", "http", "echo"] {
        let child = Emulated::start(example, &[], 2);
        assert_eq!(child.recv(), "HELLO version=2", "{example}");
        assert_eq!(child.recv(), "READY", "{example}");
        child.drain();

        // A version 1 supervisor gets READY and nothing else.
        let child = Emulated::start(example, &[], 1);
        assert_eq!(child.recv(), "READY", "{example}");
        child.drain();
    }
}
