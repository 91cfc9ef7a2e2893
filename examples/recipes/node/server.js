// A plain Node.js HTTP server run unmodified under hotsup:
//
//   hotsup run --fds systemd -l http=127.0.0.1:8080 --ready delay:1s \
//       -- node examples/recipes/node/server.js
//
// It takes the listening socket hotsup passes as fd 3 (LISTEN_FDS), or
// binds PORT (default 8080) when run alone. Responses are
// "pid=<pid> generation=<g>"; ?sleep_ms=N delays one.
//
// Drain (SIGTERM from hotsup, once the next generation is ready):
//
// - Node's own server.close() closes every idle keep-alive connection at
//   once (Node 19 and later). A client may be sending its next request on
//   one at that very moment: it gets a reset or an EOF instead of a
//   response. Under keep-alive load that loses requests at every upgrade.
// - The recipe: stop accepting (net.Server's close, which leaves the
//   connections alone), answer every further request with
//   "Connection: close", and close a connection only once it has been idle
//   for IDLE_CLOSE_MS. A client that keeps using its connection gets its
//   answer and a clean close; one that left it idle is not about to send.
//   Exit when the last connection is closed.
//
// `--plain-close` drains with Node's server.close() instead, to measure the
// difference.

'use strict';

const http = require('http');
const net = require('net');

const IDLE_CLOSE_MS = 1000;
const MAX_SLEEP_MS = 10000;

const plainClose = process.argv.includes('--plain-close');
const generation = process.env.HOTSUP_GENERATION || '0';
let draining = false;

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  const sleep = Math.min(Number(url.searchParams.get('sleep_ms')) || 0, MAX_SLEEP_MS);
  setTimeout(() => {
    const body = `pid=${process.pid} generation=${generation}\n`;
    if (draining && !plainClose) {
      res.setHeader('Connection', 'close');
    }
    res.writeHead(200, {
      'Content-Type': 'text/plain',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  }, sleep);
});

// When each connection last finished a response (or was accepted), and
// whether a request is in progress on it.
const connections = new Map();
server.on('connection', (socket) => {
  connections.set(socket, { busy: false, idleSince: Date.now() });
  socket.on('close', () => connections.delete(socket));
});
server.on('request', (req, res) => {
  const state = connections.get(req.socket);
  if (state) {
    state.busy = true;
    res.on('finish', () => {
      state.busy = false;
      state.idleSince = Date.now();
    });
  }
});

function closeIdle() {
  const now = Date.now();
  for (const [socket, state] of connections) {
    if (!state.busy && now - state.idleSince >= IDLE_CLOSE_MS) {
      socket.end();
    }
  }
}

process.on('SIGTERM', () => {
  if (draining) {
    return;
  }
  draining = true;
  if (plainClose) {
    server.close(() => process.exit(0));
    return;
  }
  // http.Server.close would also close the idle connections at once.
  net.Server.prototype.close.call(server, () => process.exit(0));
  setInterval(closeIdle, 100);
});

// systemd socket activation: the sockets are fds 3, 4, ... and LISTEN_PID
// names this process.
if (process.env.LISTEN_PID === String(process.pid) && Number(process.env.LISTEN_FDS) >= 1) {
  server.listen({ fd: 3 });
} else {
  server.listen(Number(process.env.PORT) || 8080, '127.0.0.1');
}
