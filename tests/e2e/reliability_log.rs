//! stderr and the control socket cannot stop or kill the supervisor: a
//! stderr whose reader went away, that nobody reads, or that a child made
//! non-blocking; control clients that flood, stall or never read; a child's
//! STATUS full of terminal escapes; a client whose stdout went away.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{
    Hotsup, WAIT, alive, client, example, fill_pipe, follow_lines, hotsup_bin, json, pipe,
    status_and_stderr_bounded, status_u64, tempdir, wait_dead, wait_serving, zombies_of,
};

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Upgrades through the control socket to generation `g`.
fn upgrade_to(sock: &Path, g: u64) {
    let out = client(sock, &["upgrade"]);
    assert_eq!(out.status.code(), Some(0), "upgrade to {g}: {}", text(&out));
    assert!(
        text(&out).contains(&format!("generation {g} ")),
        "upgrade to {g}: {}",
        text(&out)
    );
}

/// The HTTP answer of the serving child names generation `g`.
fn serves(v: &serde_json::Value, g: u64) {
    let addr = v["listeners"][0]["address"]
        .as_str()
        .expect("listener address")
        .parse()
        .expect("socket address");
    let resp = hotsup_bench::http::request_once(addr, "/", WAIT).expect("HTTP request");
    assert_eq!(resp.status, 200);
    let body = String::from_utf8_lossy(&resp.body);
    assert!(body.contains(&format!("generation={g}")), "{body}");
}

/// Stops hotsup through the control socket; it exits 0 and leaves no
/// process behind.
fn stop(h: &mut Hotsup, sock: &Path) {
    let serving = status_pid(sock);
    let out = client(sock, &["stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    assert!(wait_dead(serving, WAIT), "child {serving} outlived hotsup");
    assert!(!sock.exists(), "control socket left behind");
}

/// Waits until `hotsup status --json` counts more than `n` dropped log
/// lines; returns the count.
fn dropped_above(sock: &Path, n: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = status_u64(sock, "log_lines_dropped");
        if now > n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "still {now} log lines dropped, not more than {n}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status_pid(sock: &Path) -> i32 {
    let v = wait_serving(sock);
    v["serving"]["pid"].as_i64().expect("serving pid") as i32
}

fn testchild_args(dir: &Path) -> (String, Vec<std::path::PathBuf>) {
    let sock = dir.join("c.sock").to_str().unwrap().to_string();
    (sock, vec![example("testchild")])
}

#[test]
fn stderr_whose_reader_went_away_changes_nothing() {
    let dir = tempdir();
    let (sock_arg, command) = testchild_args(dir.path());
    let sock = Path::new(&sock_arg);
    let (r, w) = pipe();
    let mut h = Hotsup::run_with_stderr(
        &["-l", "http=127.0.0.1:0", "--control", &sock_arg],
        &command,
        w,
    );
    // The reader goes away at once: every line hotsup writes gets EPIPE.
    drop(r);
    wait_serving(sock);
    for g in 2..=6 {
        upgrade_to(sock, g);
    }
    assert!(h.is_running());
    let v = wait_serving(sock);
    assert_eq!(v["serving"]["generation"], 6, "{v}");
    serves(&v, 6);
    dropped_above(sock, 0);
    let human = client(sock, &["status"]);
    assert!(
        text(&human).contains("log lines dropped: "),
        "{}",
        text(&human)
    );
    stop(&mut h, sock);
}

#[test]
fn stderr_nobody_reads_neither_blocks_nor_loses_the_count() {
    let dir = tempdir();
    let (sock_arg, command) = testchild_args(dir.path());
    let sock = Path::new(&sock_arg);
    let (r, w) = pipe();
    let mut h = Hotsup::run_with_stderr(
        &[
            "-l",
            "http=127.0.0.1:0",
            "--control",
            &sock_arg,
            "--log-format",
            "json",
        ],
        &command,
        w,
    );
    wait_serving(sock);
    // hotsup's own open file description stays blocking: a write to it
    // would block for as long as nobody reads.
    let filled = fill_pipe(&r);
    assert!(filled > 0);
    let mut before = 0;
    for g in 2..=4 {
        upgrade_to(sock, g);
        // Each upgrade logs: those lines are dropped and counted (by the
        // writer thread, which gives stderr a moment first).
        before = dropped_above(sock, before);
    }
    serves(&wait_serving(sock), 4);

    // Someone reads again: the next line written says what was lost, and
    // the log goes on, down to the last line at exit.
    let log = follow_lines(std::fs::File::from(r), "hotsup");
    upgrade_to(sock, 5);
    let (notice, line) = log.wait_from(0, &[r#""event":"log_lines_dropped""#], WAIT);
    // The filler, which ends in no newline, starts its line.
    let e: serde_json::Value = serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap();
    assert_eq!(e["level"], "warn");
    let total = e["total"].as_u64().expect("total");
    assert!(total >= before, "notice says {total}, status said {before}");
    log.wait_event_from(notice, "ready", &[("generation", json!(5))], WAIT);
    stop(&mut h, sock);
    let (last, _) = log.wait_event_from(notice, "exiting", &[("code", json!(0))], WAIT);
    log.wait_closed();
    assert_eq!(log.len(), last + 1, "a line after exiting");
}

#[test]
fn stderr_made_non_blocking_and_full_by_a_child_changes_nothing() {
    // Like Node, the child makes the stderr it shares with hotsup
    // non-blocking; then it fills it. Every generation does it again.
    let script = "import fcntl, os, socket, time\n\
                  fcntl.fcntl(2, fcntl.F_SETFL, fcntl.fcntl(2, fcntl.F_GETFL) | os.O_NONBLOCK)\n\
                  for size in (4096, 1):\n\
                  \x20   try:\n\
                  \x20       while True: os.write(2, b'x' * size)\n\
                  \x20   except BlockingIOError:\n\
                  \x20       pass\n\
                  s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                  s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n\
                  time.sleep(600)\n";
    let dir = tempdir();
    let sock = dir.path().join("c.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    let (r, w) = pipe();
    let mut h = Hotsup::run_with_stderr(
        &[
            "--fds",
            "systemd",
            "-l",
            "127.0.0.1:0",
            "--control",
            &sock_arg,
        ],
        &["python3", "-c", script],
        w,
    );
    wait_serving(&sock);
    let flags = std::fs::read_to_string(format!("/proc/{}/fdinfo/2", h.pid)).unwrap();
    let flags = flags
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .unwrap();
    assert_ne!(
        flags & libc::O_NONBLOCK as u32,
        0,
        "the child did not make hotsup's stderr non-blocking"
    );
    for g in 2..=6 {
        upgrade_to(&sock, g);
    }
    assert!(h.is_running());
    dropped_above(&sock, 0);
    stop(&mut h, &sock);
    drop(r);
}

#[test]
fn status_escapes_what_the_child_reported() {
    let script = "import os, socket, time\n\
                  s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                  s.sendto(b'STATUS=evil \\x1b[2J\\x07\\xc2\\x9b done\\nREADY=1', os.environ['NOTIFY_SOCKET'])\n\
                  time.sleep(600)\n";
    let dir = tempdir();
    let sock = dir.path().join("c.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    let mut h = Hotsup::run(
        &[
            "--fds",
            "systemd",
            "-l",
            "127.0.0.1:0",
            "--control",
            &sock_arg,
        ],
        &["python3", "-c", script],
    );
    h.ready(1);
    let human = client(&sock, &["status"]);
    assert_eq!(human.status.code(), Some(0), "{}", text(&human));
    let out = String::from_utf8(human.stdout).unwrap();
    let raw: Vec<char> = out
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in:\n{out}");
    assert!(
        out.contains(r"status: evil \x1b[2J\x07\u{9b} done"),
        "{out}"
    );
    // JSON keeps the text as it was, escaped by JSON itself.
    let json = client(&sock, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["serving"]["status"], "evil \x1b[2J\x07\u{9b} done");
    assert!(!json.stdout.contains(&0x1b));
    stop(&mut h, &sock);
}

/// Opens `n` connections that send nothing.
fn idle_clients(sock: &Path, n: usize) -> Vec<UnixStream> {
    (0..n)
        .map(|_| UnixStream::connect(sock).expect("connect"))
        .collect()
}

#[test]
fn control_connections_are_capped_and_refused_at_once() {
    let max = hotsup::control::MAX_CONNECTIONS;
    let dir = tempdir();
    let sock = dir.path().join("c.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    let mut h = Hotsup::run(
        &["-l", "http=127.0.0.1:0", "--control", &sock_arg],
        &[example("testchild")],
    );
    h.ready(1);
    wait_serving(&sock);
    let baseline = h.quiet_fds();

    let held = idle_clients(&sock, max);
    // Each of these is refused with a reply right away, not after the 10 s
    // a silent client is given: read them while all of `held` stay silent.
    let excess = idle_clients(&sock, 3 * max);
    for (i, mut c) in excess.iter().enumerate() {
        c.set_read_timeout(Some(hotsup::control::REQUEST_TIMEOUT / 2))
            .unwrap();
        let mut reply = String::new();
        let read = c.read_to_string(&mut reply);
        assert!(
            read.is_ok() && reply.contains("\"ok\":false") && reply.contains("busy"),
            "connection {i} beyond the cap: {read:?} {reply:?}"
        );
    }
    // Refused connections hold no fd in hotsup, though their clients
    // keep their ends open.
    let during = h.open_fds();
    assert!(
        during <= baseline + max + 1,
        "{during} fds with {max} held and {} refused connections (baseline {baseline})",
        excess.len()
    );
    let busy = client(&sock, &["status"]);
    assert_eq!(busy.status.code(), Some(1), "{}", text(&busy));
    assert!(text(&busy).contains("busy"), "{}", text(&busy));

    drop(held);
    drop(excess);
    let v = wait_serving(&sock);
    assert_eq!(v["serving"]["generation"], 1);
    let deadline = Instant::now() + WAIT;
    while h.open_fds() > baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        h.quiet_fds(),
        baseline,
        "fds did not return to the baseline"
    );
    stop(&mut h, &sock);
}

#[test]
fn a_client_that_never_reads_its_reply_is_let_go() {
    // A status reply larger than a Unix socket's send buffer (about
    // 208 KiB): many listeners with long names. Short replies cannot pin a
    // connection: they fit the buffer whether the client reads or not.
    let dir = tempdir();
    let sock = dir.path().join("c.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    let specs: Vec<String> = (0..1500)
        .map(|i| {
            let name = format!("{i:04}{}", "n".repeat(140));
            let path = dir.path().join(format!("u{i}.sock"));
            format!("{name}=unix:{}", path.display())
        })
        .collect();
    let mut args = vec!["-l", "http=127.0.0.1:0", "--control", &sock_arg];
    for s in &specs {
        args.extend(["-l", s]);
    }
    let mut h = Hotsup::run(&args, &[example("testchild")]);
    h.ready(1);
    let full = client(&sock, &["status", "--json"]);
    assert_eq!(full.status.code(), Some(0), "{}", text(&full));
    let v: serde_json::Value = serde_json::from_slice(&full.stdout).unwrap();
    let reply_size = serde_json::to_vec(&v).unwrap().len();
    assert!(reply_size > 300 * 1024, "reply of only {reply_size} bytes");
    let baseline = h.quiet_fds();

    let mut stuck = UnixStream::connect(&sock).unwrap();
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&stuck, 1024);
    stuck
        .write_all(b"{\"version\":1,\"command\":\"status\"}\n")
        .unwrap();
    // hotsup writes what fits and then waits; after the reply timeout it
    // closes its end, though this client still holds its own.
    let mut pfd = [rustix::event::PollFd::new(
        &stuck,
        rustix::event::PollFlags::IN,
    )];
    let timeout = rustix::event::Timespec::try_from(WAIT).unwrap();
    let ready = rustix::event::poll(&mut pfd, Some(&timeout)).unwrap();
    assert_eq!(ready, 1, "no reply begun within {WAIT:?}");
    assert!(h.open_fds() > baseline, "hotsup holds no connection");
    let deadline = Instant::now() + WAIT;
    while h.open_fds() > baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        h.open_fds(),
        baseline,
        "the connection of a client that never reads is still open"
    );
    // What hotsup wrote stops short of the whole reply.
    stuck.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let _ = stuck.read_to_end(&mut got);
    assert!(
        got.len() < reply_size,
        "{} of {reply_size} bytes",
        got.len()
    );
    drop(stuck);
    assert_eq!(
        client(&sock, &["status"]).status.code(),
        Some(0),
        "status after the stuck client"
    );
    stop(&mut h, &sock);
    assert!(zombies_of(h.pid).is_empty());
}

#[test]
fn a_client_whose_stdout_went_away_exits_cleanly() {
    let dir = tempdir();
    let sock = dir.path().join("c.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    let mut h = Hotsup::run(
        &["-l", "http=127.0.0.1:0", "--control", &sock_arg],
        &[example("testchild")],
    );
    h.ready(1);
    for args in [
        &["status", "--control", &sock_arg][..],
        &["status", "--json", "--control", &sock_arg],
        &["generate", "completions", "bash"],
    ] {
        // stdout is a pipe whose reader is gone before the first write.
        let (r, w): (OwnedFd, OwnedFd) = pipe();
        drop(r);
        let mut cmd = Command::new(hotsup_bin());
        cmd.args(args).stdout(w);
        let (status, err) = status_and_stderr_bounded(cmd);
        assert_eq!(status.code(), Some(0), "{args:?}: {status:?} {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert!(alive(h.pid));
    stop(&mut h, &sock);
}
