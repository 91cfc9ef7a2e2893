//! `--config FILE`: options from a TOML file, re-read at every upgrade;
//! listeners added, renamed and removed at an upgrade.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::process::Signal;
use serde_json::Value;

use crate::bad_input::{USAGE, check};
use crate::upgrade::{Traffic, assert_no_failures};
use crate::util::{
    Hotsup, WAIT, client, environ_var, eventually, example, hotsup_bin, http_get, json, tempdir,
    text,
};

/// `hotsup upgrade` refused (the config file cannot be used).
const REFUSED: i32 = 4;

/// `hotsup run --config FILE ARGS`: no COMMAND on the command line.
fn run_with(file: &Path, args: &[&str]) -> Hotsup {
    let mut cmd = Command::new(hotsup_bin());
    cmd.arg("run")
        .args(["--log-format", "json", "--config"])
        .arg(file)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Hotsup::spawn(cmd)
}

fn toml_str(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).unwrap()
}

/// A config file for testchild answering on every listener, HTTP on `http`.
fn testchild_file(listen: &[String], extra: &str) -> String {
    let listen: Vec<String> = listen.iter().map(toml_str).collect();
    format!(
        "# written by the test\nlisten = [{}]\ndrain-timeout = \"5s\"\n{extra}\ncommand = [{}, \"--dump-listeners\", \"--http-on\", \"http\"]\n",
        listen.join(", "),
        toml_str(example("testchild").to_string_lossy()),
    )
}

fn status(sock: &Path) -> Value {
    let out = client(sock, &["status", "--json"]);
    assert!(out.status.success(), "status: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// `hotsup status`'s entry for listener `name`.
fn listener<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .find(|l| l["name"] == name)
}

fn answer(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

fn answer_unix(path: &Path) -> String {
    let mut s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).expect("socket file").ino()
}

/// A list in an event: names joined with `,`.
fn strings(v: &Value) -> Vec<String> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a list: {v}"));
    s.split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_file_alone_starts_hotsup_and_the_command_line_wins() {
    let dir = tempdir();
    let file = dir.path().join("hotsup.toml");
    std::fs::write(
        &file,
        testchild_file(
            &["http=127.0.0.1:0".into()],
            "env = [\"WHO=file\", \"ONLY_FILE=1\"]\nworkers = 1",
        ),
    )
    .unwrap();
    let mut h = run_with(&file, &["--env", "WHO=cli"]);
    let pid = h.ready(1);
    assert!(http_get(h.addr("http")).contains("generation=1"));
    // `env` from the command line replaces the file's whole `env`.
    assert_eq!(environ_var(pid, "WHO").as_deref(), Some("cli"));
    assert_eq!(environ_var(pid, "ONLY_FILE"), None);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    h.assert_left_nothing();
}

#[test]
fn a_bad_file_at_start_is_one_line_naming_its_line_and_key() {
    let dir = tempdir();
    let file = dir.path().join("bad.toml");
    let shown = file.display().to_string();
    let cases: &[(&str, &[&str])] = &[
        (
            "listen = [\"127.0.0.1:0\"]\ndrain_timeout = \"5s\"\n",
            &[
                ":2:",
                "`drain_timeout`",
                "unknown key",
                "did you mean `drain-timeout`",
            ],
        ),
        (
            "listen = [\"127.0.0.1:0\"]\n\nworkers = \"many\"\n",
            &[":3:", "`workers`", "many"],
        ),
        (
            "listen = [\"127.0.0.1:0\"]\ndrain-timeout = \"soon\"\n",
            &[":2:", "`drain-timeout`", "soon"],
        ),
        ("workers = 2\nlisten = [\"a\" \"b\"]\n", &[":2:"]),
        ("[run]\nlisten = []\n", &[":1:", "`run`", "table"]),
        ("listen = \"nonsense\"\n", &[":1:", "`listen`", "nonsense"]),
        ("command = \"./app\"\n", &[":1:", "`command`", "array"]),
        ("config = \"other.toml\"\n", &[":1:", "`config`"]),
    ];
    for (body, mentions) in cases {
        std::fs::write(&file, body).unwrap();
        let mut mentions = mentions.to_vec();
        mentions.push(&shown);
        check(
            &["run", "--config", &shown, "--", "/bin/true"],
            USAGE,
            &mentions,
        );
    }
    let missing = dir.path().join("missing.toml").display().to_string();
    check(
        &["run", "--config", &missing, "--", "/bin/true"],
        USAGE,
        &[&missing, "No such file"],
    );
}

/// Adds a listener at an upgrade under load on the existing one, changes
/// the environment and renames a Unix listener, through SIGHUP.
#[test]
fn a_listener_added_at_an_upgrade_serves_and_the_others_lose_nothing() {
    let dir = tempdir();
    let file = dir.path().join("hotsup.toml");
    let sock = dir.path().join("app.sock");
    let unix = |name: &str| format!("{name}=unix:{}", sock.display());
    std::fs::write(
        &file,
        testchild_file(
            &["http=127.0.0.1:0".into(), unix("old")],
            "env = [\"WHO=one\"]",
        ),
    )
    .unwrap();
    let mut h = run_with(&file, &[]);
    let http = h.addr("http");
    h.ready(1);
    assert_eq!(answer_unix(&sock), "old\n");
    let sock_inode = inode(&sock);
    let traffic = Traffic::start(http);
    traffic.wait_ok(20);

    std::fs::write(
        &file,
        testchild_file(
            &[
                "http=127.0.0.1:0".into(),
                unix("new"),
                "admin=127.0.0.1:0".into(),
            ],
            "env = [\"WHO=two\"]",
        ),
    )
    .unwrap();
    h.signal(Signal::HUP);
    let reloaded = h.event("config_reloaded", &[]);
    assert_eq!(strings(&reloaded["added"]), ["new", "admin"], "{reloaded}");
    assert_eq!(strings(&reloaded["removed"]), ["old"], "{reloaded}");
    assert_eq!(
        strings(&reloaded["changed"]),
        ["env", "listen"],
        "{reloaded}"
    );
    let pid2 = h.ready(2);
    h.event("drained", &[("generation", json!(1))]);
    traffic.wait_ok(20);
    let reports = traffic.stop();
    assert_no_failures(&reports);

    // The new port serves; the renamed socket is the same socket.
    assert_eq!(answer(h.addr("admin")), "admin\n");
    assert_eq!(answer_unix(&sock), "new\n");
    assert_eq!(inode(&sock), sock_inode, "the Unix socket was bound again");
    // The unchanged listener was never bound again.
    assert_eq!(
        h.log.count_events("listening", &[("name", json!("http"))]),
        1
    );
    assert_eq!(environ_var(pid2, "WHO").as_deref(), Some("two"));
    // `old` went with generation 1, whose socket file is now `new`'s.
    h.event("listener_closed", &[("name", json!("old"))]);
    assert_eq!(inode(&sock), sock_inode, "closing `old` removed the file");

    // And an ordinary upgrade with the file unchanged changes nothing.
    h.upgrade();
    h.ready(3);
    let again = h.log.count_events("config_reloaded", &[]);
    assert_eq!(again, 2);
    let last = h
        .log
        .events()
        .into_iter()
        .rfind(|e| e["event"] == "config_reloaded")
        .unwrap();
    assert!(strings(&last["changed"]).is_empty(), "{last}");
    assert!(strings(&last["added"]).is_empty(), "{last}");
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    assert!(!sock.exists(), "hotsup left its socket file");
    h.assert_left_nothing();
}

#[test]
fn a_removed_listener_refuses_only_after_its_last_generation_is_gone() {
    let dir = tempdir();
    let file = dir.path().join("hotsup.toml");
    let control = dir.path().join("control.sock");
    let mode = dir.path().join("mode");
    // Generation 1 ignores its drain and holds on until the deadline.
    std::fs::write(&mode, "ignore-drain").unwrap();
    let body = |listen: &[String]| {
        let listen: Vec<String> = listen.iter().map(toml_str).collect();
        format!(
            "listen = [{}]\ndrain-timeout = \"3s\"\ncontrol = {}\ncommand = [{}, \"--dump-listeners\", \"--mode-file\", {}]\n",
            listen.join(", "),
            toml_str(control.to_string_lossy()),
            toml_str(example("testchild").to_string_lossy()),
            toml_str(mode.to_string_lossy()),
        )
    };
    std::fs::write(
        &file,
        body(&["main=127.0.0.1:0".into(), "extra=127.0.0.1:0".into()]),
    )
    .unwrap();
    let mut h = run_with(&file, &[]);
    let extra = h.addr("extra");
    h.ready(1);
    assert_eq!(answer(extra), "extra\n");
    std::fs::write(&mode, "serve").unwrap();
    std::fs::write(&file, body(&["main=127.0.0.1:0".into()])).unwrap();

    let out = client(&control, &["upgrade"]);
    assert!(out.status.success(), "upgrade: {}", text(&out));
    let reloaded = h.event("config_reloaded", &[]);
    assert_eq!(strings(&reloaded["removed"]), ["extra"], "{reloaded}");
    h.ready(2);
    // Generation 1 still holds `extra`: the port takes connections.
    let s = status(&control);
    assert_eq!(
        s["draining"][0]["generation"], 1,
        "generation 1 is gone already: {s}"
    );
    let e = listener(&s, "extra").expect("extra still open");
    assert_eq!(e["removed"], true, "{e}");
    assert_eq!(e["generations"], json!([1]), "{e}");
    assert_eq!(listener(&s, "main").unwrap()["generations"], json!([1, 2]));
    TcpStream::connect(extra).expect("extra refused while generation 1 lives");

    // Killed at its drain deadline; only then is `extra` closed.
    let closed = h.event("listener_closed", &[("name", json!("extra"))]);
    let events = h.log.events();
    let at = |name: &str, g: u64| {
        events
            .iter()
            .position(|e| e["event"] == name && e["generation"] == g)
            .unwrap_or_else(|| panic!("no {name} of generation {g}"))
    };
    let closed_at = events.iter().position(|e| *e == closed).unwrap();
    assert!(
        at("reaped", 1) < closed_at,
        "closed before generation 1 was gone"
    );
    let err = TcpStream::connect(extra).expect_err("extra still accepts");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let s = status(&control);
    assert!(listener(&s, "extra").is_none(), "{s}");
    assert_eq!(listener(&s, "main").unwrap()["generations"], json!([2]));
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    h.assert_left_nothing();
}

#[test]
fn a_broken_file_or_a_port_in_use_refuses_the_upgrade_and_changes_nothing() {
    let dir = tempdir();
    let file = dir.path().join("hotsup.toml");
    let control = dir.path().join("control.sock");
    let control_line = format!("control = {}", toml_str(control.to_string_lossy()));
    let good = testchild_file(&["http=127.0.0.1:0".into()], &control_line);
    std::fs::write(&file, &good).unwrap();
    let mut h = run_with(&file, &[]);
    let http = h.addr("http");
    h.ready(1);
    let before = status(&control);

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let shown = file.display().to_string();
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            format!("{good}\nworkers = \"many\"\n"),
            vec![format!("{shown}:"), "`workers`".into()],
        ),
        (good.replace("listen = [", "listen = [\n"), vec![]),
        ("listen = [".into(), vec![format!("{shown}:1:")]),
        (
            testchild_file(
                &["http=127.0.0.1:0".into(), format!("busy={taken_addr}")],
                &control_line,
            ),
            vec![taken_addr.clone(), "in use".into()],
        ),
        (
            good.replace(&*example("testchild").to_string_lossy(), "/nonexistent/app"),
            vec!["/nonexistent/app".into()],
        ),
    ];
    let mut refused = 0;
    for (body, mentions) in &cases {
        std::fs::write(&file, body).unwrap();
        let out = client(&control, &["upgrade"]);
        let said = text(&out);
        if mentions.is_empty() {
            // A file that only looks different: the upgrade goes ahead.
            assert!(out.status.success(), "{said}");
            continue;
        }
        refused += 1;
        assert_eq!(out.status.code(), Some(REFUSED), "{said}");
        assert_eq!(said.trim_end().lines().count(), 1, "{said}");
        for m in mentions {
            assert!(said.contains(m.as_str()), "{said:?} does not mention {m:?}");
        }
        // The reply can overtake the log line: wait for it.
        eventually("one config_rejected per refusal", || {
            h.log.count_events("config_rejected", &[]) == refused
        });
        assert!(http_get(http).contains("generation="), "stopped serving");
    }
    // Nothing changed beyond the one upgrade the harmless edit made.
    let after = status(&control);
    assert_eq!(after["serving"]["generation"], 2, "{after}");
    assert_eq!(after["listeners"].as_array().unwrap().len(), 1, "{after}");
    assert_eq!(
        after["listeners"][0]["address"], before["listeners"][0]["address"],
        "{after}"
    );
    assert_eq!(h.log.count_events("spawned", &[]), 2);
    assert_eq!(h.log.count_events("listening", &[]), 1);
    // The port in use was not taken over; the test still owns it.
    drop(taken);

    // Fixed, the next upgrade goes ahead.
    std::fs::write(&file, &good).unwrap();
    let out = client(&control, &["upgrade"]);
    assert!(out.status.success(), "{}", text(&out));
    h.ready(3);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    h.assert_left_nothing();
}
