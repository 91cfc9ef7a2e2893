"""An ASGI app served by uvicorn under hotsup:

    hotsup run --fds systemd -l http=127.0.0.1:8080 \\
        --chdir examples/recipes/uvicorn \\
        -- python3 -m uvicorn app:app --fd 3 --http app:DrainingH11Protocol

uvicorn serves the listening socket hotsup passes as fd 3 (--fd 3).
Responses are "pid=<pid> generation=<g>"; ?sleep_ms=N delays one.

Readiness: uvicorn does not speak sd_notify, so the app sends READY=1 on
NOTIFY_SOCKET when its lifespan startup completes. uvicorn starts serving
the socket right after; a client that connects in between waits in the
backlog of the socket hotsup holds.

Drain (SIGTERM from hotsup, once the next generation is ready): uvicorn's
own graceful shutdown closes every idle keep-alive connection at once. A
client may be sending its next request on one at that very moment: it gets
a reset or an EOF instead of a response. DrainingH11Protocol (uvicorn's h11
protocol, given with --http) instead answers every further request with
"Connection: close" and closes a connection only once it has been idle for
IDLE_CLOSE seconds. uvicorn exits when the last connection is closed.
Without --http app:DrainingH11Protocol (say, --http h11), uvicorn drains as
it does by default.
"""

import asyncio
import os
import socket
from urllib.parse import parse_qs

import h11
from uvicorn.protocols.http.flow_control import CLOSE_HEADER
from uvicorn.protocols.http.h11_impl import H11Protocol

GENERATION = os.environ.get("HOTSUP_GENERATION", "0")
MAX_SLEEP_MS = 10_000
IDLE_CLOSE = 1.0


def notify(state: bytes) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(path)
        s.sendall(state)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                notify(b"READY=1")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    query = parse_qs(scope["query_string"].decode("latin-1"))
    try:
        sleep_ms = min(int(query.get("sleep_ms", ["0"])[0]), MAX_SLEEP_MS)
    except ValueError:
        sleep_ms = 0
    if sleep_ms > 0:
        await asyncio.sleep(sleep_ms / 1000)
    body = f"pid={os.getpid()} generation={GENERATION}\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class DrainingH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, draining without racing the client."""

    draining = False
    # Set once the server began shutting down (one server per process).
    server_draining = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        # asyncio accepts a connection before it makes its protocol: one
        # accepted just before the shutdown began was not among the
        # connections uvicorn asked to shut down, and would be served with
        # keep-alive until the drain deadline.
        if DrainingH11Protocol.server_draining:
            self.shutdown()

    def shutdown(self) -> None:
        # Called by uvicorn's graceful shutdown, once per connection.
        DrainingH11Protocol.server_draining = True
        self.draining = True
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._close_when_idle()
        elif not cycle.response_started:
            self._close_after(cycle)
        # A response already under way was announced as keep-alive: once
        # it is complete, the connection is idle (on_response_complete).

    def handle_events(self) -> None:
        super().handle_events()
        cycle = self.cycle
        if self.draining and cycle is not None and not cycle.response_started:
            self._close_after(cycle)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.draining:
            self._close_when_idle()

    def _close_after(self, cycle) -> None:
        """The response says "Connection: close"; h11 then closes."""
        if CLOSE_HEADER not in cycle.default_headers:
            cycle.default_headers = cycle.default_headers + [CLOSE_HEADER]
        cycle.keep_alive = False

    def _close_when_idle(self) -> None:
        self.loop.call_later(IDLE_CLOSE, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if self.transport.is_closing():
            return
        cycle = self.cycle
        busy = cycle is not None and not cycle.response_complete
        if busy or self.conn.their_state is not h11.IDLE:
            # A request arrived meanwhile: its response closes.
            return
        self.conn.send(h11.ConnectionClosed())
        self.transport.close()
