//! `hotsup upgrade --self`: hotsup replaces its own binary in place, same
//! pid, with its children and listeners untouched; a binary that cannot
//! take over is refused and nothing changes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::upgrade::{Traffic, assert_no_failures};
use crate::util::{
    Hotsup, Runtime, Value, WAIT, alive, client, eventually, example, hotsup_bin, json, pid_of,
    script, tempdir, text, zombies_of,
};

/// A copy of the hotsup binary at `dir/hotsup`, the install path of the
/// hotsup started from it.
fn install(dir: &Path) -> PathBuf {
    let path = dir.join("hotsup");
    replace_binary(&path);
    path
}

/// Puts a fresh copy of the test's hotsup binary at `path` the way a
/// package manager does: a new file renamed over the old one, so that the
/// running hotsup's file is another inode (a new build, for `status`).
fn replace_binary(path: &Path) {
    let tmp = path.with_extension("new");
    // Written by cp, not by this process: a fork of another test's thread
    // could otherwise hold our write fd on it for an instant, and the exec
    // of it fail with ETXTBSY.
    let cp = Command::new("cp")
        .arg(hotsup_bin())
        .arg(&tmp)
        .status()
        .expect("cp");
    assert!(cp.success(), "cp hotsup");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// `INSTALLED run --log-format json ARGS --control SOCK -- COMMAND`.
fn start(installed: &Path, sock: &Path, args: &[&str], command: &[&Path]) -> Hotsup {
    let mut cmd = Command::new(installed);
    cmd.arg("run")
        .args(["--log-format", "json"])
        .args(args)
        .arg("--control")
        .arg(sock)
        .arg("--")
        .args(command)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn_copied(cmd)
}

/// [`Hotsup::spawn`] of a binary the test just copied: another test's fork
/// may still hold the copy open for writing for an instant (ETXTBSY), so
/// the spawn is retried, bounded.
fn spawn_copied(mut cmd: Command) -> Hotsup {
    let runtime = Runtime::new();
    runtime.apply(&mut cmd);
    for _ in 0..500 {
        match cmd.spawn() {
            Ok(child) => return Hotsup::from_child(child).with_runtime(runtime),
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("spawn hotsup: {e}"),
        }
    }
    panic!("spawn hotsup: text file busy for 5 s");
}

fn status(sock: &Path) -> Value {
    let out = client(sock, &["status", "--json"]);
    assert!(out.status.success(), "status: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// hotsup's fds that are the TCP socket listening on `port`, with its
/// inode: (fd number, inode).
fn listening_fds(pid: i32, port: u16) -> Vec<(i32, u64)> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let want = format!(":{port:04X}");
    let inodes: Vec<u64> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local_address, st == 0A (LISTEN), inode.
            (f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A")
                .then(|| f[9].parse().ok())
                .flatten()
        })
        .collect();
    fds_of(pid)
        .into_iter()
        .filter_map(|(fd, link)| {
            let ino: u64 = link
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            inodes.contains(&ino).then_some((fd, ino))
        })
        .collect()
}

/// Every fd of `pid` with what it links to.
fn fds_of(pid: i32) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<(i32, String)> = dir
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            Some((fd, link.display().to_string()))
        })
        .collect();
    fds.sort();
    fds
}

fn memfds(pid: i32) -> Vec<(i32, String)> {
    fds_of(pid)
        .into_iter()
        .filter(|(_, l)| l.contains("memfd:"))
        .collect()
}

/// The serving generation's workers: (slot, pid, state).
fn slots(s: &Value) -> Vec<(u64, i64, String)> {
    s["serving"]["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| {
            (
                w["worker"].as_u64().expect("slot"),
                w["pid"].as_i64().expect("pid"),
                w["state"].as_str().expect("state").to_string(),
            )
        })
        .collect()
}

fn serving_pid(s: &Value) -> i64 {
    s["serving"]["pid"].as_i64().expect("a serving generation")
}

#[test]
fn self_upgrade_under_load_keeps_every_child_and_listener_then_upgrades_still_work() {
    let dir = tempdir();
    let installed = install(dir.path());
    let sock = dir.path().join("control.sock");
    let mut h = start(
        &installed,
        &sock,
        &["-l", "http=127.0.0.1:0", "--workers", "2"],
        &[&example("http")],
    );
    let addr = h.addr("http");
    h.ready(1);
    let before = status(&sock);
    let workers_before = before["serving"]["workers"].clone();
    let listeners_before = listening_fds(h.pid, addr.port());
    assert_eq!(listeners_before.len(), 1, "hotsup holds its listener once");
    assert_eq!(before["binary"]["self_upgrades"], json!(0));
    let build_before = before["binary"]["build"].clone();

    let traffic = Traffic::start(addr);
    traffic.wait_ok(20);
    // A package upgrade: a new file at the install path.
    replace_binary(&installed);
    let out = client(&sock, &["upgrade", "--self"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("self-upgraded"), "{}", text(&out));
    h.event("self_upgraded", &[("self_upgrades", json!(1))]);
    traffic.wait_ok(20);

    let after = status(&sock);
    // Same process, same children, same sockets at the same numbers.
    assert_eq!(after["pid"], json!(h.pid));
    assert_eq!(slots(&after), slots(&before));
    assert_eq!(after["serving"]["generation"], json!(1));
    assert_eq!(listening_fds(h.pid, addr.port()), listeners_before);
    // The new binary runs, and says so.
    assert_eq!(after["version"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(after["binary"]["self_upgrades"], json!(1));
    assert_ne!(after["binary"]["build"], build_before, "status: {after}");
    assert_eq!(
        after["binary"]["path"],
        json!(installed.display().to_string())
    );
    let exe = std::fs::metadata(format!("/proc/{}/exe", h.pid)).expect("exe");
    let file = std::fs::metadata(&installed).expect("installed");
    assert_eq!((exe.dev(), exe.ino()), (file.dev(), file.ino()));

    // The state's memfd went nowhere: not kept by hotsup, not in a child.
    assert!(memfds(h.pid).is_empty(), "hotsup: {:?}", memfds(h.pid));
    let worker_pids: Vec<i32> = workers_before
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["pid"].as_i64().expect("pid") as i32)
        .collect();
    for pid in &worker_pids {
        assert!(alive(*pid), "worker {pid} did not survive");
        assert!(memfds(*pid).is_empty(), "worker {pid}: {:?}", memfds(*pid));
    }

    // An ordinary upgrade afterwards: the adopted channels and notify
    // sockets work, and the old generation drains.
    h.upgrade();
    h.ready(2);
    for pid in &worker_pids {
        h.event("drained", &[("pid", json!(pid))]);
    }
    traffic.wait_ok(20);
    assert_no_failures(&traffic.stop());
    assert!(zombies_of(h.pid).is_empty(), "hotsup left zombies");
    h.signal(rustix::process::Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    h.assert_left_nothing();
    assert!(!sock.exists(), "the control socket was left behind");
}

#[test]
fn a_binary_that_cannot_take_over_is_refused_and_nothing_changes() {
    let dir = tempdir();
    let installed = install(dir.path());
    let sock = dir.path().join("control.sock");
    let mut h = start(
        &installed,
        &sock,
        &["-l", "http=127.0.0.1:0"],
        &[&example("http")],
    );
    let pid1 = h.ready(1);
    let fds = fds_of(h.pid);
    let broken = dir.path().join("broken");
    script(
        &broken,
        "#!/bin/sh\necho 'this build cannot read format 1' >&2\nexit 3\n",
    );
    let not_executable = dir.path().join("not-executable");
    std::fs::write(&not_executable, "data").expect("write");
    let missing = dir.path().join("missing");
    let cases: [(&Path, &str); 3] = [
        (&broken, "this build cannot read format 1"),
        (&not_executable, "Permission denied"),
        (&missing, "No such file"),
    ];
    for (i, (binary, reason)) in cases.iter().enumerate() {
        let out = client(
            &sock,
            &[
                "upgrade",
                "--self",
                "--binary",
                binary.to_str().expect("utf-8 path"),
            ],
        );
        assert_eq!(out.status.code(), Some(4), "{}", text(&out));
        assert!(text(&out).contains(reason), "{}", text(&out));
        let s = status(&sock);
        assert_eq!(s["binary"]["self_upgrades"], json!(0));
        assert_eq!(s["binary"]["self_upgrades_failed"], json!(i + 1));
        assert_eq!(serving_pid(&s), i64::from(pid1));
    }
    assert_eq!(h.log.count_events("self_upgrade_exec", &[]), 0);
    // Nothing changed: the same fds (the check's pipe and memfd are gone),
    // no zombie of a check, and upgrades work as before.
    eventually("hotsup's fds as before the refusals", || {
        fds_of(h.pid) == fds
    });
    assert!(zombies_of(h.pid).is_empty());
    h.upgrade();
    h.ready(2);
    h.signal(rustix::process::Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    h.assert_left_nothing();
}

#[test]
fn a_self_upgrade_during_an_upgrade_is_refused() {
    let dir = tempdir();
    let installed = install(dir.path());
    let sock = dir.path().join("control.sock");
    let mode = dir.path().join("mode");
    std::fs::write(&mode, "serve").expect("mode");
    let mut h = start(
        &installed,
        &sock,
        &["-l", "http=127.0.0.1:0"],
        &[
            &example("testchild"),
            Path::new("--mode-file"),
            &mode,
            Path::new("--ready-delay-ms"),
            Path::new("3000"),
        ],
    );
    h.ready(1);
    let out = client(&sock, &["upgrade", "--no-wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = client(&sock, &["upgrade", "--self"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("an upgrade is in progress"),
        "{}",
        text(&out)
    );
    // Once the upgrade is over, the self-upgrade goes through.
    h.ready(2);
    let out = client(&sock, &["upgrade", "--self"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(status(&sock)["binary"]["self_upgrades"], json!(1));
    h.signal(rustix::process::Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    h.assert_left_nothing();
}

/// A "new binary" that runs in hotsup's process between the old binary and
/// the real new one (hotsup execs it; it execs hotsup): `window` is shell
/// run right there, with hotsup's signals held.
fn in_the_window(dir: &Path, window: &str) -> PathBuf {
    let path = dir.join("window.sh");
    script(
        &path,
        &format!(
            "#!/bin/sh\nif [ \"$1\" != __self-check ]; then\n{window}\nfi\nexec {} \"$@\"\n",
            hotsup_bin()
        ),
    );
    path
}

#[test]
fn a_sigusr2_sent_during_the_exec_is_not_lost() {
    let dir = tempdir();
    let installed = install(dir.path());
    let sock = dir.path().join("control.sock");
    let mut h = start(
        &installed,
        &sock,
        &["-l", "http=127.0.0.1:0"],
        &[&example("http")],
    );
    h.ready(1);
    // Sent by the process to itself while the old binary is gone and the
    // new one has no handler yet: held pending, then delivered.
    let window = in_the_window(dir.path(), "kill -USR2 $$");
    let out = client(
        &sock,
        &[
            "upgrade",
            "--self",
            "--binary",
            window.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let adopted = h.log.wait_event_from(0, "self_upgraded", &[], WAIT).0;
    h.log.wait_event_from(
        adopted,
        "upgrade_requested",
        &[("source", json!("SIGUSR2"))],
        WAIT,
    );
    h.ready(2);
    assert!(h.is_running(), "SIGUSR2 killed hotsup");
    h.signal(rustix::process::Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    h.assert_left_nothing();
}

#[test]
fn a_child_that_exits_during_the_exec_is_reaped_by_the_new_hotsup() {
    let dir = tempdir();
    let installed = install(dir.path());
    let sock = dir.path().join("control.sock");
    let mut h = start(
        &installed,
        &sock,
        &["-l", "http=127.0.0.1:0"],
        &[&example("http")],
    );
    let pid1 = h.ready(1);
    // Killed, and a zombie, before the new binary runs. Shell builtins
    // only: a command the shell forked and waited for could let it reap
    // the zombie itself (it is the same process as hotsup).
    let window = in_the_window(
        dir.path(),
        &format!(
            "kill -KILL {pid1}\ni=0\nwhile [ $i -lt 1000000 ]; do read -r p c st rest < /proc/{pid1}/stat; [ \"$st\" = Z ] && break; i=$((i+1)); done"
        ),
    );
    let out = client(
        &sock,
        &[
            "upgrade",
            "--self",
            "--binary",
            window.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let adopted = h.log.wait_event_from(0, "self_upgraded", &[], WAIT).0;
    let (_, crashed) = h.log.wait_event_from(
        adopted,
        "crashed",
        &[("generation", json!(1)), ("pid", json!(pid1))],
        WAIT,
    );
    assert_eq!(pid_of(&crashed), pid1);
    // The crash restart serves again.
    let pid2 = h.ready(2);
    assert_ne!(pid1, pid2);
    assert!(zombies_of(h.pid).is_empty(), "a zombie was left");
    h.signal(rustix::process::Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    h.assert_left_nothing();
}

#[test]
fn a_crash_restart_after_a_self_upgrade_runs_the_pinned_app_whose_file_is_gone() {
    let dir = tempdir();
    let installed = install(dir.path());
    let sock = dir.path().join("control.sock");
    let app = dir.path().join("app");
    std::fs::copy(example("http"), &app).expect("copy app");
    let mut h = start(&installed, &sock, &["-l", "http=127.0.0.1:0"], &[&app]);
    let pid1 = h.ready(1);
    std::fs::remove_file(&app).expect("remove app");
    let out = client(&sock, &["upgrade", "--self"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    h.event("self_upgraded", &[]);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid1).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill");
    h.event("crashed", &[("pid", json!(pid1))]);
    // Started again from the pinned file, which only hotsup's fd keeps.
    let pid2 = h.ready(2);
    assert!(alive(pid2));
    h.signal(rustix::process::Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    h.assert_left_nothing();
}

#[test]
fn a_hotsup_run_with_a_config_file_refuses_to_self_upgrade() {
    let dir = tempdir();
    let installed = install(dir.path());
    let sock = dir.path().join("control.sock");
    let file = dir.path().join("hotsup.toml");
    std::fs::write(
        &file,
        format!(
            "listen = [\"http=127.0.0.1:0\"]\ncommand = [{}]\n",
            serde_json::to_string(&example("http").to_string_lossy()).expect("json")
        ),
    )
    .expect("config");
    let mut cmd = Command::new(&installed);
    cmd.arg("run")
        .args(["--log-format", "json", "--config"])
        .arg(&file)
        .arg("--control")
        .arg(&sock)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut h = spawn_copied(cmd);
    let pid1 = h.ready(1);
    let out = client(&sock, &["upgrade", "--self"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("--config"), "{}", text(&out));
    assert_eq!(serving_pid(&status(&sock)), i64::from(pid1));
    assert_eq!(h.log.count_events("self_upgrade_check", &[]), 0);
    h.signal(rustix::process::Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    h.assert_left_nothing();
}
