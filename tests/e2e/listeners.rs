//! Listeners: many of them, every kind, and Unix socket files.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use rustix::process::Signal;

use crate::util::{Hotsup, WAIT, example, json, run_to_end, tempdir};

/// name -> (kind, address) as the child printed it for generation `g`.
fn dumped(h: &Hotsup, g: u64, n: usize) -> BTreeMap<String, (String, String)> {
    let (start, _) = h
        .out
        .wait_from(0, &["testchild ready", &format!("generation={g}")], WAIT);
    // The dump precedes the ready line of the same process.
    let lines = h.out.all();
    let mut got = BTreeMap::new();
    for l in lines[..start].iter().rev() {
        if got.len() == n {
            break;
        }
        let parts: Vec<&str> = l.splitn(5, ' ').collect();
        if parts.len() == 5 && parts[0] == "listener" {
            got.entry(parts[2].to_string())
                .or_insert((parts[3].to_string(), parts[4].to_string()));
        }
    }
    got
}

fn check_answers(expected: &BTreeMap<String, (String, String)>) {
    for (name, (kind, addr)) in expected {
        let mut reply = String::new();
        match kind.as_str() {
            "tcp" => {
                let mut s = TcpStream::connect(addr.as_str()).unwrap();
                s.set_read_timeout(Some(WAIT)).unwrap();
                s.read_to_string(&mut reply).unwrap();
            }
            "unix" => {
                let mut s = UnixStream::connect(addr).unwrap();
                s.set_read_timeout(Some(WAIT)).unwrap();
                s.read_to_string(&mut reply).unwrap();
            }
            "udp" => {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.send_to(b"ping", addr.as_str()).unwrap();
                let mut buf = [0u8; 512];
                let n = s.recv(&mut buf).unwrap();
                reply = String::from_utf8_lossy(&buf[..n]).into_owned();
            }
            other => panic!("unknown kind {other}"),
        }
        assert!(
            reply.starts_with(name.as_str()),
            "{kind} listener {name} at {addr} answered {reply:?}"
        );
    }
}

#[test]
fn three_hundred_listeners_are_handed_over_intact() {
    let dir = tempdir();
    let mut args: Vec<String> = Vec::new();
    for i in 0..200 {
        args.extend(["-l".into(), format!("t{i}=127.0.0.1:0")]);
    }
    for i in 0..50 {
        args.extend(["-l".into(), format!("u{i}=udp://127.0.0.1:0")]);
    }
    for i in 0..50 {
        let p = dir.path().join(format!("s{i}.sock"));
        args.extend(["-l".into(), format!("x{i}=unix:{}", p.display())]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut h = Hotsup::run(&argv, &[example("testchild"), "--dump-listeners".into()]);
    h.ready(1);

    // What hotsup bound, from its log.
    let mut bound = BTreeMap::new();
    for e in h.log.events().iter().filter(|e| e["event"] == "listening") {
        let s = |k: &str| e[k].as_str().unwrap().to_string();
        bound.insert(s("name"), (s("kind"), s("address")));
    }
    assert_eq!(bound.len(), 300);
    h.event(
        "handed_off",
        &[("generation", json!(1)), ("listeners", json!(300))],
    );

    let got = dumped(&h, 1, 300);
    assert_eq!(got, bound, "generation 1 received something else");
    check_answers(&got);

    // The same sockets reach the next generation.
    h.upgrade();
    h.ready(2);
    h.event("drained", &[("generation", json!(1))]);
    let got2 = dumped(&h, 2, 300);
    assert_eq!(got2, bound, "generation 2 received something else");
    check_answers(&got2);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn port_zero_reports_the_real_port() {
    let mut h = Hotsup::run(&["-l", "127.0.0.1:0"], &[example("http")]);
    let addr = h.addr("tcp0");
    assert_ne!(addr.port(), 0);
    h.ready(1);
    let body = hotsup_bench::http::request_once(addr, "/", WAIT)
        .unwrap()
        .body_text();
    assert!(body.contains("generation=1"), "{body}");
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn stale_unix_socket_is_replaced_and_live_one_refused() {
    let dir = tempdir();
    let path = dir.path().join("s.sock");
    // A stale file: bound, then its owner went away without unlinking.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let arg = format!("unix:{}", path.display());
    let mut h = Hotsup::run(
        &["-l", &arg],
        &[example("testchild"), "--dump-listeners".into()],
    );
    h.ready(1);
    let mut s = UnixStream::connect(&path).unwrap();
    let mut reply = String::new();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "unix0\n");

    // While hotsup holds it, a second hotsup must not steal it...
    let (code, err) = run_to_end(&["run", "-l", &arg, "--", "/bin/true"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use by a live process"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // ...and must not have removed it on its way out.
    assert!(UnixStream::connect(&path).is_ok());

    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    assert!(!path.exists(), "hotsup left its socket file");
    h.assert_left_nothing();
    let _ = UnixStream::connect(&path).map(|mut s| s.write_all(b"x"));
}

/// hotsup with `-l localhost:0`, where localhost resolves as `hosts` says:
/// in a mount namespace of its own, with `hosts` bound over /etc/hosts.
fn with_hosts(dir: &std::path::Path, hosts: &str) -> Hotsup {
    let file = dir.join("hosts");
    std::fs::write(&file, hosts).unwrap();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
        .arg(&file)
        .arg(crate::util::hotsup_bin())
        .args(["--log-format", "json", "run", "--ready", "exec"])
        .args(["-l", "web=localhost:0", "--", "sleep", "60"])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // unshare and sh exec: the pid is hotsup's.
    Hotsup::spawn(cmd)
}

#[test]
fn a_host_name_with_several_addresses_says_which_it_bound() {
    if !crate::util::root_or_skip(
        "a_host_name_with_several_addresses_says_which_it_bound",
        "needs root to give hotsup its own /etc/hosts",
    ) {
        return;
    }
    let dir = tempdir();
    let mut h = with_hosts(dir.path(), "127.0.0.1 localhost\n::1 localhost\n");
    let warned = h.event("several_addresses", &[("listen", json!("web=localhost:0"))]);
    let bound: std::net::SocketAddr = warned["bound"].as_str().unwrap().parse().unwrap();
    let other: std::net::SocketAddr = warned["not_bound"].as_str().unwrap().parse().unwrap();
    let mut ips = [bound.ip().to_string(), other.ip().to_string()];
    ips.sort();
    assert_eq!(ips, ["127.0.0.1", "::1"], "{warned}");
    // The warning names the address that was really bound.
    assert_eq!(h.addr("web").ip(), bound.ip());
    h.ready(1);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));

    // A name with one address binds it without a word.
    let mut h = with_hosts(dir.path(), "127.0.0.1 localhost\n");
    assert_eq!(h.addr("web").ip().to_string(), "127.0.0.1");
    h.ready(1);
    assert_eq!(h.log.count_events("several_addresses", &[]), 0);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}
