"""gunicorn settings for running under hotsup --fds systemd.

Readiness: gunicorn's arbiter sends READY=1 as soon as it has adopted the
sockets, before any worker exists, so hotsup would drain the old generation
while the new one cannot answer yet (clients wait in the backlog meanwhile).
Here the arbiter's NOTIFY_SOCKET is taken out of its environment, and each
worker reports READY=1 once it has loaded the app and is about to accept:
hotsup counts the first one (a worker is in the generation's process group).

Drain: hotsup's SIGTERM is gunicorn's graceful stop. The gthread worker
serves keep-alive connections; since gunicorn 27.0.1 a stopping gthread worker
keeps its kept-alive connections open for a moment and answers a request
that arrives on one with "Connection: close", rather than closing them
under a client that is sending. Nothing else is needed for the drain: keep
graceful_timeout below hotsup's --drain-timeout. Older gunicorn closes those
connections under the client (40 failed requests in 10 upgrades with 26.0.0,
see the README): there, keep-alive is turned off instead, so that every
response says "Connection: close".
"""

import os
import re
import socket

import gunicorn

worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = 4
keepalive = 5
if tuple(int(n) for n in re.findall(r"\d+", gunicorn.__version__)[:3]) < (27, 0, 1):
    keepalive = 0
graceful_timeout = 20

# GUNICORN_READY_FROM=arbiter keeps gunicorn's own READY=1, to compare.
if os.environ.get("GUNICORN_READY_FROM", "workers") == "workers":
    _notify_socket = os.environ.pop("NOTIFY_SOCKET", None)
else:
    _notify_socket = None


# With GUNICORN_READY_DIR, each worker that serves also leaves a file
# <arbiter pid>.<worker pid> there, for all-workers-ready.sh, hotsup's
# --ready-probe: the first worker's READY=1 is then only the signal, and the
# generation is ready once every worker is.
_ready_dir = os.environ.get("GUNICORN_READY_DIR")


def _ready_file(worker):
    return os.path.join(_ready_dir, f"{worker.ppid}.{worker.pid}")


def worker_exit(server, worker):
    if _ready_dir:
        try:
            os.unlink(_ready_file(worker))
        except OSError:
            pass


def post_worker_init(worker):
    if _ready_dir:
        open(_ready_file(worker), "w").close()
    if not _notify_socket:
        return
    addr = _notify_socket
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(addr)
        s.sendall(b"READY=1")
