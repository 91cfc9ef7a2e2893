//! The children's NOTIFY_SOCKET under abuse, and READY=1 from helpers that
//! exit at once.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::util::{Hotsup, WAIT, client, example, json, rss_kib, script, tempdir, text};

/// Upgrades `n` times through the control socket; returns how many did not
/// end with the new generation serving.
fn upgrades_failing(sock: &std::path::Path, n: usize) -> Vec<String> {
    (0..n)
        .filter_map(|_| {
            let out = client(sock, &["upgrade"]);
            (out.status.code() != Some(0)).then(|| text(&out))
        })
        .collect()
}

#[test]
fn a_flood_of_strangers_leaves_memory_flat_and_upgrades_working() {
    let dir = tempdir();
    let sock = dir.path().join("control.sock");
    let mut h = Hotsup::run(
        &["-l", "127.0.0.1:0", "--control", sock.to_str().unwrap()],
        &[example("testchild")],
    );
    h.ready(1);
    // Strangers that found hotsup's socket directory: they send to every
    // socket in it, whichever generations come and go.
    let notify_dir = std::path::PathBuf::from(h.event("notify_dir", &[])["path"].as_str().unwrap());
    // Settle the allocator with an upgrade first.
    assert!(upgrades_failing(&sock, 1).is_empty());
    let before = rss_kib(h.pid);

    // Three senders that are no generation, 2 KiB each, as fast as the
    // socket takes them.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..3)
        .map(|_| {
            let (stop, sent, dir) = (stop.clone(), sent.clone(), notify_dir.clone());
            std::thread::spawn(move || {
                let s = UnixDatagram::unbound().unwrap();
                s.set_nonblocking(true).unwrap();
                let payload = format!("STATUS={}", "x".repeat(2041));
                while !stop.load(Ordering::Relaxed) {
                    let targets: Vec<_> = std::fs::read_dir(&dir)
                        .unwrap()
                        .flatten()
                        .map(|e| e.path())
                        .collect();
                    for _ in 0..100 {
                        for t in &targets {
                            if s.send_to(payload.as_bytes(), t).is_ok() {
                                sent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    let flood_started = Instant::now();
    // Upgrades keep working during the flood.
    let failed = upgrades_failing(&sock, 5);
    // Keep flooding until a good number went through, bounded.
    let deadline = Instant::now() + WAIT;
    while sent.load(Ordering::Relaxed) < 200_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    let flooded_for = flood_started.elapsed();
    let total = sent.load(Ordering::Relaxed);
    assert!(
        failed.is_empty(),
        "upgrades failed during the flood: {failed:?}"
    );
    assert!(
        total >= 10_000,
        "the flood barely happened: {total} datagrams"
    );

    let status = client(&sock, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let dropped = v["notify_dropped"].as_u64().unwrap();
    let after = rss_kib(h.pid);
    eprintln!(
        "flood: {total} datagrams in {flooded_for:?}, {dropped} dropped by hotsup, \
         RSS {before} -> {after} KiB"
    );
    // Nothing queues: memory stays where it was.
    assert!(
        after <= before + 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert!(dropped > 0 && dropped <= total, "{dropped} of {total}");
    // One warning per 10 s at most, however many datagrams.
    let warnings = h.log.count_events("notify_from_stranger", &[]) as u64;
    assert!(
        warnings <= flooded_for.as_secs() / 10 + 2,
        "{warnings} warnings in {flooded_for:?}"
    );
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

/// An app whose READY=1 comes from a helper process that exits right after
/// sending it, as `systemd-notify --ready` and similar tools do.
fn helper_ready_upgrades(helper: &str, upgrades: usize) {
    let dir = tempdir();
    let sock = dir.path().join("control.sock");
    let app = dir.path().join("app");
    script(&app, &format!("#!/bin/sh\n{helper}\nexec sleep 600\n"));
    let mut h = Hotsup::run(
        &[
            "-l",
            "127.0.0.1:0",
            "--control",
            sock.to_str().unwrap(),
            "--ready-timeout",
            "10s",
        ],
        &[&app],
    );
    h.event(
        "ready",
        &[("generation", json!(1)), ("via", json!("READY=1"))],
    );
    let failed = upgrades_failing(&sock, upgrades);
    eprintln!("{helper:?}: {} of {upgrades} upgrades failed", failed.len());
    assert!(failed.is_empty(), "{failed:#?}");
    // The client may hear of the last one before its log line is written.
    h.event("ready", &[("generation", json!(upgrades as u64 + 1))]);
    assert_eq!(
        h.log.count_events("ready", &[("via", json!("READY=1"))]),
        upgrades + 1
    );
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn ready_from_a_helper_that_exits_at_once_counts() {
    helper_ready_upgrades(
        "python3 -c 'import os, socket; \
         socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b\"READY=1\", os.environ[\"NOTIFY_SOCKET\"])'",
        50,
    );
}

#[test]
fn ready_from_systemd_notify_counts() {
    if std::process::Command::new("systemd-notify")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("skipped: ready_from_systemd_notify_counts: no systemd-notify here");
        return;
    }
    helper_ready_upgrades("systemd-notify --ready", 20);
}

#[test]
fn barrier_is_answered_after_what_came_before() {
    // sd_notify_barrier(3): send BARRIER=1 with the write end of a pipe,
    // close it, and wait for EOF on the read end, which comes once the
    // manager has handled (here: passed on) everything sent before.
    let dir = tempdir();
    let app = dir.path().join("app");
    let go = dir.path().join("go");
    let helper = "import array, os, socket, sys, time\n\
        path = os.environ['NOTIFY_SOCKET']\n\
        while not os.path.exists(sys.argv[1]): time.sleep(0.01)\n\
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
        s.sendto(b'STATUS=before the barrier', path)\n\
        r, w = os.pipe()\n\
        s.sendmsg([b'BARRIER=1'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [w]))], 0, path)\n\
        os.close(w)\n\
        import select\n\
        ok = select.select([r], [], [], 20)[0]\n\
        print('barrier', 'answered' if ok and os.read(r, 1) == b'' else 'timed out', flush=True)\n\
        s.sendto(b'READY=1', path)\n";
    script(
        &app,
        &format!(
            "#!/bin/sh\npython3 -c \"{helper}\" {}\nexec sleep 600\n",
            go.display()
        ),
    );
    let mut h = Hotsup::run(&["-l", "127.0.0.1:0"], &[&app]);
    h.spawned_pid(1);
    // Whatever pipes hotsup inherited from the test harness are not ours to
    // judge; only new ones are.
    let pipes_before = pipes_of(h.pid);
    std::fs::write(&go, "").unwrap();
    let line = h.out.wait(&["barrier"]);
    assert_eq!(line, "barrier answered");
    h.event("ready", &[("generation", json!(1))]);
    h.event("status", &[("text", json!("before the barrier"))]);
    // The barrier's pipe is not kept.
    assert_eq!(pipes_of(h.pid), pipes_before);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

/// The pipes `pid` holds open.
fn pipes_of(pid: i32) -> Vec<String> {
    let mut pipes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.display().to_string())
        .filter(|l| l.starts_with("pipe:"))
        .collect();
    pipes.sort();
    pipes
}
