#!/usr/bin/env python3
"""Save-to-new-code latency of `hotsup run --watch`, next to cargo-watch with
systemfd, on the same app, with a real `cargo build`, under load.

    cargo build --release --bin hotsup --features watch
    cargo install --locked cargo-watch systemfd
    python3 crates/hotsup-bench/scripts/watch_bench.py [--saves 10]

The app is `examples/http.rs` as a crate of its own (path dependency on
hotsup-child), in a temporary directory. Every scenario edits `src/main.rs`
`--saves` times under load (new-connection and keep-alive clients on
127.0.0.1) and measures, per save:

- total: from the write of the file to the first response from a new
  process (any client's, each response names its pid);
- build: the `cargo build` itself, timed by the build wrapper;
- total - build: what the tool adds (debounce, restart or swap);
- after build: from the end of the build to that first response.

and, over the whole scenario, the requests that failed (connection error,
reset, timeout or a status other than 200).

Scenarios: hotsup with its default debounce (100 ms), with `--debounce 10ms`,
and with `--debounce 10ms --cgroup off` (no cgroup per generation); `systemfd --no-pid -s http::ADDR -- cargo watch` with its
default delay (0.5 s) and with `-d 0.1`. Loopback only; every loop is bounded.
"""

import argparse
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))

CARGO_TOML = """[package]
name = "app"
version = "0.1.0"
edition = "2024"

[dependencies]
hotsup-child = {{ path = "{repo}/crates/hotsup-child", features = ["tokio"] }}
bytes = "1"
http-body-util = "0.1"
hyper = {{ version = "1", features = ["server", "http1"] }}
hyper-util = {{ version = "0.1", features = ["tokio", "server", "server-graceful", "http1"] }}
tokio = {{ version = "1", features = ["full"] }}

[workspace]
"""

BUILD_SH = """#!/bin/sh
start=$(date +%s%N)
cargo build -q
rc=$?
end=$(date +%s%N)
echo "$start $end $rc" >> builds.txt
exit $rc
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Load:
    """Clients that keep requesting until stopped; every response's pid and
    time are kept, every failure counted."""

    def __init__(self, port, fresh=2, keepalive=1):
        self.port = port
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.failures = {}
        # pid -> time of the first response from it
        self.first_seen = {}
        self.latencies = []
        self.threads = [
            threading.Thread(target=self.run, args=(False,), daemon=True) for _ in range(fresh)
        ] + [threading.Thread(target=self.run, args=(True,), daemon=True) for _ in range(keepalive)]
        for t in self.threads:
            t.start()

    def record(self, body, sent):
        now = time.time()
        pid = None
        for part in body.split():
            if part.startswith("pid="):
                pid = int(part[4:])
        with self.lock:
            self.ok += 1
            if pid is not None and pid not in self.first_seen:
                self.first_seen[pid] = now
            self.latencies.append(now - sent)
        return pid

    def fail(self, why):
        with self.lock:
            self.failed += 1
            self.failures[why] = self.failures.get(why, 0) + 1

    def run(self, keepalive):
        conn = None
        deadline = time.time() + 1800
        while not self.stop_flag.is_set() and time.time() < deadline:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
                sent = time.time()
                conn.request("GET", "/")
                r = conn.getresponse()
                body = r.read().decode()
                if r.status != 200:
                    self.fail("status %d" % r.status)
                else:
                    self.record(body, sent)
                if not keepalive or r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.fail(type(e).__name__)
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.001)
            # A steady load, light enough to leave the build its CPU.
            time.sleep(0.005 if not keepalive else 0.002)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=30)


def wait_for(what, check, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = check()
        if v:
            return v
        time.sleep(0.002)
    raise SystemExit("timed out waiting for " + what)


def builds(app):
    try:
        with open(os.path.join(app, "builds.txt")) as f:
            return [tuple(int(x) for x in line.split()) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def scenario(name, app, port, argv, saves):
    print("== " + name, flush=True)
    log = open(os.path.join(app, name.replace(" ", "_") + ".log"), "w")
    proc = subprocess.Popen(
        argv, cwd=app, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )
    try:
        load = None
        probe = Load(port, fresh=1, keepalive=0)
        wait_for("the first response", lambda: probe.first_seen, timeout=300)
        probe.stop()
        load = Load(port)
        wait_for("load", lambda: load.ok > 20)
        rows = []
        main_rs = os.path.join(app, "src", "main.rs")
        for i in range(saves):
            before = set(load.first_seen)
            n_builds = len(builds(app))
            t0 = time.time()
            with open(main_rs, "a") as f:
                f.write("// save %d %f\n" % (i, t0))
            def fresh():
                if len(builds(app)) <= n_builds:
                    return None
                with load.lock:
                    return [p for p in load.first_seen if p not in before]

            new = wait_for("a new process", fresh)
            first = min(load.first_seen[p] for p in new)
            start, end, rc = builds(app)[-1]
            build = (end - start) / 1e9
            total = first - t0
            rows.append((total, build, total - build, first - end / 1e9))
            print(
                "  save %2d: total %7.1f ms  build %7.1f ms  total-build %6.1f ms  after build %6.1f ms"
                % (i + 1, total * 1e3, build * 1e3, (total - build) * 1e3, (first - end / 1e9) * 1e3),
                flush=True,
            )
            # Let the old process drain and the load settle.
            time.sleep(1.5)
        load.stop()
        requests = load.ok + load.failed
        med = [statistics.median(c) * 1e3 for c in zip(*rows)]
        mx = [max(c) * 1e3 for c in zip(*rows)]
        print(
            "  median: total %.0f ms, build %.0f ms, total-build %.1f ms (max %.1f), after build %.1f ms (max %.1f)"
            % (med[0], med[1], med[2], mx[2], med[3], mx[3])
        )
        lat = sorted(load.latencies)
        p99 = lat[int(len(lat) * 0.99)] * 1e3
        worst = lat[-1] * 1e3
        print(
            "  requests %d, failed %d %s, latency p99 %.1f ms, max %.0f ms"
            % (requests, load.failed, load.failures, p99, worst),
            flush=True,
        )
        return name, med, mx, requests, load.failed, p99, worst
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


def main():
    # Cleanup (the `finally`s) runs on SIGTERM too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    ap = argparse.ArgumentParser()
    ap.add_argument("--saves", type=int, default=10)
    ap.add_argument("--hotsup", default=os.path.join(REPO, "target", "release", "hotsup"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary app")
    args = ap.parse_args()
    for tool in ["cargo-watch", "systemfd"]:
        if shutil.which(tool) is None:
            raise SystemExit(tool + " not found: cargo install --locked cargo-watch systemfd")
    tmp = tempfile.mkdtemp(prefix="hotsup-watch-bench-")
    app = os.path.join(tmp, "app")
    os.makedirs(os.path.join(app, "src"))
    with open(os.path.join(app, "Cargo.toml"), "w") as f:
        f.write(CARGO_TOML.format(repo=REPO))
    shutil.copy(os.path.join(REPO, "examples", "http.rs"), os.path.join(app, "src", "main.rs"))
    with open(os.path.join(app, "build.sh"), "w") as f:
        f.write(BUILD_SH)
    os.chmod(os.path.join(app, "build.sh"), 0o755)
    print("app: " + app + " (first build...)", flush=True)
    subprocess.run(["cargo", "build", "-q"], cwd=app, check=True)
    results = []
    try:
        for name, extra in [
            ("hotsup", []),
            ("hotsup --debounce 10ms", ["--debounce", "10ms"]),
            ("hotsup --debounce 10ms --cgroup off", ["--debounce", "10ms", "--cgroup", "off"]),
        ]:
            port = free_port()
            argv = [
                args.hotsup, "run", "--log-format", "json", "--watch", "src", "--build", "./build.sh",
                "--control", os.path.join(app, "ctl.sock"), "-l", "127.0.0.1:%d" % port,
            ] + extra + ["--", "./target/debug/app"]
            results.append(scenario(name, app, port, argv, args.saves))
        for name, extra in [("cargo-watch + systemfd", []), ("cargo-watch -d 0.1 + systemfd", ["-d", "0.1"])]:
            port = free_port()
            argv = [
                "systemfd", "--no-pid", "-s", "http::127.0.0.1:%d" % port, "--",
                "cargo", "watch", "-q", "-w", "src",
            ] + extra + ["-s", "./build.sh && exec ./target/debug/app"]
            results.append(scenario(name, app, port, argv, args.saves))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(
        "\n| scenario | saves | save -> new process answers (median) | build (median) "
        "| minus the build (median / max) | build end -> new process answers (median / max) "
        "| requests | failed | request latency p99 / max |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, med, mx, requests, failed, p99, worst in results:
        print(
            "| %s | %d | %.0f ms | %.0f ms | %.1f / %.1f ms | %.1f / %.1f ms | %d | %d | %.1f / %.0f ms |"
            % (name, args.saves, med[0], med[1], med[2], mx[2], med[3], mx[3], requests, failed, p99, worst)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
