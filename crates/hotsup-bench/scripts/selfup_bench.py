#!/usr/bin/env python3
"""How long `hotsup upgrade --self` takes, from the command to the new hotsup
answering `status`.

    python3 crates/hotsup-bench/scripts/selfup_bench.py HOTSUP APP [N] [WORKERS]

Copies HOTSUP to a private directory (its install path), runs
`hotsup run -l 127.0.0.1:0 --workers WORKERS -- APP`, then N times (default
50): puts a fresh copy of the binary at the install path (a new inode, as a
package upgrade does) and times `hotsup upgrade --self` from its start to its
exit. The client exits once the control socket answers `status` from the new
binary, so that is the time asked for. Also reads the `exec_us` of each
`self_upgraded` event: from the old process's export of the state to the new
process having adopted it. Checks that hotsup's pid and the workers' pids
never change. Loopback only; every wait is bounded.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    hotsup, app = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    workers = sys.argv[4] if len(sys.argv) > 4 else "1"
    with tempfile.TemporaryDirectory(prefix="hotsup-selfup-") as d:
        os.chmod(d, 0o700)
        installed = os.path.join(d, "hotsup")
        shutil.copy2(hotsup, installed)
        control = os.path.join(d, "control.sock")
        env = dict(os.environ, XDG_RUNTIME_DIR=d, HOTSUP_RUNTIME_DIR=d, TMPDIR=d)
        p = subprocess.Popen(
            [installed, "run", "--log-format", "json", "-l", "127.0.0.1:0",
             "--workers", workers, "--control", control, "--", app],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        )
        events = []
        cond = threading.Condition()

        def follow():
            for line in p.stderr:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                with cond:
                    events.append(e)
                    cond.notify_all()

        threading.Thread(target=follow, daemon=True).start()

        def wait_for(pred, what):
            deadline = time.time() + 30
            with cond:
                while True:
                    for e in events:
                        if pred(e):
                            return e
                    left = deadline - time.time()
                    if left <= 0:
                        p.kill()
                        sys.exit("no %s within 30 s" % what)
                    cond.wait(left)

        wait_for(lambda e: e.get("event") == "ready", "ready")

        def status():
            out = subprocess.run([installed, "status", "--json", "--control", control],
                                 capture_output=True, timeout=30, check=True)
            return json.loads(out.stdout)

        before = status()
        pids = [w["pid"] for w in before["serving"]["workers"]]
        took = []
        for i in range(n):
            tmp = installed + ".new"
            shutil.copy2(hotsup, tmp)
            os.rename(tmp, installed)
            t0 = time.monotonic()
            r = subprocess.run([installed, "upgrade", "--self", "--control", control],
                               capture_output=True, text=True, timeout=60)
            t1 = time.monotonic()
            if r.returncode != 0:
                p.kill()
                sys.exit("self-upgrade %d failed (%d): %s" % (i + 1, r.returncode, r.stderr))
            took.append((t1 - t0) * 1000.0)
        wait_for(lambda e: e.get("event") == "self_upgraded" and e.get("self_upgrades") == n,
                 "the last self_upgraded")
        after = status()
        assert after["pid"] == p.pid, "hotsup's pid changed"
        assert [w["pid"] for w in after["serving"]["workers"]] == pids, "a worker changed"
        assert after["binary"]["self_upgrades"] == n
        exec_us = [e["exec_us"] / 1000.0 for e in events if e.get("event") == "self_upgraded"]
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        print("self-upgrades: %d, workers: %s, hotsup pid and worker pids unchanged" % (n, workers))
        print("command -> new hotsup answers status: p50 %.1f ms, p99 %.1f ms, max %.1f ms, mean %.1f ms"
              % (percentile(took, 50), percentile(took, 99), max(took), statistics.mean(took)))
        print("export -> adopted (exec_us): p50 %.1f ms, p99 %.1f ms, max %.1f ms"
              % (percentile(exec_us, 50), percentile(exec_us, 99), max(exec_us)))


if __name__ == "__main__":
    main()
