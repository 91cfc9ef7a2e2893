#!/usr/bin/env python3
"""hotsup's resident memory after upgrades, for two builds side by side, and
where the resident pages come from (/proc/PID/smaps).

    python3 crates/hotsup-bench/scripts/rss_upgrades.py OLD_HOTSUP NEW_HOTSUP [TESTCHILD] [--runs N] [--upgrades N]

Each build runs `hotsup run -l 127.0.0.1:0 -- testchild`, alternating with
the other, `--runs` times (3). VmRSS is read 1 s after generation 1 is ready,
and again 1 s after `--upgrades` (20) upgrades (SIGUSR2, each waited for
until the new generation is ready); then the resident kilobytes of every
mapping in smaps are summed by where they come from. Loopback only; every
wait is bounded.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0])
    return out


def smaps(pid, binary):
    """Resident KiB by origin: the hotsup binary (code, read-only data,
    writable data), the heap, other anonymous memory, thread stacks, each
    shared library, and the kernel's vdso/vvar."""
    binary = os.path.realpath(binary)
    groups = {}
    name = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:
                perms = fields[1]
                path = fields[5] if len(fields) > 5 else ""
                if path == binary or os.path.basename(path) == "hotsup":
                    kind = "text" if "x" in perms else ("data" if "w" in perms else "rodata")
                    name = "hotsup " + kind
                elif path == "[heap]":
                    name = "[heap]"
                elif path == "[stack]":
                    name = "[stack]"
                elif path in ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]"):
                    name = "vdso/vvar"
                elif path == "":
                    name = "anonymous (thread stacks, mmap'd allocations)"
                else:
                    name = os.path.basename(path)
            elif fields[0] == "Rss:" and name is not None:
                groups[name] = groups.get(name, 0) + int(fields[1])
            elif fields[0] in ("Pss:", "Private_Dirty:"):
                key = "= " + fields[0].rstrip(":")
                groups[key] = groups.get(key, 0) + int(fields[1])
    return groups


def run(binary, child, control, upgrades):
    p = subprocess.Popen(
        [binary, "run", "--log-format", "json", "-l", "127.0.0.1:0", "--control", control, "--", child],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def wait_ready(g):
        deadline = time.time() + 30
        while time.time() < deadline:
            line = p.stderr.readline()
            if not line:
                break
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") == "ready" and e.get("generation") == g:
                return
        p.kill()
        raise SystemExit("generation %d was not ready within 30 s" % g)

    try:
        wait_ready(1)
        time.sleep(1)
        start = status(p.pid)
        for g in range(2, 2 + upgrades):
            os.kill(p.pid, signal.SIGUSR2)
            wait_ready(g)
        time.sleep(1)
        after = status(p.pid)
        threads = len(os.listdir("/proc/%d/task" % p.pid))
        return start, after, threads, smaps(p.pid, binary)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    opts = dict(zip(sys.argv[1:], sys.argv[2:]))
    runs = int(opts.get("--runs", 3))
    upgrades = int(opts.get("--upgrades", 20))
    args = [a for a in args if a not in (opts.get("--runs"), opts.get("--upgrades"))]
    if len(args) < 2:
        raise SystemExit(__doc__)
    old, new = args[0], args[1]
    child = args[2] if len(args) > 2 else os.path.join(REPO, "target", "debug", "examples", "testchild")
    last = {}
    with tempfile.TemporaryDirectory() as d:
        for _ in range(runs):
            for tag, binary in [("old", old), ("new", new)]:
                start, after, threads, groups = run(binary, child, os.path.join(d, tag + ".sock"), upgrades)
                print(
                    "%s: VmRSS %d KiB at start, %d KiB after %d upgrades (anon %d, file %d), %d threads"
                    % (tag, start["VmRSS"], after["VmRSS"], upgrades, after["RssAnon"], after["RssFile"], threads),
                    flush=True,
                )
                last[tag] = groups
    print("\nResident KiB by origin after %d upgrades (last run of each):" % upgrades)
    # Pss (shared pages divided among their users) and Private_Dirty (what
    # this process alone costs) are totals, not origins.
    totals = ("= Pss", "= Private_Dirty")
    names = sorted(
        (set(last["old"]) | set(last["new"])) - set(totals),
        key=lambda n: -max(last["old"].get(n, 0), last["new"].get(n, 0)),
    )
    print("| origin | old | new |\n|---|---|---|")
    for n in names:
        o, w = last["old"].get(n, 0), last["new"].get(n, 0)
        if o or w:
            print("| %s | %d | %d |" % (n, o, w))
    rss = lambda t: sum(v for k, v in last[t].items() if k not in totals)
    print("| **Rss** | %d | %d |" % (rss("old"), rss("new")))
    for k in totals:
        print("| %s | %d | %d |" % (k[2:], last["old"].get(k, 0), last["new"].get(k, 0)))


if __name__ == "__main__":
    main()
