//! `--user`: hotsup binds as root, its children run as `nobody`. Each test
//! needs root; without it, it says on stderr that it is skipped and why.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::upgrade::{Traffic, assert_no_failures};
use crate::util::{
    Hotsup, Stream, WAIT, example, json, output_bounded, pid_of, proc_status, root_or_skip,
    tempdir, wait_dead,
};

const NEEDS_ROOT: &str = "needs root to bind a port below 1024 and to run children as nobody";

/// nobody's uid, primary gid and groups, as the system's `id` reports them.
pub fn nobody() -> (u32, u32, Vec<u32>) {
    let id = |flag: &str| -> Vec<u32> {
        let out = output_bounded({
            let mut c = Command::new("id");
            c.args([flag, "nobody"]);
            c
        });
        assert!(out.status.success(), "id {flag} nobody: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|n| n.parse().expect("a numeric id"))
            .collect()
    };
    let mut groups = id("-G");
    groups.sort();
    (id("-u")[0], id("-g")[0], groups)
}

/// `path` itself when `nobody` may execute it there (every directory above
/// it must let nobody through), else a copy in `dir`, opened to everyone.
pub fn runnable_by_nobody(path: PathBuf, dir: &Path) -> PathBuf {
    let (uid, gid, _) = nobody();
    let mut check = Command::new("setpriv");
    check
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "test", "-x"])
        .arg(&path);
    if output_bounded(check).status.success() {
        return path;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join(path.file_name().unwrap());
    std::fs::copy(&path, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// Starts hotsup listening as `http` on the first free port at or above
/// `first` on 127.0.0.1 (below 1024); should another process take the port
/// between the probe and hotsup's bind, the next one is tried.
fn start_on_low_port<S: AsRef<std::ffi::OsStr>>(
    first: u16,
    args: &[&str],
    command: &[S],
) -> (Hotsup, SocketAddr) {
    for port in first..first + 150 {
        assert!(port < 1024);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let listen = format!("http=127.0.0.1:{port}");
        let mut all = vec!["-l", listen.as_str()];
        all.extend(args);
        let mut h = Hotsup::run(&all, command);
        let deadline = Instant::now() + WAIT;
        loop {
            if h.log.count_events("listening", &[("name", json!("http"))]) > 0 {
                let addr = h.addr("http");
                return (h, addr);
            }
            if !h.is_running() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "hotsup neither listened nor exited"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let log = h.log.all().join("\n");
        assert!(log.contains("Address already in use"), "{log}");
    }
    panic!("no free port in {first}..{}", first + 150);
}

/// The process runs as nobody, with nobody's groups, for real, effective,
/// saved and filesystem ids alike.
fn assert_runs_as_nobody(pid: i32) {
    let (uid, gid, groups) = nobody();
    assert_eq!(
        proc_status(pid, "Uid"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(
        proc_status(pid, "Gid"),
        format!("{gid}\t{gid}\t{gid}\t{gid}")
    );
    let mut got: Vec<u32> = proc_status(pid, "Groups")
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, groups, "supplementary groups of {pid}");
}

/// Five upgrades under load of `app` running as nobody, behind a port only
/// root may bind.
fn serves_as_nobody_on_a_privileged_port(first_port: u16, fds: &str, app: &str, via: &str) {
    let dir = tempdir();
    let app = runnable_by_nobody(example(app), dir.path());
    let (mut h, addr) = start_on_low_port(
        first_port,
        &["--user", "nobody", "--fds", fds, "--drain-timeout", "5s"],
        &[app],
    );
    assert!(addr.port() < 1024);
    let ready = |h: &Hotsup, g: u64| -> i32 {
        let ready = h.event("ready", &[("generation", json!(g))]);
        assert_eq!(ready["via"], via, "{ready}");
        let pid = pid_of(&ready);
        assert_runs_as_nobody(pid);
        pid
    };
    let mut pids = vec![ready(&h, 1)];
    let traffic = Traffic::start(addr);
    traffic.wait_ok(10);
    for g in 2..=6 {
        h.upgrade();
        pids.push(ready(&h, g));
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
fn children_as_nobody_behind_a_privileged_port() {
    if !root_or_skip("children_as_nobody_behind_a_privileged_port", NEEDS_ROOT) {
        return;
    }
    // One after the other: each puts the suite's 2 cores under load.
    serves_as_nobody_on_a_privileged_port(600, "native", "testchild", "READY");
    // The --fds systemd trampoline re-executes hotsup as nobody, and the
    // app's READY=1 must reach the notify socket as nobody.
    serves_as_nobody_on_a_privileged_port(800, "systemd", "notify_app", "READY=1");
}

#[test]
fn children_running_as_nobody_die_with_hotsup() {
    if !root_or_skip("children_running_as_nobody_die_with_hotsup", NEEDS_ROOT) {
        return;
    }
    let dir = tempdir();
    let app = runnable_by_nobody(example("notify_app"), dir.path());
    // Generation 1 serves; generation 2 is a `sleep` that never reports
    // ready. Neither has a hotsup channel: only the parent-death signal,
    // set after the switch to nobody, can stop them.
    let script = r#"if [ "$HOTSUP_GENERATION" = 1 ]; then exec "$0"; fi; exec sleep 600"#;
    // A killed hotsup removes nothing: its control socket goes in the
    // test's directory, its notify directory is removed below.
    let control = dir.path().join("control.sock");
    let mut h = Hotsup::run(
        &[
            "--user",
            "nobody",
            "--fds",
            "systemd",
            "--ready-timeout",
            "10m",
            "--control",
            control.to_str().unwrap(),
            "-l",
            "web=127.0.0.1:0",
        ],
        &[
            OsString::from("/bin/sh"),
            "-c".into(),
            script.into(),
            app.into_os_string(),
        ],
    );
    let first = h.ready(1);
    let notify = PathBuf::from(h.notify_path(1));
    h.upgrade();
    let second = h.spawned_pid(2);
    assert_runs_as_nobody(first);
    assert_runs_as_nobody(second);
    h.signal(Signal::KILL);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(h.wait_exit(WAIT).signal(), Some(9));
    std::fs::remove_dir_all(notify.parent().unwrap()).unwrap();
    let survivors: Vec<i32> = [first, second]
        .into_iter()
        .filter(|p| !wait_dead(*p, WAIT))
        .collect();
    // Leave nothing behind, even on failure.
    for p in &survivors {
        let _ = rustix::process::kill_process(Pid::from_raw(*p).unwrap(), Signal::KILL);
    }
    assert!(survivors.is_empty(), "outlived hotsup: {survivors:?}");
}

/// notify_app run by the test as `uid:gid`, outside every generation,
/// sending READY=1 to `notify`; killed on drop.
struct Stray {
    child: Child,
    out: Stream,
    err: Stream,
}

impl Stray {
    fn start(uid: u32, gid: u32, app: &Path, notify: &Path) -> Stray {
        let mut child = Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg(app)
            .args(["--ready-delay-ms", "0", "127.0.0.1:0"])
            .env("NOTIFY_SOCKET", notify)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn setpriv");
        let out = Stream::follow(child.stdout.take().unwrap(), "stray");
        let err = Stream::follow(child.stderr.take().unwrap(), "stray");
        Stray { child, out, err }
    }
}

impl Drop for Stray {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn only_the_generation_can_report_ready_on_a_nobody_notify_socket() {
    if !root_or_skip(
        "only_the_generation_can_report_ready_on_a_nobody_notify_socket",
        NEEDS_ROOT,
    ) {
        return;
    }
    let dir = tempdir();
    let app = runnable_by_nobody(example("notify_app"), dir.path());
    let (uid, gid, _) = nobody();
    let mut h = Hotsup::run(
        &[
            "--user",
            "nobody",
            "--fds",
            "systemd",
            "--ready-timeout",
            "10m",
            "-l",
            "web=127.0.0.1:0",
        ],
        &[
            app.clone().into_os_string(),
            "--ready-delay-ms".into(),
            "600000".into(),
        ],
    );
    h.spawned_pid(1);
    let path = PathBuf::from(h.notify_path(1));
    // The socket is nobody's alone; its directory stays hotsup's, so the
    // children cannot replace the socket, and lets only their group through.
    let d = std::fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(d.mode() & 0o7777, 0o710);
    assert_eq!((d.uid(), d.gid()), (0, gid));
    let s = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(s.mode() & 0o7777, 0o600);
    assert_eq!((s.uid(), s.gid()), (uid, gid));

    // A process of the children's own uid, outside every generation,
    // reaches the socket: its READY=1 is ignored.
    let same_uid = Stray::start(uid, gid, &app, &path);
    same_uid.out.wait(&["notify_app ready"]);
    let stranger = h.event("notify_from_stranger", &[]);
    assert_eq!(stranger["last_sender"], same_uid.child.id(), "{stranger}");
    // Any other uid cannot even reach it. (4000000: no system gives it out.)
    let other_uid = Stray::start(4_000_000, 4_000_000, &app, &path);
    other_uid.out.wait(&["notify_app ready"]);
    let err = other_uid.err.wait(&["cannot send READY=1"]);
    assert!(err.contains("Permission denied"), "{err}");

    assert_eq!(
        h.log.count_events("ready", &[("generation", json!(1))]),
        0,
        "a stray process made generation 1 ready"
    );
    drop(same_uid);
    drop(other_uid);
    h.signal(Signal::TERM);
    h.wait_exit(WAIT);
}
