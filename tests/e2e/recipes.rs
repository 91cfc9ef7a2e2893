//! The hotsup-child recipes (`crates/hotsup-child/examples/recipe_*.rs`):
//! under the real supervisor, natively and with `--fds systemd`, through
//! upgrades under load with no failed request; and run on their own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal};

use crate::upgrade::{Traffic, assert_no_failures};
use crate::util::{Hotsup, WAIT, alive, example, json, wait_dead, zombies_of};

const UPGRADES: u64 = 3;

/// Upgrades under load: every request answered, every generation served.
fn upgrades_under_load(recipe: &str, fds: &str) {
    let mut h = Hotsup::run(
        &[
            "--fds",
            fds,
            "-l",
            "http=127.0.0.1:0",
            "--drain-timeout",
            "5s",
        ],
        &[example(recipe)],
    );
    let addr = h.addr("http");
    let mut pids = vec![h.ready(1)];
    let traffic = Traffic::start(addr);
    traffic.wait_ok(10);
    for g in 2..=UPGRADES + 1 {
        h.upgrade();
        pids.push(h.ready(g));
        h.event(
            "drained",
            &[
                ("generation", json!(g - 1)),
                ("status", json!("exited with code 0")),
            ],
        );
        traffic.wait_ok(10);
    }
    let reports = traffic.stop();
    assert_no_failures(&reports);
    let mut seen = std::collections::BTreeSet::new();
    for (_, r) in &reports {
        seen.extend(r.pids_seen());
    }
    for pid in &pids {
        assert!(
            seen.contains(&(*pid as u32)),
            "{recipe}: pid {pid} never answered"
        );
    }
    for pid in &pids[..pids.len() - 1] {
        assert!(!alive(*pid), "{recipe}: old generation {pid} still alive");
    }
    assert!(zombies_of(h.pid).is_empty());
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    assert!(wait_dead(*pids.last().unwrap(), WAIT));
}

/// Run with `cargo run`: binds its fallback, answers, and drains on
/// `SIGTERM` with exit code 0.
fn standalone(recipe: &str) {
    let mut child = Command::new(example(recipe))
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the recipe");
    let pid = child.id();
    // Killed on every exit path, whatever the assertions below do.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().expect("piped stdout");
    let mut child = Reap(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx.recv_timeout(WAIT).expect("the recipe printed nothing");
    let addr: SocketAddr = line
        .split_whitespace()
        .skip_while(|w| *w != "on")
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);

    let response = get(addr);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.ends_with(&format!("pid={pid} generation=0\n")),
        "{response}"
    );

    rustix::process::kill_process(Pid::from_raw(pid as i32).expect("a pid"), Signal::TERM)
        .expect("signal the recipe");
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{recipe} did not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0), "{recipe} after SIGTERM");
}

/// One `GET /` with `Connection: close`; the whole response.
fn get(addr: SocketAddr) -> String {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(WAIT)).expect("timeout");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut response = String::new();
    conn.read_to_string(&mut response).expect("read");
    response
}

#[test]
fn axum_recipe() {
    upgrades_under_load("recipe_axum", "native");
    upgrades_under_load("recipe_axum", "systemd");
    standalone("recipe_axum");
}

#[test]
fn hyper_recipe() {
    upgrades_under_load("recipe_hyper", "native");
    upgrades_under_load("recipe_hyper", "systemd");
    standalone("recipe_hyper");
}

#[test]
fn actix_recipe() {
    upgrades_under_load("recipe_actix", "native");
    upgrades_under_load("recipe_actix", "systemd");
    standalone("recipe_actix");
}

#[test]
fn std_recipe() {
    upgrades_under_load("recipe_std", "native");
    upgrades_under_load("recipe_std", "systemd");
    standalone("recipe_std");
}
