#!/usr/bin/env python3
"""hotsup's resident memory at rest, for two builds side by side.

    python3 crates/hotsup-bench/scripts/rss_at_rest.py OLD_HOTSUP NEW_HOTSUP [TESTCHILD]

Each build runs `hotsup run -l 127.0.0.1:0 -- testchild` three times,
alternating with the other; VmRSS is read 1 s after generation 1 is ready and
again 1 s after five upgrades (SIGUSR2), with the number of threads. Loopback
only; every wait is bounded.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run(binary, child, control):
    p = subprocess.Popen(
        [binary, "run", "--log-format", "json", "-l", "127.0.0.1:0", "--control", control, "--", child],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def wait_ready(g):
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                e = json.loads(p.stderr.readline())
            except ValueError:
                continue
            if e.get("event") == "ready" and e.get("generation") == g:
                return
        p.kill()
        raise SystemExit("generation %d was not ready within 30 s" % g)

    try:
        wait_ready(1)
        time.sleep(1)
        start = rss(p.pid)
        threads = len(os.listdir("/proc/%d/task" % p.pid))
        for g in range(2, 7):
            os.kill(p.pid, signal.SIGUSR2)
            wait_ready(g)
        time.sleep(1)
        return start, rss(p.pid), threads
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    old, new = sys.argv[1], sys.argv[2]
    child = sys.argv[3] if len(sys.argv) > 3 else os.path.join(REPO, "target", "debug", "examples", "testchild")
    with tempfile.TemporaryDirectory() as d:
        for _ in range(3):
            for tag, binary in [("old", old), ("new", new)]:
                start, after, threads = run(binary, child, os.path.join(d, tag + ".sock"))
                print("%s: %d KiB at rest, %d KiB after 5 upgrades, %d threads" % (tag, start, after, threads), flush=True)


if __name__ == "__main__":
    main()
