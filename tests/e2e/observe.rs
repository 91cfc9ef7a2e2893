//! What operators' tools read: the event stream and the metrics.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use rustix::process::Signal;

use crate::util::{
    Hotsup, Stream, WAIT, client, example, follow_lines, hotsup_bin, json, tempdir, text,
};

/// `hotsup events --control SOCK ARGS`, its stdout followed line by line.
fn events(sock: &std::path::Path, args: &[&str]) -> (std::process::Child, Stream) {
    let mut child = Command::new(hotsup_bin())
        .arg("events")
        .arg("--control")
        .arg(sock)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = follow_lines(child.stdout.take().unwrap(), "events");
    (child, out)
}

#[test]
fn events_stream_to_a_client_as_json_lines() {
    let dir = tempdir();
    let sock = dir.path().join("control.sock");
    let mut h = Hotsup::run(
        &["-l", "127.0.0.1:0", "--control", sock.to_str().unwrap()],
        &[example("testchild")],
    );
    h.ready(1);
    let (mut all, all_out) = events(&sock, &[]);
    let (mut some, some_out) = events(&sock, &["--event", "drained", "--event", "forwarded"]);
    // A client sees events from when the server read its request: poke
    // (a harmless SIGCONT, which logs `forwarded`) until both see one.
    crate::util::eventually("both clients subscribed", || {
        let _ = client(&sock, &["signal", "CONT"]);
        std::thread::sleep(std::time::Duration::from_millis(20));
        [&all_out, &some_out]
            .iter()
            .all(|o| o.all().iter().any(|l| l.contains(r#""event":"forwarded""#)))
    });
    let out = client(&sock, &["upgrade"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let line = all_out.wait(&[r#""event":"ready""#, r#""generation":2"#]);
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ready["event"], "ready");
    assert!(
        ready["pid"].is_i64() && ready["after_ms"].is_u64(),
        "{ready}"
    );
    assert!(ready["ts"].is_string(), "{ready}");
    let drained = some_out.wait(&[r#""event":"drained""#]);
    let drained: serde_json::Value = serde_json::from_str(&drained).unwrap();
    assert_eq!(drained["generation"], 1);
    // The filtered client got nothing else.
    assert!(
        some_out
            .all()
            .iter()
            .all(|l| l.starts_with(r#"{"event":"drained""#)
                || l.starts_with(r#"{"event":"forwarded""#)),
        "{:?}",
        some_out.all()
    );
    // Both end when hotsup does.
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    all_out.wait(&[r#""event":"exiting""#]);
    assert_eq!(all.wait().unwrap().code(), Some(0));
    assert_eq!(some.wait().unwrap().code(), Some(0));
}

/// `GET /metrics` over HTTP/1.1; the body.
fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    reply
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// The value of the sample `name` (with its labels, as written).
fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
}

#[test]
fn metrics_are_scraped_over_http() {
    let dir = tempdir();
    let sock = dir.path().join("control.sock");
    let mode = dir.path().join("mode");
    let mut h = Hotsup::run(
        &[
            "-l",
            "127.0.0.1:0",
            "--control",
            sock.to_str().unwrap(),
            "--metrics",
            "127.0.0.1:0",
            "--workers",
            "2",
        ],
        &[example("testchild"), "--mode-file".into(), mode.clone()],
    );
    let addr = h.event("metrics", &[])["address"]
        .as_str()
        .unwrap()
        .to_string();
    h.ready(1);
    assert_eq!(client(&sock, &["upgrade"]).status.code(), Some(0));
    std::fs::write(&mode, "crash").unwrap();
    assert_eq!(client(&sock, &["upgrade"]).status.code(), Some(1));
    h.event("drained", &[("generation", json!(1))]);
    let body = scrape(&addr);
    assert_eq!(
        sample(&body, r#"hotsup_upgrades_total{result="ready"}"#),
        1.0
    );
    assert_eq!(
        sample(&body, r#"hotsup_upgrades_total{result="failed"}"#),
        1.0
    );
    assert_eq!(sample(&body, "hotsup_generation"), 2.0);
    assert!(sample(&body, "hotsup_time_to_ready_seconds_count") >= 2.0);
    assert!(sample(&body, "hotsup_drain_duration_seconds_count") >= 1.0);
    for w in 0..2 {
        let rss = sample(
            &body,
            &format!(r#"hotsup_worker_rss_bytes{{worker="{w}"}}"#),
        );
        assert!(rss > 0.0, "{body}");
    }
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn without_the_flag_nothing_listens() {
    // With --metrics hotsup listens on two TCP sockets; without, on the one
    // it holds for the app.
    let listening = |extra: &[&str]| {
        let mut args = vec!["-l", "127.0.0.1:0"];
        args.extend(extra);
        let mut h = Hotsup::run(&args, &[example("testchild")]);
        h.ready(1);
        let n = tcp_listening(h.pid);
        h.signal(Signal::TERM);
        assert_eq!(h.wait_exit(WAIT).code(), Some(0));
        n
    };
    assert_eq!(listening(&["--metrics", "127.0.0.1:0"]), 2);
    assert_eq!(listening(&[]), 1);
}

/// TCP sockets in the LISTEN state among `pid`'s fds.
fn tcp_listening(pid: i32) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_string_lossy()
                .strip_prefix("socket:[")
                .map(|s| s.trim_end_matches(']').to_string())
        })
        .collect();
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        n += text
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(3) == Some(&"0A") && f.get(9).is_some_and(|i| inodes.iter().any(|x| x == i))
            })
            .count();
    }
    n
}
