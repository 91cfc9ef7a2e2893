//! Rollback after ready (`--probation`), and pinned executables: crash
//! restarts and `hotsup rollback` run the file that served, whatever a
//! deploy put at the path since.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hotsup_bench::loadgen::{Load, LoadConfig, Report};
use rustix::process::Signal;

use crate::upgrade::{Traffic, assert_no_failures};
use crate::util::{Hotsup, WAIT, client, example, json, script, tempdir, text};

/// testchild behind a script that makes generation `G` crash 1 s after it
/// is ready when `crash-after-ready-G` exists in `dir`. Extra testchild
/// arguments come after.
fn app(dir: &Path, extra: &str) -> PathBuf {
    let app = dir.join("app");
    script(
        &app,
        &format!(
            "#!/bin/sh\n\
             d={dir}\n\
             if [ -e \"$d/crash-after-ready-$HOTSUP_GENERATION\" ]; then\n\
             echo crash-after-ready > \"$d/mode-$HOTSUP_GENERATION\"\n\
             exec {tc} --mode-file \"$d/mode-$HOTSUP_GENERATION\" --crash-after-ms 1000 {extra}\n\
             fi\n\
             exec {tc} {extra}\n",
            dir = dir.display(),
            tc = example("testchild").display(),
        ),
    );
    app
}

/// Installs `src` at `dst` as deploys do: a copy renamed over it, so the
/// old file lives on for whoever holds it open.
fn install(src: &Path, dst: &Path) {
    let tmp = dst.with_extension("new");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dst).unwrap();
}

/// The inode of the file process `pid` runs.
fn exe_ino(pid: i32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/exe")).unwrap().ino()
}

/// Failures other than requests cut in the crashing process: none may be
/// a refused connection, and each client worker had at most one request
/// in flight when it crashed.
fn assert_only_in_flight_lost(reports: &[(&str, Report)], concurrency: u64) {
    for (name, r) in reports {
        assert!(r.ok > 0, "{name}: nothing served");
        let refused = r.failures_where(|k| k.label() == "refused");
        assert_eq!(refused, 0, "{name}: {:?}", r.failures_by_label());
        assert!(
            r.total_failures() <= concurrency,
            "{name}: {} failed: {:?}",
            r.total_failures(),
            r.failures_by_label()
        );
        eprintln!("{name}: {} lost in the crash", r.total_failures());
    }
}

#[test]
fn a_crash_on_probation_resumes_the_paused_generation() {
    let dir = tempdir();
    let sock = dir.path().join("control.sock");
    let mut h = Hotsup::run(
        &[
            "-l",
            "http=127.0.0.1:0",
            "--control",
            sock.to_str().unwrap(),
            "--probation",
            "5s",
        ],
        &[app(dir.path(), "")],
    );
    let addr = h.addr("http");
    let old = h.ready(1);
    h.event(
        "protocol",
        &[("generation", json!(1)), ("version", json!(2))],
    );
    let traffic = Traffic::start(addr);
    // New connections only: after the crash they can only reach the
    // resumed generation, which times its return.
    let fresh = Load::start(LoadConfig {
        keep_alive: false,
        concurrency: 2,
        max_duration: Duration::from_secs(120),
        timeout: Duration::from_secs(20),
        ..LoadConfig::new(addr)
    });
    traffic.wait_ok(10);
    std::fs::write(dir.path().join("crash-after-ready-2"), "").unwrap();
    let out = client(&sock, &["upgrade"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("rolled back"), "{}", text(&out));
    assert!(text(&out).contains("on probation"), "{}", text(&out));
    h.event("standby", &[("generation", json!(1))]);
    h.event("resumed", &[("generation", json!(1))]);
    let rolled = h.event("rolled_back", &[("generation", json!(2))]);
    assert_eq!(rolled["resumed"], 1, "{rolled}");
    traffic.wait_ok(20);
    assert!(fresh.wait_for_more_ok(20, WAIT));
    let fresh = fresh.stop();
    let mut reports = traffic.stop();
    // From the last answer of the crashing generation to the first of the
    // resumed one on a new connection.
    let last2 = fresh.last_response_of_generation(2).expect("gen 2 served");
    let back = fresh
        .records
        .iter()
        .filter(|s| s.generation == Some(1) && s.completed() > last2)
        .map(|s| s.completed())
        .min()
        .expect("generation 1 answered again");
    eprintln!(
        "generation 1 answered new connections again {:.1} ms after generation 2's last answer",
        back.duration_since(last2).as_secs_f64() * 1000.0
    );
    reports.push(("new connections", fresh));
    assert_only_in_flight_lost(&reports, 3);
    // The same process serves, as before the upgrade.
    let v = crate::util::wait_serving(&sock);
    assert_eq!(v["serving"]["pid"], old);
    assert_eq!(v["upgrades"]["rolled_back"], 1);
    assert_eq!(v["last_upgrade"]["result"], "rolled_back");
    assert_eq!(
        v["last_upgrade"]["failure"]["kind"], "exited_on_probation",
        "{v}"
    );
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn a_systemd_mode_crash_on_probation_restarts_the_pinned_predecessor() {
    // An app that cannot pause drains at once; the rollback starts what
    // served before, and the listener holds connections meanwhile.
    let dir = tempdir();
    let sock = dir.path().join("control.sock");
    let mut h = Hotsup::run(
        &[
            "--fds",
            "systemd",
            "-l",
            "http=127.0.0.1:0",
            "--control",
            sock.to_str().unwrap(),
            "--probation",
            "5s",
        ],
        &[app(dir.path(), "")],
    );
    let addr = h.addr("http");
    h.ready(1);
    let traffic = Traffic::start(addr);
    traffic.wait_ok(10);
    std::fs::write(dir.path().join("crash-after-ready-2"), "").unwrap();
    let out = client(&sock, &["upgrade"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let started = h.event("probation_started", &[("generation", json!(2))]);
    assert!(started.get("standby").is_none(), "{started}");
    h.event("draining", &[("generation", json!(1))]);
    let rollback = h.event("spawned", &[("generation", json!(3))]);
    assert_eq!(rollback["origin"], "rollback");
    h.ready(3);
    traffic.wait_ok(20);
    let reports = traffic.stop();
    assert_only_in_flight_lost(&reports, 8);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn a_crash_restart_runs_the_pinned_good_executable() {
    let dir = tempdir();
    let app = dir.path().join("app");
    std::fs::copy(example("testchild"), &app).unwrap();
    let good = std::fs::metadata(&app).unwrap().ino();
    let mut h = Hotsup::run(&["-l", "http=127.0.0.1:0"], &[&app]);
    let addr = h.addr("http");
    let first = h.ready(1);
    // A broken deploy lands at the path...
    let broken = dir.path().join("broken");
    script(&broken, "#!/bin/sh\necho broken build >&2\nexit 3\n");
    install(&broken, &app);
    // ...then the serving child dies.
    rustix::process::kill_process(rustix::process::Pid::from_raw(first).unwrap(), Signal::KILL)
        .unwrap();
    let restart = h.event("spawned", &[("generation", json!(2))]);
    assert_eq!(restart["origin"], "restart");
    assert_eq!(restart["pinned"], true);
    let pid = h.ready(2);
    assert_eq!(exe_ino(pid), good, "the restart ran what sits at the path");
    let reply = crate::util::http_get(addr);
    assert!(reply.contains("generation=2"), "{reply}");
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn a_pinned_script_is_run_from_its_descriptor() {
    // A `#!` script's interpreter opens the script by path: pinned, it is
    // given /proc/self/fd/N, which stays open for it.
    let dir = tempdir();
    let app = dir.path().join("app");
    let tc = example("testchild");
    script(&app, &format!("#!/bin/sh\nexec {} \"$@\"\n", tc.display()));
    let mut h = Hotsup::run(&["-l", "http=127.0.0.1:0"], &[&app]);
    let addr = h.addr("http");
    let first = h.ready(1);
    let broken = dir.path().join("broken");
    script(&broken, "#!/bin/sh\nexit 3\n");
    install(&broken, &app);
    rustix::process::kill_process(rustix::process::Pid::from_raw(first).unwrap(), Signal::KILL)
        .unwrap();
    h.ready(2);
    let reply = crate::util::http_get(addr);
    assert!(reply.contains("generation=2"), "{reply}");
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn rollback_brings_back_the_previous_executable_whatever_the_path_holds() {
    let dir = tempdir();
    let sock = dir.path().join("control.sock");
    let versions: Vec<PathBuf> = (1..=3)
        .map(|v| {
            let p = dir.path().join(format!("v{v}"));
            std::fs::copy(example("testchild"), &p).unwrap();
            p
        })
        .collect();
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let app = dir.path().join("app");
    std::fs::hard_link(&versions[0], &app).unwrap();
    let mut h = Hotsup::run(
        &[
            "-l",
            "http=127.0.0.1:0",
            "--control",
            sock.to_str().unwrap(),
        ],
        &[&app],
    );
    let g1 = h.ready(1);
    assert_eq!(exe_ino(g1), ino(&versions[0]));
    // Deploy v2 and upgrade.
    std::fs::remove_file(&app).unwrap();
    std::fs::hard_link(&versions[1], &app).unwrap();
    let out = client(&sock, &["upgrade"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let g2 = h.ready(2);
    assert_eq!(exe_ino(g2), ino(&versions[1]));
    // v3 lands at the path, but the operator wants v1 back.
    std::fs::remove_file(&app).unwrap();
    std::fs::hard_link(&versions[2], &app).unwrap();
    let out = client(&sock, &["rollback"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let g3 = h.ready(3);
    assert_eq!(exe_ino(g3), ino(&versions[0]));
    let v = crate::util::wait_serving(&sock);
    assert_eq!(v["serving"]["generation"], 3);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn a_passed_probation_drains_the_standby_and_leaves_one_generation() {
    let dir = tempdir();
    let sock = dir.path().join("control.sock");
    let mut h = Hotsup::run(
        &[
            "-l",
            "http=127.0.0.1:0",
            "--control",
            sock.to_str().unwrap(),
            "--probation",
            "2s",
        ],
        &[app(dir.path(), "")],
    );
    let addr = h.addr("http");
    let old = h.ready(1);
    let fds_before = h.quiet_fds();
    let traffic = Traffic::start(addr);
    traffic.wait_ok(10);
    let upgrade = {
        let sock = sock.clone();
        std::thread::spawn(move || client(&sock, &["upgrade"]))
    };
    h.event("probation_started", &[("generation", json!(2))]);
    // During the window: the old generation waits on standby, paused.
    let v = crate::util::wait_serving(&sock);
    assert_eq!(v["standby"]["generation"], 1, "{v}");
    assert_eq!(v["standby"]["workers"][0]["state"], "paused", "{v}");
    assert!(v["serving"]["probation_ends_in_ms"].is_u64(), "{v}");
    h.out.wait(&["testchild paused", &format!("pid={old}")]);
    let out = upgrade.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    h.event("probation_passed", &[("generation", json!(2))]);
    h.event("drained", &[("generation", json!(1))]);
    traffic.wait_ok(10);
    let reports = traffic.stop();
    assert_no_failures(&reports);
    let v = crate::util::wait_serving(&sock);
    assert!(v["standby"].is_null(), "{v}");
    assert!(v["draining"].as_array().unwrap().is_empty(), "{v}");
    // Back to one generation's worth of fds, plus the previous good
    // executable kept for `hotsup rollback`.
    assert!(
        h.quiet_fds() <= fds_before + 1,
        "{} > {fds_before} + 1",
        h.quiet_fds()
    );
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn unhealthy_on_probation_rolls_back() {
    let dir = tempdir();
    let sock = dir.path().join("control.sock");
    let mut h = Hotsup::run(
        &[
            "-l",
            "http=127.0.0.1:0",
            "--control",
            sock.to_str().unwrap(),
            "--probation",
            "10s",
        ],
        &[
            example("testchild"),
            "--unhealthy-after-ms".into(),
            "300".into(),
        ],
    );
    h.ready(1);
    let out = client(&sock, &["upgrade"]);
    // Generation 2 too reports UNHEALTHY 300 ms after ready, on probation.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("unhealthy"), "{}", text(&out));
    let v = crate::util::wait_serving(&sock);
    assert_eq!(v["serving"]["generation"], 1);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}
