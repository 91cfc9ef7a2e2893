"""A WSGI app served by gunicorn, unmodified, under hotsup:

    hotsup run --fds systemd -l http=127.0.0.1:8080 \\
        --chdir examples/recipes/gunicorn \\
        -- python3 -m gunicorn -c gunicorn.conf.py app:app

gunicorn takes the listening socket hotsup passes as fd 3 by itself
(LISTEN_FDS). Responses are "pid=<worker pid> generation=<g>";
?sleep_ms=N delays one. See gunicorn.conf.py for readiness and the drain.
"""

import os
import time
from urllib.parse import parse_qs

GENERATION = os.environ.get("HOTSUP_GENERATION", "0")
MAX_SLEEP_MS = 10_000


def app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        sleep_ms = min(int(query.get("sleep_ms", ["0"])[0]), MAX_SLEEP_MS)
    except ValueError:
        sleep_ms = 0
    if sleep_ms > 0:
        time.sleep(sleep_ms / 1000)
    body = f"pid={os.getpid()} generation={GENERATION}\n".encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
