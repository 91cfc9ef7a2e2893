//! `--livereload ADDR`: tells browser pages to reload once a new generation
//! is ready, and never before.
//!
//! A tiny HTTP/1 server (hyper) on the event loop:
//!
//! - `GET /livereload.js`: the snippet to include in a page,
//!   `<script src="http://ADDR/livereload.js"></script>`.
//! - `GET /events`: server-sent events. On connect, `hello` with the serving
//!   generation (0 for none); then `reload` with the generation each time
//!   one becomes ready. The snippet reloads on `reload`, and on a `hello`
//!   whose generation differs from the one it first saw (a swap it missed
//!   while reconnecting).
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections (more are closed at
//! once), 10 s to send a request head, and [`CLIENT_QUEUE`] events queued
//! per client; a client that does not read them is dropped, and its
//! browser reconnects and catches up through `hello`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::mpsc;
use tracing::debug;

pub const MAX_CONNECTIONS: usize = 64;
const CLIENT_QUEUE: usize = 8;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const SNIPPET: &str = r#"// hotsup --livereload: reloads this page once a new generation serves.
(function () {
  var here = document.currentScript && document.currentScript.src;
  var es = new EventSource(new URL("/events", here || location.href));
  var first = null;
  es.addEventListener("hello", function (e) {
    if (first === null) { first = e.data; return; }
    if (e.data !== first && e.data !== "0") { location.reload(); }
  });
  es.addEventListener("reload", function () { location.reload(); });
})();
"#;

#[derive(Default)]
struct Clients {
    serving: u64,
    senders: Vec<mpsc::Sender<Bytes>>,
}

/// The connected `/events` clients.
#[derive(Clone, Default)]
pub struct Hub {
    clients: Arc<Mutex<Clients>>,
}

impl Hub {
    /// Tells every client that `generation` is ready.
    pub fn reload(&self, generation: u64) {
        let frame = Bytes::from(format!("event: reload\ndata: {generation}\n\n"));
        let mut c = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        c.serving = generation;
        // Never waits: a client that cannot take the event is dropped.
        c.senders.retain(|tx| tx.try_send(frame.clone()).is_ok());
        debug!(generation, clients = c.senders.len(), "livereload_sent");
    }

    /// Nothing serves any more (the serving generation exited).
    pub fn stopped(&self) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .serving = 0;
    }

    fn subscribe(&self) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let mut c = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let hello = format!("retry: 500\nevent: hello\ndata: {}\n\n", c.serving);
        // The queue is new and empty: this cannot fail.
        let _ = tx.try_send(Bytes::from(hello));
        c.senders.retain(|s| !s.is_closed());
        c.senders.push(tx);
        rx
    }
}

/// Serves `listener` on the current runtime until hotsup exits.
pub fn serve(listener: std::net::TcpListener, hub: Hub) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let open = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "livereload_accept_failed");
                    // EMFILE and the like: give the condition time to pass
                    // instead of spinning on it.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                drop(stream);
                continue;
            }
            let slot = Slot::take(&open);
            let hub = hub.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = service_fn(move |req| {
                    let hub = hub.clone();
                    async move { Ok::<_, Infallible>(respond(&hub, &req)) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    debug!(error = %e, "livereload_connection");
                }
            });
        }
    });
    Ok(())
}

/// One of the [`MAX_CONNECTIONS`], given back when the connection ends.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Slot {
        open.fetch_add(1, Ordering::Relaxed);
        Slot(open.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn respond(hub: &Hub, req: &Request<Incoming>) -> Response<Body> {
    let (status, body, kind) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/events") => (
            StatusCode::OK,
            Body::Events(hub.subscribe()),
            "text/event-stream",
        ),
        (&Method::GET, "/livereload.js") => (
            StatusCode::OK,
            Body::Full(Some(Bytes::from_static(SNIPPET.as_bytes()))),
            "text/javascript; charset=utf-8",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            Body::Full(Some(Bytes::from_static(b"not found\n"))),
            "text/plain; charset=utf-8",
        ),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Pages come from the app's origin, not this one.
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    resp
}

/// A fixed body, or the event stream of one client.
pub enum Body {
    Full(Option<Bytes>),
    Events(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Events(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Events(_) => SizeHint::default(),
        }
    }
}
