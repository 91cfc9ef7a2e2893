//! A minimal, blocking HTTP/1.1 client over [`std::net::TcpStream`].
//!
//! It only speaks what the load generator needs: `GET` requests, responses
//! delimited by `Content-Length` (or by the end of the connection when the
//! header is absent), keep-alive and `Connection: close`. Chunked transfer
//! encoding is deliberately unsupported and reported as
//! [`FailureKind::BadResponse`].
//!
//! Every error is classified into a [`FailureKind`] so that a caller can count
//! exactly what went wrong (see [`Failure`]).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Largest response head (status line + headers) accepted, in bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest body accepted, in bytes (a sanity limit against garbage lengths).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Size of one `read` call.
const READ_CHUNK: usize = 16 * 1024;

/// What went wrong with one request.
///
/// The derived ordering makes it usable as a map key (see
/// [`crate::loadgen::Report::failures`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// The connection was refused (`ECONNREFUSED` on connect).
    Refused,
    /// The connection was reset (`ECONNRESET`, `EPIPE` or `ECONNABORTED`)
    /// while writing the request or before any response byte was read.
    Reset,
    /// The server closed the connection cleanly before sending any byte of
    /// the status line.
    EofBeforeResponse,
    /// Connecting, writing or waiting for the first response byte took longer
    /// than the configured timeout.
    Timeout,
    /// The connection ended (EOF or any error, including a timeout) after some
    /// response bytes arrived but before the complete body.
    Truncated,
    /// A well-formed response with a status other than 200.
    BadStatus(u16),
    /// The response could not be parsed, or used an unsupported feature
    /// (`Transfer-Encoding`), or had bytes after the announced body.
    BadResponse,
    /// Any other error; the payload is a short category (the
    /// [`io::ErrorKind`] name), the full text is in [`Failure::message`].
    Other(String),
}

impl FailureKind {
    /// A short, stable label (`"refused"`, `"status_503"`, `"other:..."`).
    pub fn label(&self) -> String {
        match self {
            FailureKind::Refused => "refused".to_owned(),
            FailureKind::Reset => "reset".to_owned(),
            FailureKind::EofBeforeResponse => "eof_before_response".to_owned(),
            FailureKind::Timeout => "timeout".to_owned(),
            FailureKind::Truncated => "truncated".to_owned(),
            FailureKind::BadStatus(code) => format!("status_{code}"),
            FailureKind::BadResponse => "bad_response".to_owned(),
            FailureKind::Other(what) => format!("other:{what}"),
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// A classified failure with a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The classification used for counting.
    pub kind: FailureKind,
    /// Details for debugging (the OS error text, the offending line, ...).
    pub message: String,
}

impl Failure {
    /// Builds a failure from a kind and a message.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }

    fn bad_response(message: impl Into<String>) -> Self {
        Failure::new(FailureKind::BadResponse, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Failure {}

/// Which step of a request an I/O error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Write,
    /// Reading, with the number of response bytes received so far.
    Read(usize),
}

fn other_kind(e: &io::Error) -> FailureKind {
    FailureKind::Other(format!("{:?}", e.kind()))
}

/// Classifies an I/O error according to the step it happened in.
fn classify_io(e: &io::Error, phase: Phase) -> Failure {
    use io::ErrorKind as K;
    let kind = match phase {
        Phase::Read(received) if received > 0 => FailureKind::Truncated,
        Phase::Connect => match e.kind() {
            K::ConnectionRefused => FailureKind::Refused,
            K::TimedOut | K::WouldBlock => FailureKind::Timeout,
            K::ConnectionReset | K::ConnectionAborted => FailureKind::Reset,
            _ => other_kind(e),
        },
        Phase::Write | Phase::Read(_) => match e.kind() {
            K::ConnectionReset | K::BrokenPipe | K::ConnectionAborted => FailureKind::Reset,
            K::TimedOut | K::WouldBlock => FailureKind::Timeout,
            _ => other_kind(e),
        },
    };
    let step = match phase {
        Phase::Connect => "connect".to_owned(),
        Phase::Write => "write request".to_owned(),
        Phase::Read(0) => "read response".to_owned(),
        Phase::Read(n) => format!("read response after {n} bytes"),
    };
    Failure::new(kind, format!("{step}: {e}"))
}

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The reason phrase (may be empty).
    pub reason: String,
    /// Headers in the order received; names as sent by the server.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Whether the server will close the connection after this response
    /// (`Connection: close`, HTTP/1.0 without keep-alive, or a body delimited
    /// by the end of the connection).
    pub close: bool,
}

impl Response {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8 text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `pid=<pid> generation=<g>` identity found in the body, if any.
    pub fn identity(&self) -> Identity {
        Identity::parse(&self.body)
    }
}

/// The identity of the server process that answered, as found in a body of
/// the form `pid=<pid> generation=<g>` (tokens separated by whitespace, in any
/// order, other tokens ignored).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity {
    /// Value of the `pid=` token.
    pub pid: Option<u32>,
    /// Value of the `generation=` token.
    pub generation: Option<u64>,
}

impl Identity {
    /// Parses the identity tokens from a body.
    pub fn parse(body: &[u8]) -> Identity {
        let mut id = Identity::default();
        // Bodies are small; ignore anything that is not UTF-8.
        let Ok(text) = std::str::from_utf8(body) else {
            return id;
        };
        for token in text.split_ascii_whitespace() {
            if let Some(v) = token.strip_prefix("pid=") {
                if id.pid.is_none() {
                    id.pid = v.parse().ok();
                }
            } else if let Some(v) = token.strip_prefix("generation=")
                && id.generation.is_none()
            {
                id.generation = v.parse().ok();
            }
        }
        id
    }
}

/// The parsed status line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) reason: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) content_length: Option<usize>,
    pub(crate) close: bool,
}

/// Most headers a response may have.
const MAX_HEADERS: usize = 64;

/// Parses the response head at the start of `buf`: `Ok(None)` while it is
/// incomplete, else the head and its length (the empty line included).
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, Failure> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Failure::bad_response(format!("bad response head: {e}"))),
    };
    let status = parsed.code.unwrap_or(0);
    if !(100..=599).contains(&status) {
        return Err(Failure::bad_response(format!("bad status code {status}")));
    }
    let http10 = parsed.version == Some(0);
    let mut headers = Vec::with_capacity(parsed.headers.len());
    let mut content_length: Option<usize> = None;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for h in parsed.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| Failure::bad_response(format!("header {} is not UTF-8", h.name)))?
            .trim_matches([' ', '\t']);
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .ok()
                .filter(|_| !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| Failure::bad_response(format!("bad Content-Length {value:?}")))?;
            if content_length.is_some_and(|old| old != n) {
                return Err(Failure::bad_response("conflicting Content-Length headers"));
            }
            if n > MAX_BODY_BYTES {
                return Err(Failure::bad_response(format!(
                    "Content-Length {n} too large"
                )));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Failure::bad_response(format!(
                "unsupported Transfer-Encoding {value:?}"
            )));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                conn_close |= token.eq_ignore_ascii_case("close");
                conn_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
        headers.push((h.name.to_owned(), value.to_owned()));
    }
    // 1xx, 204 and 304 responses never have a body.
    if status < 200 || status == 204 || status == 304 {
        content_length = Some(0);
    }
    let close = conn_close || (http10 && !conn_keep_alive) || content_length.is_none();
    let head = Head {
        status,
        reason: parsed.reason.unwrap_or("").to_owned(),
        headers,
        content_length,
        close,
    };
    Ok(Some((head, len)))
}

/// Checks that `path` can be put on a request line.
pub(crate) fn validate_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("request path {path:?} must start with '/'"));
    }
    if path
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!(
            "request path {path:?} must not contain whitespace or control characters"
        ));
    }
    Ok(())
}

/// One client connection, possibly used for several requests (keep-alive).
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    addr: SocketAddr,
    timeout: Duration,
    buf: Vec<u8>,
    requests: u64,
}

impl Connection {
    /// Connects with `timeout` as connect timeout; the same value is used as
    /// the write timeout and as the deadline for reading each response.
    /// Sets `TCP_NODELAY`.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Connection, Failure> {
        let timeout = timeout.max(Duration::from_millis(1));
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| classify_io(&e, Phase::Connect))?;
        let setup = |e: io::Error| Failure::new(other_kind(&e), format!("configure socket: {e}"));
        stream.set_nodelay(true).map_err(setup)?;
        stream.set_write_timeout(Some(timeout)).map_err(setup)?;
        stream.set_read_timeout(Some(timeout)).map_err(setup)?;
        Ok(Connection {
            stream,
            addr,
            timeout,
            buf: Vec::with_capacity(READ_CHUNK),
            requests: 0,
        })
    }

    /// How many requests were sent on this connection.
    pub fn requests_sent(&self) -> u64 {
        self.requests
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Sends `GET path` and reads the complete response.
    ///
    /// With `keep_alive == false` the request carries `Connection: close`.
    /// Any well-formed response is returned, whatever its status; the caller
    /// decides what a bad status means. After an error, or a response with
    /// [`Response::close`], the connection must not be reused.
    pub fn get(&mut self, path: &str, keep_alive: bool) -> Result<Response, Failure> {
        validate_path(path)
            .map_err(|m| Failure::new(FailureKind::Other("InvalidPath".into()), m))?;
        let deadline = Instant::now() + self.timeout;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hotsup-bench\r\n",
            self.addr
        );
        if !keep_alive {
            request.push_str("Connection: close\r\n");
        }
        request.push_str("\r\n");
        self.requests += 1;
        self.stream
            .write_all(request.as_bytes())
            .map_err(|e| classify_io(&e, Phase::Write))?;
        self.read_response(deadline)
    }

    /// Reads more bytes into `self.buf`; returns how many (0 on EOF).
    fn fill(&mut self, deadline: Instant, received: usize) -> Result<usize, Failure> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            let e = io::Error::new(io::ErrorKind::TimedOut, "response deadline passed");
            return Err(classify_io(&e, Phase::Read(received)));
        }
        self.stream
            .set_read_timeout(Some(remaining))
            .map_err(|e| Failure::new(other_kind(&e), format!("set read timeout: {e}")))?;
        let old_len = self.buf.len();
        self.buf.resize(old_len + READ_CHUNK, 0);
        let result = loop {
            match self.stream.read(&mut self.buf[old_len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(old_len + n);
        result.map_err(|e| classify_io(&e, Phase::Read(received)))
    }

    fn read_response(&mut self, deadline: Instant) -> Result<Response, Failure> {
        self.buf.clear();
        // Read the head.
        let (head, body_start) = loop {
            let scanned = self.buf.len();
            if scanned > 0
                && let Some(parsed) = parse_head(&self.buf)?
            {
                break parsed;
            }
            if scanned > MAX_HEAD_BYTES {
                return Err(Failure::bad_response("response head too large"));
            }
            if self.fill(deadline, scanned)? == 0 {
                return Err(if scanned == 0 {
                    Failure::new(
                        FailureKind::EofBeforeResponse,
                        "connection closed before any response byte",
                    )
                } else {
                    Failure::new(
                        FailureKind::Truncated,
                        format!("connection closed inside the response head after {scanned} bytes"),
                    )
                });
            }
        };

        let body = match head.content_length {
            Some(len) => {
                while self.buf.len() < body_start + len {
                    let received = self.buf.len();
                    if self.fill(deadline, received)? == 0 {
                        return Err(Failure::new(
                            FailureKind::Truncated,
                            format!(
                                "connection closed after {} of {len} body bytes",
                                received - body_start
                            ),
                        ));
                    }
                }
                if self.buf.len() > body_start + len {
                    return Err(Failure::bad_response(format!(
                        "{} unexpected bytes after the {len}-byte body",
                        self.buf.len() - body_start - len
                    )));
                }
                self.buf[body_start..].to_vec()
            }
            None => {
                // Body delimited by the end of the connection.
                loop {
                    let received = self.buf.len();
                    if received - body_start > MAX_BODY_BYTES {
                        return Err(Failure::bad_response("body too large"));
                    }
                    if self.fill(deadline, received)? == 0 {
                        break;
                    }
                }
                self.buf[body_start..].to_vec()
            }
        };
        self.buf.clear();
        Ok(Response {
            status: head.status,
            reason: head.reason,
            headers: head.headers,
            body,
            close: head.close,
        })
    }
}

/// Sends one `GET path` with `Connection: close` on a fresh connection.
///
/// `timeout` bounds connecting, writing and reading the response. Any
/// well-formed response is `Ok`, whatever its status (check
/// [`Response::status`]); only transport and protocol errors are `Err`.
pub fn request_once(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response, Failure> {
    Connection::connect(addr, timeout)?.get(path, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a complete head given without its empty line.
    fn head(text: &[u8]) -> Result<Head, Failure> {
        let buf = [text, b"\r\n\r\n"].concat();
        let (head, len) = parse_head(&buf)?.expect("a complete head");
        assert_eq!(len, buf.len());
        Ok(head)
    }

    #[test]
    fn parses_head() {
        let h = head(
            b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 12\r\nX-A:  b \r\nConnection: keep-alive, Close",
        )
        .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.reason, "OK");
        assert_eq!(h.content_length, Some(12));
        assert!(h.close);
        assert_eq!(h.headers[1], ("X-A".to_owned(), "b".to_owned()));

        let h = head(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0").unwrap();
        assert_eq!(h.status, 503);
        assert!(!h.close);

        // HTTP/1.0 closes unless keep-alive; no Content-Length means close.
        assert!(head(b"HTTP/1.0 200 OK\r\nContent-Length: 1").unwrap().close);
        assert!(
            !head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive")
                .unwrap()
                .close
        );
        let h = head(b"HTTP/1.1 200 OK").unwrap();
        assert_eq!(h.content_length, None);
        assert!(h.close);
        assert_eq!(
            head(b"HTTP/1.1 204 No Content").unwrap().content_length,
            Some(0)
        );
        assert_eq!(head(b"HTTP/1.1 200 ").unwrap().reason, "");
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        for partial in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\nA: b\r\n\r",
        ] {
            assert!(parse_head(partial).unwrap().is_none(), "{partial:?}");
        }
        let (_, len) = parse_head(b"HTTP/1.1 200 OK\r\n\r\nbody").unwrap().unwrap();
        assert_eq!(len, 19);
    }

    #[test]
    fn rejects_bad_heads() {
        for bad in [
            &b"HTTP/2 200 OK"[..],
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 abc OK",
            b"HTTP/1.1 999 OK",
            b"garbage",
            b"HTTP/1.1 200 OK\r\nno-colon-here",
            b"HTTP/1.1 200 OK\r\nBad Name: x",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999",
            b"HTTP/1.1 200 OK\r\nX: \xff",
        ] {
            let err = head(bad).unwrap_err();
            assert_eq!(
                err.kind,
                FailureKind::BadResponse,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn parses_identity() {
        let id = Identity::parse(b"pid=42 generation=3\n");
        assert_eq!((id.pid, id.generation), (Some(42), Some(3)));
        let id = Identity::parse(b"hello generation=9 other=1");
        assert_eq!((id.pid, id.generation), (None, Some(9)));
        assert_eq!(Identity::parse(b"pid=x"), Identity::default());
        assert_eq!(Identity::parse(b"\xff\xfe"), Identity::default());
    }

    #[test]
    fn validates_paths() {
        assert!(validate_path("/a?b=c").is_ok());
        assert!(validate_path("a").is_err());
        assert!(validate_path("/a b").is_err());
        assert!(validate_path("/a\r\nX: y").is_err());
    }

    #[test]
    fn classifies_io_errors() {
        use io::ErrorKind as K;
        let e = |k| io::Error::from(k);
        assert_eq!(
            classify_io(&e(K::ConnectionRefused), Phase::Connect).kind,
            FailureKind::Refused
        );
        assert_eq!(
            classify_io(&e(K::TimedOut), Phase::Connect).kind,
            FailureKind::Timeout
        );
        assert_eq!(
            classify_io(&e(K::BrokenPipe), Phase::Write).kind,
            FailureKind::Reset
        );
        assert_eq!(
            classify_io(&e(K::ConnectionReset), Phase::Read(0)).kind,
            FailureKind::Reset
        );
        assert_eq!(
            classify_io(&e(K::WouldBlock), Phase::Read(0)).kind,
            FailureKind::Timeout
        );
        assert_eq!(
            classify_io(&e(K::ConnectionReset), Phase::Read(5)).kind,
            FailureKind::Truncated
        );
        assert_eq!(
            classify_io(&e(K::WouldBlock), Phase::Read(5)).kind,
            FailureKind::Truncated
        );
        assert_eq!(
            classify_io(&e(K::PermissionDenied), Phase::Write).kind,
            FailureKind::Other("PermissionDenied".into())
        );
    }
}
