//! Unmodified apps, systemd's notify protocol both ways, socket activation
//! of hotsup itself, and what happens when hotsup dies.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use rustix::process::Signal;

use crate::upgrade::{Traffic, assert_no_failures};
use crate::util::{
    Hotsup, WAIT, alive, example, field, hotsup_bin, json, tempdir, wait_dead, zombies_of,
};

/// Ten upgrades under load of an app that has no hotsup code in it.
fn unmodified_app_survives_upgrades(app: &str, extra: &[&str]) {
    let mut args = vec![
        "--fds",
        "systemd",
        "-l",
        "web=127.0.0.1:0",
        "--drain-timeout",
        "5s",
    ];
    args.extend(extra);
    let mut h = Hotsup::run(&args, &[example(app)]);
    let addr = h.addr("web");
    let mut pids = vec![h.ready(1)];
    let traffic = Traffic::start(addr);
    traffic.wait_ok(10);
    for g in 2..=11 {
        h.upgrade();
        pids.push(h.ready(g));
        h.event("drained", &[("generation", json!(g - 1))]);
        traffic.wait_ok(10);
    }
    let reports = traffic.stop();
    assert_no_failures(&reports);
    let mut seen = std::collections::BTreeSet::new();
    for (_, r) in &reports {
        seen.extend(r.pids_seen());
    }
    for pid in &pids {
        assert!(seen.contains(&(*pid as u32)), "pid {pid} never answered");
    }
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn listenfd_app_survives_ten_upgrades() {
    // It cannot report readiness: it counts as ready once alive 300ms.
    unmodified_app_survives_upgrades("listenfd_app", &["--ready", "delay:300ms"]);
}

#[test]
fn app_checking_listen_pid_survives_ten_upgrades() {
    // sd_notify::listen_fds() ignores the sockets unless LISTEN_PID is the
    // app's own pid; the app sends READY=1 itself.
    unmodified_app_survives_upgrades("notify_app", &[]);
}

#[test]
fn ready_from_a_stray_process_is_ignored() {
    let mut h = Hotsup::run(
        &["--fds", "systemd", "-l", "web=127.0.0.1:0"],
        &[
            example("notify_app").into_os_string(),
            "--ready-delay-ms".into(),
            "1500".into(),
        ],
    );
    h.ready(1);
    h.upgrade();
    let spawned = Instant::now();
    let (from, _) = h
        .log
        .wait_event_from(0, "spawned", &[("generation", json!(2))], WAIT);
    let path = h.notify_path(2);
    // This test process is not of generation 2, though it found the
    // generation's socket.
    let stray = UnixDatagram::unbound().unwrap();
    stray.send_to(b"READY=1", &path).unwrap();
    h.log
        .wait_event_from(from, "notify_from_stranger", &[], WAIT);
    let ready = h.event("ready", &[("generation", json!(2))]);
    assert_eq!(ready["via"], "READY=1", "{ready}");
    assert!(
        spawned.elapsed() >= Duration::from_millis(1400),
        "ready too soon: {ready}"
    );
    assert!(ready["after_ms"].as_u64().unwrap() >= 1500, "{ready}");
    // Generation 1 was not told to drain before generation 2 was ready.
    h.event("draining", &[("generation", json!(1))]);
    let (drain_at, _) = h
        .log
        .wait_event_from(0, "draining", &[("generation", json!(1))], WAIT);
    let (ready_at, _) = h
        .log
        .wait_event_from(0, "ready", &[("generation", json!(2))], WAIT);
    assert!(drain_at > ready_at);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

/// A receiver posing as systemd's NOTIFY_SOCKET.
struct FakeSystemd {
    sock: UnixDatagram,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl FakeSystemd {
    fn new() -> FakeSystemd {
        let dir = tempdir();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        rustix::net::sockopt::set_socket_passcred(&sock, true).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        FakeSystemd {
            sock,
            _dir: dir,
            path,
        }
    }

    /// The next datagram, and the pid that sent it.
    fn next(&self) -> (String, i32) {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        use std::io::IoSliceMut;
        use std::mem::MaybeUninit;
        let mut buf = [0u8; 4096];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = rustix::net::recvmsg(
            self.sock.as_fd(),
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::empty(),
        )
        .expect("no notify message from hotsup in time");
        let mut pid = 0;
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmCredentials(c) = m {
                pid = c.pid.as_raw_pid();
            }
        }
        (String::from_utf8_lossy(&buf[..msg.bytes]).into_owned(), pid)
    }
}

#[test]
fn hotsup_reports_to_its_service_manager() {
    let sd = FakeSystemd::new();
    let dir = tempdir();
    let mode = dir.path().join("mode");
    std::fs::write(&mode, "serve").unwrap();
    let mut cmd = Command::new(hotsup_bin());
    cmd.args(["--log-format", "json", "run", "-l", "127.0.0.1:0", "--"])
        .arg(example("testchild"))
        .arg("--mode-file")
        .arg(&mode)
        .env("NOTIFY_SOCKET", &sd.path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Killed with its children on drop, should an assertion fail.
    let mut h = Hotsup::spawn(cmd);
    let hotsup = h.pid;
    let expect = |want: &[&str]| {
        let (text, pid) = sd.next();
        assert_eq!(pid, hotsup, "sent by pid {pid}, not hotsup: {text:?}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), want.len(), "{text:?} vs {want:?}");
        for (l, w) in lines.iter().zip(want) {
            assert!(l.starts_with(w), "{text:?} vs {want:?}");
        }
        text
    };
    // Start.
    let t = expect(&["READY=1", "STATUS=generation 1 (pid "]);
    assert!(t.ends_with("serving\n"), "{t:?}");
    // A good upgrade.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(hotsup).unwrap(),
        Signal::USR2,
    )
    .unwrap();
    expect(&["RELOADING=1", "MONOTONIC_USEC="]);
    expect(&["READY=1", "STATUS=generation 2 (pid "]);
    // A failed one: the reload ends when the rollback is complete.
    std::fs::write(&mode, "crash").unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(hotsup).unwrap(),
        Signal::USR2,
    )
    .unwrap();
    expect(&["RELOADING=1", "MONOTONIC_USEC="]);
    let t = expect(&["READY=1", "STATUS=generation 2 (pid "]);
    assert!(
        t.contains("last upgrade to generation 3 failed: child exited with code 3"),
        "{t:?}"
    );
    // Shutdown.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(hotsup).unwrap(),
        Signal::TERM,
    )
    .unwrap();
    expect(&["STOPPING=1"]);
    let status = h.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0));
    h.assert_left_nothing();
}

#[test]
fn failed_starts_read_as_start_failures_not_upgrades() {
    let sd = FakeSystemd::new();
    let dir = tempdir();
    let mode = dir.path().join("mode");
    std::fs::write(&mode, "crash").unwrap();
    let sock = dir.path().join("control.sock");
    let mut cmd = Command::new(hotsup_bin());
    cmd.args(["--log-format", "json", "run", "--start-attempts", "100"])
        .arg("--control")
        .arg(&sock)
        .args(["-l", "127.0.0.1:0", "--"])
        .arg(example("testchild"))
        .arg("--mode-file")
        .arg(&mode)
        .env("NOTIFY_SOCKET", &sd.path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut h = Hotsup::spawn(cmd);
    h.event("start_failed", &[("generation", json!(1))]);
    h.event("control_socket", &[]);
    let status = crate::util::client(&sock, &["status"]);
    let shown = crate::util::text(&status);
    assert!(
        shown.contains("serving:  nothing: no start has succeeded yet"),
        "{shown}"
    );
    assert!(shown.contains("last upgrade: none"), "{shown}");
    assert!(shown.contains("0 failed"), "{shown}");
    let stop = crate::util::client(&sock, &["stop"]);
    assert_eq!(stop.status.code(), Some(0), "{}", crate::util::text(&stop));
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    // Every STATUS= the service manager got, up to STOPPING=1.
    let mut statuses = Vec::new();
    loop {
        let (text, _) = sd.next();
        if text.starts_with("STOPPING=1") {
            break;
        }
        statuses.push(text);
    }
    assert!(!statuses.is_empty());
    for t in &statuses {
        assert!(!t.contains("upgrade"), "{t:?}");
        assert!(!t.contains("READY=1"), "{t:?}");
    }
    h.assert_left_nothing();
}

#[test]
fn watchdog_pings_only_when_asked_for() {
    let start = |sd: &FakeSystemd, watchdog: bool| {
        let mut cmd = Command::new(hotsup_bin());
        cmd.args([
            "--log-format",
            "json",
            "run",
            "--ready",
            "exec",
            "-l",
            "127.0.0.1:0",
            "--",
            "sleep",
            "60",
        ])
        .env("NOTIFY_SOCKET", &sd.path)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if watchdog {
            cmd.env("WATCHDOG_USEC", "100000");
        }
        let h = Hotsup::spawn(cmd);
        let (first, _) = sd.next();
        assert!(first.starts_with("READY=1"), "{first:?}");
        h
    };
    // Not asked: started first, it is watched for as long as the other
    // takes to start and ping three times.
    let quiet_sd = FakeSystemd::new();
    let mut quiet = start(&quiet_sd, false);
    let sd = FakeSystemd::new();
    let mut h = start(&sd, true);
    // Asked for every 100ms: pings every 50ms.
    for _ in 0..3 {
        let (ping, pid) = sd.next();
        assert_eq!(ping, "WATCHDOG=1\n");
        assert_eq!(pid, h.pid);
    }
    // Datagrams arrive in order: the next one after READY=1 is the one
    // shutting down, with no ping in between.
    quiet.signal(Signal::TERM);
    let (next, pid) = quiet_sd.next();
    assert_eq!(pid, quiet.pid);
    assert!(next.starts_with("STOPPING=1"), "{next:?}");
    assert_eq!(quiet.wait_exit(WAIT).code(), Some(0));
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

/// Starts hotsup with `fds` at 3, 4, ... and LISTEN_FDS, as systemd does
/// for a `.socket` unit.
fn activated(fds: Vec<OwnedFd>, names: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(hotsup_bin());
    let n = fds.len();
    let mappings = fds
        .into_iter()
        .enumerate()
        .map(|(i, fd)| FdMapping {
            parent_fd: fd,
            child_fd: 3 + i as i32,
        })
        .collect();
    cmd.fd_mappings(mappings).unwrap();
    // LISTEN_PID is left out: systemd sets it to hotsup's pid, which this
    // test cannot know before spawning; hotsup accepts it unset.
    cmd.args(["--log-format", "json", "run"])
        .args(extra)
        .env("LISTEN_FDS", n.to_string())
        .env("LISTEN_FDNAMES", names)
        .env("RUST_LOG", "info");
    cmd
}

#[test]
fn socket_activated_hotsup_adopts_its_sockets() {
    let dir = tempdir();
    let path = dir.path().join("adm.sock");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let unix = UnixListener::bind(&path).unwrap();
    let mut cmd = activated(
        vec![tcp.into(), unix.into()],
        "web:adm",
        &[
            "--",
            example("testchild").to_str().unwrap(),
            "--dump-listeners",
        ],
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut h = Hotsup::spawn(cmd);
    assert_eq!(h.addr("web"), tcp_addr);
    h.event(
        "listening",
        &[
            ("name", json!("adm")),
            ("address", json!(path.display().to_string())),
        ],
    );
    h.ready(1);
    let mut reply = String::new();
    let mut s = std::net::TcpStream::connect(tcp_addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    std::io::Read::read_to_string(&mut s, &mut reply).unwrap();
    assert_eq!(reply, "web\n");
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    // The socket file belongs to whoever created it, not to hotsup.
    assert!(
        path.exists(),
        "hotsup removed a socket file it did not create"
    );
}

#[test]
fn repeated_socket_unit_names_are_made_unique() {
    // systemd names every socket of a .socket unit alike.
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b_addr = b.local_addr().unwrap();
    let mut cmd = activated(
        vec![a.into(), b.into()],
        "app.socket:app.socket",
        &["--ready", "exec", "--", "sleep", "60"],
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut h = Hotsup::spawn(cmd);
    h.event("listening", &[("name", json!("app.socket"))]);
    assert_eq!(h.addr("tcp1"), b_addr);
    h.event("duplicate_fdname", &[]);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn socket_activation_rejects_a_non_listening_fd() {
    let not_listening: OwnedFd = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().into();
    let stream = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let cmd = activated(
        vec![not_listening, stream.into()],
        "ok:bad",
        &["--", "/bin/true"],
    );
    let out = crate::util::output_bounded(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("fd 4 (bad) from LISTEN_FDS is a stream socket that is not listening"),
        "{err}"
    );

    let devnull: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let out = crate::util::output_bounded(activated(vec![devnull], "x", &["--", "/bin/true"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("fd 3 (x) from LISTEN_FDS is not a socket"),
        "{err}"
    );
}

#[test]
fn only_the_sockets_reach_an_unmodified_child() {
    // A shell that lists its fds: stdio plus exactly the two listeners.
    let script = "echo fds $(ls /proc/self/fd); echo LISTEN_PID=$LISTEN_PID pid=$$ LISTEN_FDNAMES=$LISTEN_FDNAMES HOTSUP_FD=$HOTSUP_FD; exec sleep 60";
    let mut h = Hotsup::run(
        &[
            "--fds",
            "systemd",
            "--ready",
            "exec",
            "-l",
            "a=127.0.0.1:0",
            "-l",
            "b=udp://127.0.0.1:0",
        ],
        &["/bin/sh", "-c", script],
    );
    h.ready(1);
    let fds = h.out.wait(&["fds 0 1 2"]);
    // `ls` itself holds one more fd for the directory it reads.
    let mut listed: Vec<i32> = fds
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap())
        .collect();
    listed.sort();
    assert_eq!(&listed[..5], &[0, 1, 2, 3, 4], "{fds}");
    assert!(listed.len() <= 6, "unexpected fds: {fds}");
    let env = h.out.wait(&["LISTEN_PID="]);
    let pid = field(&env, "pid");
    assert_eq!(field(&env, "LISTEN_PID"), pid, "{env}");
    assert_eq!(field(&env, "LISTEN_FDNAMES"), "a:b");
    assert!(env.ends_with("HOTSUP_FD="), "{env}");
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn children_get_sigterm_when_hotsup_is_killed() {
    // `sleep` knows nothing of hotsup: only the parent-death signal can
    // stop it.
    let mut h = Hotsup::run(&["--ready", "exec", "-l", "127.0.0.1:0"], &["sleep", "60"]);
    let pid = h.ready(1);
    h.signal(Signal::KILL);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(h.wait_exit(WAIT).signal(), Some(9));
    assert!(wait_dead(pid, WAIT), "child {pid} outlived hotsup");
}

#[test]
fn subreaper_reaps_orphans_without_stealing_statuses() {
    // The subshell forks a sleeper and exits at once: the sleeper is
    // orphaned and, with --subreaper, re-parented to hotsup.
    let script = format!(
        "(sleep 10 & echo orphan=$!); exec {}",
        example("testchild").display()
    );
    let mut h = Hotsup::run(
        &["--subreaper", "-l", "127.0.0.1:0"],
        &["/bin/sh", "-c", &script],
    );
    let pid = h.ready(1);
    let orphan: i32 = h
        .out
        .wait(&["orphan="])
        .trim_start_matches("orphan=")
        .parse()
        .unwrap();
    // Once its subshell is gone, the orphan's parent is hotsup.
    let parent_of = |p: i32| -> Option<i32> {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse().ok())
    };
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && parent_of(orphan).is_some_and(|pp| pp != h.pid) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        parent_of(orphan),
        Some(h.pid),
        "orphan not re-parented to hotsup"
    );
    // When it dies, hotsup reaps it.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(orphan).unwrap(),
        Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && std::path::Path::new(&format!("/proc/{orphan}")).exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{orphan}")).exists(),
        "the orphan was never reaped"
    );
    assert!(zombies_of(h.pid).is_empty());
    // The generation's own exit status still reaches the supervisor.
    assert!(alive(pid));
    h.signal(Signal::TERM);
    h.event(
        "drained",
        &[
            ("generation", json!(1)),
            ("status", json!("exited with code 0")),
        ],
    );
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}
