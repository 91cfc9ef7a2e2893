//! `hotsup run --watch`: the development loop, end to end. Each test has a
//! project of its own in a temp directory; its "build" is a shell script
//! that copies a prebuilt example (testchild, whose responses name their
//! generation) into place, and fails when `src/main.rs` contains `BROKEN`.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::upgrade::{Traffic, assert_no_failures};
use crate::util::{
    Hotsup, Stream, Value, WAIT, example, follow_lines, hotsup_command, http_get, json, script,
    tempdir, zombies_of,
};

/// What the failing build prints, as a compiler would.
const BUILD_ERROR: &str = "error[E0308]: mismatched types (the broken test build)";

/// A project: `src/` watched, `build.sh` builds `bin/app` from the
/// prebuilt testchild, through `target/` (which is never watched), and
/// counts its runs in `target/builds`.
struct Project {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Project {
    fn new(source: &str) -> Project {
        let dir = tempdir();
        let root = dir.path().canonicalize().unwrap();
        for d in ["src", "bin", "target"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("src/main.rs"), source).unwrap();
        let app = example("testchild");
        script(
            &root.join("build.sh"),
            &format!(
                "#!/bin/sh\n\
                 cd {root}\n\
                 echo build >> target/builds\n\
                 if grep -q BROKEN src/main.rs; then echo '{BUILD_ERROR}' >&2; exit 1; fi\n\
                 cp {app} target/app.tmp && mv target/app.tmp bin/app\n",
                root = root.display(),
                app = app.display(),
            ),
        );
        Project { _dir: dir, root }
    }

    /// Saves `src/NAME`.
    fn save(&self, name: &str, text: &str) {
        std::fs::write(self.root.join("src").join(name), text).unwrap();
    }

    fn builds(&self) -> usize {
        std::fs::read_to_string(self.root.join("target/builds"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// `hotsup run --watch src --build ./build.sh ARGS -- ./bin/app APP_ARGS`
    /// in the project's directory, with `RUST_LOG=log`.
    fn run(&self, args: &[&str], app_args: &[&str], log: &str) -> Hotsup {
        let control = self.root.join("control.sock");
        let mut all = vec![
            "--watch",
            "src",
            "--build",
            "./build.sh",
            "--control",
            control.to_str().unwrap(),
            "-l",
            "http=127.0.0.1:0",
        ];
        all.extend_from_slice(args);
        let mut command = vec!["./bin/app"];
        command.extend_from_slice(app_args);
        let mut cmd = hotsup_command(&all, &command);
        cmd.current_dir(&self.root).env("RUST_LOG", log);
        Hotsup::from_child(cmd.spawn().expect("spawn hotsup"))
    }
}

/// Waits for the `swapped` event of generation `g`.
fn swapped(h: &Hotsup, g: u64) -> Value {
    h.event("swapped", &[("generation", json!(g))])
}

/// The generation that answered `GET /` on a new connection.
fn answered_by(addr: SocketAddr) -> u64 {
    let reply = http_get(addr);
    assert!(reply.starts_with("HTTP/1.1 200"), "reply: {reply}");
    reply
        .split("generation=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no generation in {reply:?}"))
}

fn stop(mut h: Hotsup) {
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0), "{:#?}", h.log.all());
}

#[test]
fn twenty_saves_under_load_each_served_by_a_new_generation() {
    const SAVES: u64 = 20;
    let p = Project::new("fn main() {}\n");
    let h = p.run(&["--drain-timeout", "3s"], &[], "info");
    let addr = h.addr("http");
    let first = swapped(&h, 1);
    assert_eq!(first["first"], json!(true));
    let traffic = Traffic::start(addr);
    traffic.wait_ok(5);
    for g in 2..=SAVES + 1 {
        p.save("main.rs", &format!("fn main() {{ /* save {g} */ }}\n"));
        let line = swapped(&h, g);
        assert_eq!(line["path"], json!("src/main.rs"), "{line}");
        assert!(
            line["build_ms"].is_u64() && line["swap_ms"].is_u64(),
            "{line}"
        );
        // The first request after the line is answered by the new code.
        assert_eq!(answered_by(addr), g, "request after swapped {g}");
        // The old generation drains while the load goes on (so that no more
        // than --max-draining pile up and get killed with requests in
        // flight).
        h.event(
            "drained",
            &[
                ("generation", json!(g - 1)),
                ("status", json!("exited with code 0")),
            ],
        );
        traffic.wait_ok(5);
    }
    let reports = traffic.stop();
    assert_no_failures(&reports);
    let mut seen = std::collections::BTreeSet::new();
    for (_, r) in &reports {
        seen.extend(r.generations_seen());
    }
    assert_eq!(seen, (1..=SAVES + 1).collect(), "generations that answered");
    // One build per save (and the first), and never one the build itself
    // caused by writing bin/app.
    assert_eq!(p.builds() as u64, SAVES + 1);
    assert_eq!(h.log.count_events("build_started", &[]) as u64, SAVES + 1);
    assert_eq!(h.log.count_events("build_failed", &[]), 0);
    assert!(zombies_of(h.pid).is_empty());
    stop(h);
}

#[test]
fn a_broken_build_prints_its_errors_and_changes_nothing() {
    let p = Project::new("fn main() {}\n");
    let h = p.run(&["--drain-timeout", "3s"], &[], "info");
    let addr = h.addr("http");
    swapped(&h, 1);
    let traffic = Traffic::start(addr);
    traffic.wait_ok(5);

    p.save("main.rs", "fn main() { BROKEN }\n");
    let failed = h.event("build_failed", &[("path", json!("src/main.rs"))]);
    assert_eq!(failed["serving"], json!(1), "{failed}");
    assert_eq!(failed["status"], json!("exited with code 1"), "{failed}");
    // The compiler's output reached hotsup's stderr as it was printed.
    assert!(
        h.log.all().iter().any(|l| l == BUILD_ERROR),
        "the build's error is not in hotsup's output"
    );
    // Nothing was started; generation 1 serves on.
    assert_eq!(h.log.count_events("spawned", &[]), 1);
    assert_eq!(answered_by(addr), 1);
    traffic.wait_ok(10);

    // The next good save upgrades.
    p.save("main.rs", "fn main() { /* fixed */ }\n");
    swapped(&h, 2);
    assert_eq!(answered_by(addr), 2);
    h.event("drained", &[("generation", json!(1))]);
    traffic.wait_ok(5);
    assert_no_failures(&traffic.stop());
    assert_eq!(p.builds(), 3);
    stop(h);
}

/// Writes 50 files on a schedule, one every 4 ms (so that a late write
/// does not delay the others), as a formatter or a checkout does. Returns
/// the widest gap between two writes and the whole burst's length.
fn burst(p: &Project, round: u32) -> (Duration, Duration) {
    let start = Instant::now();
    let mut last = start;
    let mut widest = Duration::ZERO;
    for i in 0..50u32 {
        let at = start + Duration::from_millis(4) * i;
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        p.save(
            &format!("mod{}.rs", i % 5),
            &format!("// round {round} write {i}\n"),
        );
        widest = widest.max(last.elapsed());
        last = Instant::now();
    }
    (widest, start.elapsed())
}

/// build_started events in lines `from..to` of the log.
fn builds_between(h: &Hotsup, from: usize, to: usize) -> Vec<Value> {
    h.log.all()[from..to]
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "build_started")
        .collect()
}

#[test]
fn a_burst_of_fifty_writes_is_one_build() {
    // The quiet period is longer than a loaded 2-core machine usually stalls
    // a thread. What is tested is that a burst spread over 200 ms (longer
    // than a tick of notify's debouncers, which emit each event once it is
    // old enough rather than after quiet) starts one build.
    const QUIET: Duration = Duration::from_millis(500);
    let p = Project::new("fn main() {}\n");
    let h = p.run(&["--debounce", "500ms"], &[], "info");
    let (mut from, _) = h.log.wait_event_from(0, "swapped", &[], WAIT);
    for round in 1..=3 {
        let (widest, length) = burst(&p, round);
        // A save after the burst's swap: any other build the burst caused
        // would have started before this one.
        let (swap, _) = h.log.wait_event_from(from + 1, "swapped", &[], WAIT);
        let sentinel = format!("src/sentinel{round}.rs");
        p.save(&format!("sentinel{round}.rs"), "// after the burst\n");
        let (i, _) =
            h.log
                .wait_event_from(swap, "build_started", &[("path", json!(sentinel))], WAIT);
        let (done, _) = h
            .log
            .wait_event_from(i, "swapped", &[("path", json!(sentinel))], WAIT);
        if widest >= QUIET {
            // The machine stalled the writer longer than the quiet period:
            // the burst may rightly have been two. Try again.
            eprintln!("round {round}: the burst stalled ({widest:?} between two writes); again");
            from = done;
            continue;
        }
        let builds = builds_between(&h, from + 1, i);
        assert_eq!(
            builds.len(),
            1,
            "one build for the burst of 50 writes over {length:?}: {builds:#?}"
        );
        stop(h);
        return;
    }
    panic!("three bursts in a row were stalled by the machine");
}

#[test]
fn writes_under_target_and_ignored_paths_trigger_nothing() {
    let p = Project::new("fn main() {}\n");
    std::fs::create_dir_all(p.root.join(".git")).unwrap();
    std::fs::create_dir_all(p.root.join("logs")).unwrap();
    std::fs::write(p.root.join(".gitignore"), "*.log\nlogs/\n").unwrap();
    std::fs::write(p.root.join("src/.ignore"), "generated.rs\n").unwrap();
    // The whole project, target/ and all; debug shows every change that
    // counted (`watch_change`).
    let control = p.root.join("control.sock");
    let mut cmd = hotsup_command(
        &[
            "--watch",
            ".",
            "--build",
            "./build.sh",
            "--watch-ignore",
            "*.tmp",
            "--control",
            control.to_str().unwrap(),
            "-l",
            "http=127.0.0.1:0",
        ],
        &["./bin/app"],
    );
    cmd.current_dir(&p.root).env("RUST_LOG", "debug");
    let h = Hotsup::from_child(cmd.spawn().expect("spawn hotsup"));
    swapped(&h, 1);

    let ignored = [
        "target/debug/app",
        "target/debug/deps/lib.rlib",
        "target/deep/er/file",
        ".git/index",
        "server.log",
        "src/debug.log",
        "logs/today.txt",
        "src/generated.rs",
        "notes.tmp",
        "src/.main.rs.swp",
        "src/main.rs~",
    ];
    for rel in ignored {
        let path = p.root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "x\n").unwrap();
    }
    // Then one that counts: inotify reports in order, so every write above
    // was seen (and filtered) before it.
    p.save("ok.rs", "// counts\n");
    let (i, _) = h
        .log
        .wait_event_from(0, "build_started", &[("path", json!("src/ok.rs"))], WAIT);
    let changes: Vec<String> = h.log.all()[..i]
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "watch_change")
        .map(|e| e["path"].as_str().unwrap_or_default().to_string())
        .collect();
    // Nor what hotsup and the build wrote themselves: the control socket,
    // and COMMAND (the build's output).
    for rel in ignored.iter().chain(&["control.sock", "bin/app"]) {
        let abs = p.root.join(rel).display().to_string();
        assert!(
            !changes.contains(&abs),
            "{rel} counted as a change: {changes:#?}"
        );
    }
    assert!(
        changes.contains(&p.root.join("src/ok.rs").display().to_string()),
        "{changes:#?}"
    );
    // The first build, and the one for src/ok.rs.
    assert_eq!(h.log.count_events("build_started", &[]), 2);
    swapped(&h, 2);
    assert_eq!(p.builds(), 2);
    stop(h);
}

#[test]
fn a_failed_first_build_holds_connections_until_a_good_one() {
    const CLIENTS: usize = 4;
    let p = Project::new("fn main() { BROKEN }\n");
    let h = p.run(&[], &[], "info");
    let addr = h.addr("http");
    let failed = h.event("build_failed", &[]);
    assert_eq!(failed["serving"], Value::Null, "{failed}");
    assert!(!p.root.join("bin/app").exists());

    // Clients connect (the held socket's backlog accepts them) and wait.
    let (tx, rx) = std::sync::mpsc::channel();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
                s.set_read_timeout(Some(WAIT)).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .unwrap();
                tx.send(()).unwrap();
                let mut reply = String::new();
                std::io::Read::read_to_string(&mut s, &mut reply).expect("read");
                reply
            })
        })
        .collect();
    for _ in 0..CLIENTS {
        rx.recv_timeout(WAIT).expect("a client connected");
    }
    assert_eq!(
        h.log.count_events("spawned", &[]),
        0,
        "nothing to start yet"
    );

    p.save("main.rs", "fn main() {}\n");
    let first = swapped(&h, 1);
    assert_eq!(first["first"], json!(true));
    for c in clients {
        let reply = c.join().unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("generation=1"), "{reply}");
    }
    assert_eq!(h.log.count_events("start_failed", &[]), 0);
    stop(h);
}

/// The lines of an SSE stream from `GET /events`.
fn events_stream(addr: SocketAddr) -> (TcpStream, Stream) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect livereload");
    s.write_all(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let lines = follow_lines(s.try_clone().unwrap(), "sse");
    (s, lines)
}

#[test]
fn livereload_tells_clients_only_once_the_new_generation_is_ready() {
    let p = Project::new("fn main() {}\n");
    let mode = p.root.join("mode");
    let h = p.run(
        &["--livereload", "127.0.0.1:0", "--ready-timeout", "2s"],
        &[
            "--mode-file",
            mode.to_str().unwrap(),
            "--ready-delay-ms",
            "300",
        ],
        "info",
    );
    let addr = h.addr("http");
    let lr: SocketAddr = h.event("livereload", &[])["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    swapped(&h, 1);

    // The snippet, and a client on the events endpoint.
    let mut js = String::new();
    {
        let mut s = TcpStream::connect_timeout(&lr, WAIT).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(b"GET /livereload.js HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        std::io::Read::read_to_string(&mut s, &mut js).unwrap();
    }
    assert!(js.starts_with("HTTP/1.1 200"), "{js}");
    assert!(js.contains("EventSource"), "{js}");
    let (_sse, sse) = events_stream(lr);
    sse.wait(&["text/event-stream"]);
    let (i, _) = sse.wait_from(0, &["event: hello"], WAIT);
    sse.wait_from(i, &["data: 1"], WAIT);

    // A generation that never becomes ready: no reload.
    std::fs::write(&mode, "never-ready").unwrap();
    p.save("main.rs", "fn main() { /* 2 */ }\n");
    h.event("upgrade_failed", &[("generation", json!(2))]);
    // One that does: a reload, once it is ready.
    std::fs::write(&mode, "serve").unwrap();
    p.save("main.rs", "fn main() { /* 3 */ }\n");
    let spawned = h.event("spawned", &[("generation", json!(3))]);
    assert!(spawned.is_object());
    let (i, _) = sse.wait_from(0, &["event: reload"], WAIT);
    let (_, data) = sse.wait_from(i + 1, &["data: "], WAIT);
    assert_eq!(
        data,
        "data: 3",
        "the first reload must be for generation 3: {:#?}",
        sse.all()
    );
    // Told after the new generation answers.
    assert_eq!(answered_by(addr), 3);
    h.event("ready", &[("generation", json!(3))]);
    stop(h);
}

#[test]
fn a_crash_in_watch_mode_waits_for_the_next_save() {
    let p = Project::new("fn main() {}\n");
    let mode = p.root.join("mode");
    std::fs::write(&mode, "crash-after-ready").unwrap();
    let h = p.run(
        // Whatever --restart says.
        &["--restart", "always"],
        &[
            "--mode-file",
            mode.to_str().unwrap(),
            "--crash-after-ms",
            "100",
        ],
        "info",
    );
    let addr = h.addr("http");
    swapped(&h, 1);
    h.event("crashed", &[("generation", json!(1))]);
    h.event("waiting_for_upgrade", &[]);
    assert_eq!(h.log.count_events("restart_scheduled", &[]), 0);
    assert_eq!(h.log.count_events("spawned", &[]), 1);

    std::fs::write(&mode, "serve").unwrap();
    p.save("main.rs", "fn main() { /* fixed */ }\n");
    swapped(&h, 2);
    assert_eq!(answered_by(addr), 2);
    stop(h);
}

/// Threads of process `pid`.
fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn without_watch_there_is_no_watcher_thread() {
    let h = Hotsup::run(&["-l", "http=127.0.0.1:0"], &[example("testchild")]);
    h.ready(1);
    // The event loop and the log writer.
    assert_eq!(threads(h.pid), 2);
    drop(h);

    // With --watch, notify's thread is the one more.
    let p = Project::new("fn main() {}\n");
    let h = p.run(&[], &[], "info");
    swapped(&h, 1);
    assert_eq!(threads(h.pid), 3);
    stop(h);
}
