//! End-to-end tests of the load generator against small misbehaving servers
//! on 127.0.0.1. Every loop is bounded; sleeps are only used for polling.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hotsup_bench::{FailureKind, Load, LoadConfig, Report, request_once};

/// Per-connection context handed to a test server's handler.
struct Ctx {
    stop: Arc<AtomicBool>,
    /// 0-based index of the accepted connection.
    conn_index: u64,
    /// Responses written so far by the whole server.
    served: Arc<AtomicU64>,
}

impl Ctx {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Reads one request head. `None` on EOF, error, or server stop.
    fn read_request(&self, stream: &mut TcpStream) -> Option<String> {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        // Bounded: each iteration waits at most 50 ms, and stops with the server.
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                assert_eq!(end + 4, buf.len(), "client pipelined or sent a body");
                return Some(String::from_utf8(buf).expect("request is UTF-8"));
            }
            match stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if self.stopping() {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    fn respond(&self, stream: &mut TcpStream, bytes: &[u8]) -> bool {
        let ok = stream.write_all(bytes).is_ok();
        if ok {
            self.served.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

/// A threaded test server; dropping it stops and joins all its threads.
struct TestServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
    acceptor: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start<F>(handler: F) -> TestServer
    where
        F: Fn(TcpStream, &Ctx) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let served = Arc::new(AtomicU64::new(0));
        let handler = Arc::new(handler);
        let acceptor = {
            let (stop, accepted, served) = (stop.clone(), accepted.clone(), served.clone());
            thread::spawn(move || {
                let mut conns = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            let ctx = Ctx {
                                stop: stop.clone(),
                                conn_index: accepted.fetch_add(1, Ordering::Relaxed),
                                served: served.clone(),
                            };
                            let handler = handler.clone();
                            conns.push(thread::spawn(move || handler(stream, &ctx)));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(1));
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
                for c in conns {
                    c.join().expect("connection handler panicked");
                }
            })
        };
        TestServer {
            addr,
            stop,
            accepted,
            served,
            acceptor: Some(acceptor),
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let result = a.join();
            if !thread::panicking() {
                result.expect("test server panicked");
            }
        }
    }
}

fn ok_response(body: &str, close: bool) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes()
}

/// Serves keep-alive responses `pid=<pid> generation=<g>` until the client
/// closes; answers with `Connection: close` when `close_every` divides the
/// 1-based response count on the connection.
fn keep_alive_server(pid: u32, generation: u64, close_every: Option<u64>) -> TestServer {
    TestServer::start(move |mut s, ctx| {
        let mut n = 0;
        while ctx.read_request(&mut s).is_some() {
            n += 1;
            let close = close_every.is_some_and(|k| n % k == 0);
            let body = format!("pid={pid} generation={generation}\n");
            if !ctx.respond(&mut s, &ok_response(&body, close)) || close {
                return;
            }
        }
    })
}

fn config(addr: SocketAddr) -> LoadConfig {
    LoadConfig {
        concurrency: 4,
        max_requests: Some(200),
        max_duration: Duration::from_secs(20),
        timeout: Duration::from_secs(5),
        ..LoadConfig::new(addr)
    }
}

fn only(kind: FailureKind, n: u64) -> BTreeMap<FailureKind, u64> {
    BTreeMap::from([(kind, n)])
}

fn assert_only_failures(report: &Report, kind: FailureKind, n: u64) {
    assert_eq!(report.ok, 0, "{report}");
    assert_eq!(report.failures, only(kind.clone(), n), "{report}");
    assert_eq!(report.total_failures(), n);
    assert_eq!(report.samples.len(), (n as usize).min(20), "{report}");
    assert!(report.samples.iter().all(|s| s.kind == kind), "{report}");
    assert!(report.records.is_empty());
}

#[test]
fn keep_alive_server_all_ok() {
    let server = keep_alive_server(4242, 7, None);
    let report = Load::start(config(server.addr)).finish();
    assert_eq!(report.ok, 200, "{report}");
    assert_eq!(report.total_failures(), 0, "{report}");
    assert!(report.samples.is_empty());
    assert_eq!(report.records.len(), 200);
    assert_eq!(report.generations_seen(), BTreeSet::from([7]));
    assert_eq!(report.pids_seen(), BTreeSet::from([4242]));
    assert!(report.first_response_of_generation(7).is_some());
    // One connection per worker: keep-alive really reuses connections.
    assert_eq!(report.connections, 4, "{report}");
    assert_eq!(report.server_closes, 0);
    assert_eq!(server.accepted(), 4);
    assert_eq!(server.served.load(Ordering::Relaxed), 200);
    let stats = report
        .latency_percentiles(hotsup_bench::Window::All)
        .unwrap();
    assert_eq!(stats.count, 200);
    assert!(stats.p50 <= stats.p99 && stats.p99 <= stats.max);
    assert!(
        report
            .records
            .windows(2)
            .all(|w| w[0].started <= w[1].started)
    );
}

#[test]
fn server_connection_close_is_not_a_failure() {
    let server = keep_alive_server(1, 1, Some(3));
    let report = Load::start(LoadConfig {
        concurrency: 1,
        max_requests: Some(60),
        ..config(server.addr)
    })
    .finish();
    assert_eq!(report.ok, 60, "{report}");
    assert_eq!(report.total_failures(), 0, "{report}");
    // Every third response on a connection closes it: 60 / 3 closes, and the
    // worker reconnects each time.
    assert_eq!(report.server_closes, 20, "{report}");
    assert_eq!(report.connections, 20, "{report}");
    assert_eq!(server.accepted(), 20);
}

#[test]
fn without_keep_alive_sends_connection_close() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let server = TestServer::start(move |mut s, ctx| {
        if let Some(req) = ctx.read_request(&mut s) {
            seen2.lock().unwrap().push(req);
            ctx.respond(&mut s, &ok_response("pid=5 generation=2", false));
            // Close after one response even though the response did not say so.
        }
    });
    let report = Load::start(LoadConfig {
        keep_alive: false,
        concurrency: 2,
        max_requests: Some(20),
        path: "/health?x=1".into(),
        ..config(server.addr)
    })
    .finish();
    assert_eq!(report.ok, 20, "{report}");
    assert_eq!(report.total_failures(), 0, "{report}");
    assert_eq!(report.connections, 20);
    assert_eq!(server.accepted(), 20);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 20);
    for req in seen.iter() {
        assert!(req.starts_with("GET /health?x=1 HTTP/1.1\r\n"), "{req:?}");
        assert!(
            req.contains(&format!("\r\nHost: {}\r\n", server.addr)),
            "{req:?}"
        );
        assert!(req.contains("\r\nConnection: close\r\n"), "{req:?}");
    }
}

#[test]
fn reset_connections_are_counted_as_reset() {
    let server = TestServer::start(|mut s, ctx| {
        if ctx.read_request(&mut s).is_some() {
            // SO_LINGER 0 makes close() send RST.
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
    });
    let report = Load::start(LoadConfig {
        concurrency: 2,
        max_requests: Some(30),
        ..config(server.addr)
    })
    .finish();
    assert_only_failures(&report, FailureKind::Reset, 30);
    // Samples carry the worker id and the error text.
    assert!(report.samples.iter().all(|s| s.worker < 2));
    assert!(
        report.samples[0].message.to_lowercase().contains("reset"),
        "{report}"
    );
    assert!(report.samples.windows(2).all(|w| w[0].at <= w[1].at));
}

#[test]
fn close_before_response_is_eof_before_response() {
    let server = TestServer::start(|mut s, ctx| {
        // Read the whole request so that close() sends FIN, not RST.
        let _ = ctx.read_request(&mut s);
    });
    let report = Load::start(LoadConfig {
        max_requests: Some(12),
        ..config(server.addr)
    })
    .finish();
    assert_only_failures(&report, FailureKind::EofBeforeResponse, 12);
    assert!(report.samples.iter().all(|s| !s.reused_connection));
}

#[test]
fn short_body_is_truncated() {
    let server = TestServer::start(|mut s, ctx| {
        if ctx.read_request(&mut s).is_some() {
            ctx.respond(
                &mut s,
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npid=1 generation=1",
            );
            let _ = s.shutdown(Shutdown::Write);
            // Drain until the client closes so our close() cannot turn into RST.
            let _ = ctx.read_request(&mut s);
        }
    });
    let report = Load::start(LoadConfig {
        max_requests: Some(10),
        ..config(server.addr)
    })
    .finish();
    assert_only_failures(&report, FailureKind::Truncated, 10);
}

#[test]
fn close_inside_head_is_truncated() {
    let server = TestServer::start(|mut s, ctx| {
        if ctx.read_request(&mut s).is_some() {
            ctx.respond(&mut s, b"HTTP/1.1 200 OK\r\nContent-Le");
        }
    });
    let report = Load::start(LoadConfig {
        max_requests: Some(5),
        ..config(server.addr)
    })
    .finish();
    assert_only_failures(&report, FailureKind::Truncated, 5);
}

#[test]
fn status_503_is_bad_status_and_keeps_connection() {
    let server = TestServer::start(|mut s, ctx| {
        while ctx.read_request(&mut s).is_some() {
            let resp = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy";
            if !ctx.respond(&mut s, resp) {
                return;
            }
        }
    });
    // One worker: with two, the first could use the whole budget before
    // the second starts, and the count of connections would depend on
    // thread scheduling.
    let report = Load::start(LoadConfig {
        concurrency: 1,
        max_requests: Some(40),
        ..config(server.addr)
    })
    .finish();
    assert_only_failures(&report, FailureKind::BadStatus(503), 40);
    assert_eq!(
        report.failures_by_label(),
        BTreeMap::from([("status_503".into(), 40)])
    );
    assert!(report.samples[0].message.contains("busy"), "{report}");
    // A well-formed error response does not cost the keep-alive connection:
    // 40 requests on one.
    assert_eq!(report.connections, 1, "{report}");
    assert_eq!(server.accepted(), 1);
}

#[test]
fn nothing_listening_is_refused() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let report = Load::start(LoadConfig {
        concurrency: 2,
        max_requests: Some(25),
        ..config(addr)
    })
    .finish();
    assert_only_failures(&report, FailureKind::Refused, 25);
    assert_eq!(report.connections, 0);
    let err = request_once(addr, "/", Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind, FailureKind::Refused, "{err}");
}

#[test]
fn silent_server_times_out() {
    let server = TestServer::start(|mut s, ctx| {
        // Read the request, never answer, hold the connection until the
        // client gives up (EOF) or the server stops.
        let _ = ctx.read_request(&mut s);
        let _ = ctx.read_request(&mut s);
    });
    let timeout = Duration::from_millis(150);
    let started = Instant::now();
    let report = Load::start(LoadConfig {
        concurrency: 2,
        max_requests: Some(4),
        timeout,
        ..config(server.addr)
    })
    .finish();
    assert_only_failures(&report, FailureKind::Timeout, 4);
    // Two sequential timeouts per worker.
    assert!(started.elapsed() >= timeout * 2, "{:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn unsupported_or_garbage_responses_are_bad_response() {
    for resp in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n"[..],
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabcdef",
    ] {
        let server = TestServer::start(move |mut s, ctx| {
            if ctx.read_request(&mut s).is_some() {
                ctx.respond(&mut s, resp);
                let _ = s.shutdown(Shutdown::Write);
                let _ = ctx.read_request(&mut s);
            }
        });
        let report = Load::start(LoadConfig {
            concurrency: 1,
            max_requests: Some(3),
            ..config(server.addr)
        })
        .finish();
        assert_only_failures(&report, FailureKind::BadResponse, 3);
    }
}

#[test]
fn failure_on_reused_connection_is_counted_not_retried() {
    // Answers the first request of each connection, closes on the second.
    let server = TestServer::start(|mut s, ctx| {
        if ctx.read_request(&mut s).is_some()
            && ctx.respond(&mut s, &ok_response("pid=9 generation=1", false))
        {
            let _ = ctx.read_request(&mut s);
        }
    });
    let report = Load::start(LoadConfig {
        concurrency: 1,
        max_requests: Some(10),
        ..config(server.addr)
    })
    .finish();
    assert_eq!(report.ok, 5, "{report}");
    assert_eq!(
        report.failures,
        only(FailureKind::EofBeforeResponse, 5),
        "{report}"
    );
    assert!(
        report.samples.iter().all(|s| s.reused_connection),
        "{report}"
    );
    assert_eq!(report.connections, 5);
    assert_eq!(server.accepted(), 5);
}

#[test]
fn generations_change_and_wait_for_ok_and_stop() {
    // Connections 0..2 are served by "generation 1", later ones by generation 2.
    let server = TestServer::start(|mut s, ctx| {
        let generation = if ctx.conn_index < 2 { 1 } else { 2 };
        while ctx.read_request(&mut s).is_some() {
            let body = format!("pid={} generation={generation}", 1000 + generation);
            // Generation 1 closes each connection after 50 responses.
            let close = generation == 1 && ctx.served.load(Ordering::Relaxed) >= 50;
            if !ctx.respond(&mut s, &ok_response(&body, close)) || close {
                return;
            }
        }
    });
    let load = Load::start(LoadConfig {
        concurrency: 2,
        max_requests: None,
        max_duration: Duration::from_secs(30),
        ..config(server.addr)
    });
    assert!(
        load.wait_for_ok(100, Duration::from_secs(10)),
        "{:?}",
        load.snapshot()
    );
    assert!(load.wait_for_more_ok(50, Duration::from_secs(10)));
    let snap = load.snapshot();
    assert!(snap.ok >= 150 && snap.failures == 0, "{snap:?}");
    assert_eq!(snap.active_workers, 2);
    assert!(!load.is_finished());
    let report = load.stop();
    assert!(report.ok >= snap.ok);
    assert_eq!(report.total_failures(), 0, "{report}");
    assert_eq!(report.generations_seen(), BTreeSet::from([1, 2]));
    assert_eq!(report.pids_seen(), BTreeSet::from([1001, 1002]));
    let first1 = report.first_response_of_generation(1).unwrap();
    let first2 = report.first_response_of_generation(2).unwrap();
    let last1 = report.last_response_of_generation(1).unwrap();
    assert!(first1 < first2 && last1 < first2 + Duration::from_secs(1));
    // Latency across the switch vs steady state.
    let window = [(first2 - Duration::from_millis(1), first2)];
    assert!(
        report
            .latency_percentiles(hotsup_bench::Window::Outside(&window))
            .is_some()
    );
}

#[test]
fn max_duration_ends_the_load() {
    let server = keep_alive_server(1, 1, None);
    let started = Instant::now();
    let load = Load::start(LoadConfig {
        concurrency: 2,
        max_requests: None,
        max_duration: Duration::from_millis(200),
        pause_between: Some(Duration::from_millis(5)),
        ..config(server.addr)
    });
    // Returns early once all workers have ended.
    assert!(!load.wait_for_ok(u64::MAX, Duration::from_secs(10)));
    assert!(load.is_finished());
    let report = load.finish();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(report.elapsed >= Duration::from_millis(200));
    assert!(report.ok > 0 && report.total_failures() == 0, "{report}");
}

#[test]
fn stop_interrupts_a_long_pause() {
    let server = keep_alive_server(1, 1, None);
    let load = Load::start(LoadConfig {
        concurrency: 3,
        max_requests: None,
        pause_between: Some(Duration::from_secs(60)),
        ..config(server.addr)
    });
    assert!(load.wait_for_ok(3, Duration::from_secs(10)));
    let before_stop = Instant::now();
    let report = load.stop();
    assert!(before_stop.elapsed() < Duration::from_secs(5));
    assert_eq!(report.ok, 3, "{report}");
}

#[test]
fn request_once_probe() {
    let server = keep_alive_server(77, 3, None);
    let resp = request_once(server.addr, "/", Duration::from_secs(5)).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.reason, "OK");
    assert_eq!(resp.header("CONTENT-TYPE"), Some("text/plain"));
    assert_eq!(resp.body_text(), "pid=77 generation=3\n");
    let id = resp.identity();
    assert_eq!((id.pid, id.generation), (Some(77), Some(3)));
    assert!(!resp.close);

    let err = request_once(server.addr, "no-slash", Duration::from_secs(5)).unwrap_err();
    assert_eq!(err.kind, FailureKind::Other("InvalidPath".into()));
}
