//! The drain recipes of `examples/recipes/`: unmodified Node.js, Go
//! `net/http`, gunicorn and uvicorn servers under `hotsup run --fds
//! systemd`, upgraded under keep-alive load, lose no request.
//!
//! A runtime that is not installed skips its test with `skipped: ...` on
//! stderr; with `HOTSUP_REQUIRE_RECIPES` set (as `.ci/run` does, after
//! installing them) that is a failure instead. The frameworks' default
//! drains, which do lose requests, are measured side by side by
//! `cargo run --release -p hotsup-bench --bin recipe-drains` (see the
//! README).

use std::io::Write;
use std::path::Path;

use hotsup_bench::recipes::{App, Drain, Runtime, Unavailable};
use rustix::process::Signal;

use crate::upgrade::{Traffic, assert_no_failures};
use crate::util::{Hotsup, WAIT, json};

const UPGRADES: u64 = 10;

/// The app's runtime, or `None` after saying why the test is skipped.
fn runtime(app: App) -> Option<Runtime> {
    // The Go server is built here, once per test run (its build cache is
    // kept there too).
    let build_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("recipes");
    match Runtime::find(app, &build_dir) {
        Ok(rt) => Some(rt),
        Err(Unavailable::Broken(why)) => panic!("recipe {}: {why}", app.name()),
        Err(Unavailable::Missing(why)) => {
            assert!(
                std::env::var_os("HOTSUP_REQUIRE_RECIPES").is_none(),
                "recipe {}: {why}, but HOTSUP_REQUIRE_RECIPES is set",
                app.name()
            );
            // Past libtest's capture: a skip is never a silent pass.
            let _ = writeln!(std::io::stderr(), "skipped: recipe {}: {why}", app.name());
            None
        }
    }
}

fn recipe_loses_no_request(app: App) {
    let Some(rt) = runtime(app) else { return };
    let setup = rt.setup(Drain::Recipe);
    let mut args = vec!["-l", "http=127.0.0.1:0", "--drain-timeout", "20s"];
    args.extend(setup.hotsup_args.iter().map(String::as_str));
    let mut h = Hotsup::run(&args, &setup.command);
    let addr = h.addr("http");
    h.ready(1);
    let traffic = Traffic::start(addr);
    traffic.wait_ok(20);
    for g in 2..=UPGRADES + 1 {
        h.upgrade();
        h.ready(g);
        h.event("drained", &[("generation", json!(g - 1))]);
        traffic.wait_ok(20);
    }
    let reports = traffic.stop();
    // Each old generation finished its drain by itself (a kill at the
    // deadline would also explain failures: checked first).
    assert_eq!(
        h.log.count_events("killed", &[]),
        0,
        "{} ({}): an old generation was killed at the drain deadline",
        app.name(),
        rt.version
    );
    assert_no_failures(&reports);
    let mut seen = std::collections::BTreeSet::new();
    for (_, r) in &reports {
        seen.extend(r.generations_seen());
    }
    let all: std::collections::BTreeSet<u64> = (1..=UPGRADES + 1).collect();
    assert_eq!(seen, all, "{}: generations that answered", app.name());
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn node_recipe_loses_no_request() {
    recipe_loses_no_request(App::Node);
}

#[test]
fn go_recipe_loses_no_request() {
    recipe_loses_no_request(App::Go);
}

#[test]
fn gunicorn_recipe_loses_no_request() {
    recipe_loses_no_request(App::Gunicorn);
}

#[test]
fn uvicorn_recipe_loses_no_request() {
    recipe_loses_no_request(App::Uvicorn);
}
