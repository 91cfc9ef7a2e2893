//! No process escapes its generation: with cgroups, one that leaves its
//! process group is still killed with it, and one that joins another
//! generation's group cannot speak for it.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::process::Signal;

use crate::util::{
    Hotsup, WAIT, eventually, example, has_cgroups, json, script, tempdir, wait_dead,
};

/// The process group and session of `pid`, from `/proc/PID/stat`.
fn pgid_sid(pid: i32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    (rest[2].parse().unwrap(), rest[3].parse().unwrap())
}

/// The pid a daemonizing helper wrote for generation `g`, once it has left
/// its session and process group.
fn escapee(dir: &Path, g: u64) -> i32 {
    let file = dir.join(format!("escapee-{g}"));
    eventually("the escapee reported its pid", || {
        std::fs::read_to_string(&file).is_ok_and(|s| s.ends_with('\n'))
    });
    std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_daemon_that_left_its_group_dies_with_its_generation() {
    let dir = tempdir();
    // The app starts a daemon that calls setsid(): a new session and group,
    // out of reach of killpg. Then it serves.
    let app = dir.path().join("app");
    script(
        &app,
        &format!(
            "#!/bin/sh\n\
             setsid sh -c 'echo $$ > \"$0.tmp\" && mv \"$0.tmp\" \"$0\"; exec sleep 600' \
             \"{dir}/escapee-$HOTSUP_GENERATION\" &\n\
             exec {testchild}\n",
            dir = dir.path().display(),
            testchild = example("testchild").display(),
        ),
    );
    let mut h = Hotsup::run(&["-l", "127.0.0.1:0", "--drain-timeout", "5s"], &[&app]);
    if !has_cgroups(&h, "a_daemon_that_left_its_group_dies_with_its_generation") {
        return;
    }
    let gen1 = h.ready(1);
    let daemon1 = escapee(dir.path(), 1);
    let (pgid, sid) = pgid_sid(daemon1);
    assert_ne!(pgid, gen1, "the daemon is still in the generation's group");
    assert_eq!(pgid, sid, "the daemon did not start a session");

    // At the drain deadline or when the generation exits, whichever first:
    // here testchild drains at once, and its daemon goes with it.
    h.upgrade();
    h.ready(2);
    h.event("drained", &[("generation", json!(1))]);
    assert!(wait_dead(daemon1, WAIT), "generation 1's daemon survived");

    // And at shutdown.
    let daemon2 = escapee(dir.path(), 2);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    assert!(wait_dead(daemon2, WAIT), "generation 2's daemon survived");
}

#[test]
fn a_sender_that_joined_another_generations_group_cannot_make_it_ready() {
    let dir = tempdir();
    let mode = dir.path().join("mode");
    std::fs::write(&mode, "serve").unwrap();
    let mut h = Hotsup::run(
        &["-l", "127.0.0.1:0", "--ready-timeout", "10s"],
        &[
            example("testchild").as_os_str(),
            "--mode-file".as_ref(),
            mode.as_os_str(),
        ],
    );
    if !has_cgroups(
        &h,
        "a_sender_that_joined_another_generations_group_cannot_make_it_ready",
    ) {
        return;
    }
    h.ready(1);
    std::fs::write(&mode, "never-ready").unwrap();
    h.upgrade();
    let gen2 = h.spawned_pid(2);
    let notify = h.notify_path(2);
    // A process of this test's session moves into generation 2's process
    // group (allowed: same session), then claims READY=1 for it. By process
    // group it would be generation 2's; by cgroup it is not.
    let sender = Command::new("python3")
        .args([
            "-c",
            "import os, socket, sys\n\
             s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
             s.sendto(b'READY=1', sys.argv[1])\n\
             print(os.getpgid(0), flush=True)\n",
            &notify,
        ])
        .process_group(gen2)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        sender.status.success(),
        "{}",
        String::from_utf8_lossy(&sender.stderr)
    );
    let pgid: i32 = String::from_utf8_lossy(&sender.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pgid, gen2, "the sender did not join generation 2's group");
    let failed = h.event("upgrade_failed", &[("generation", json!(2))]);
    assert!(
        failed["reason"].as_str().unwrap().starts_with("not ready"),
        "{failed}"
    );
    assert_eq!(h.log.count_events("ready", &[("generation", json!(2))]), 0);
    h.event("notify_from_stranger", &[]);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}
