//! The same functions as at the crate root, returning tokio sockets.
//!
//! Each takes the socket in nonblocking mode (the mode is shared with the
//! supervisor and the other generations, so it is set explicitly, once, with
//! no moment in blocking mode) and registers it with the current tokio
//! runtime.
//!
//! # Panics
//!
//! Like tokio's `from_std` constructors, every function panics when called
//! outside a tokio runtime with IO enabled.
//!
//! Make the crate's first call before the runtime starts its threads (see
//! [Start-up and the environment](crate#start-up-and-the-environment)):
//!
//! ```no_run
//! fn main() -> Result<(), hotsup_child::Error> {
//!     hotsup_child::init()?; // before any other thread exists
//!     let rt = tokio::runtime::Runtime::new()?;
//!     rt.block_on(run())
//! }
//!
//! async fn run() -> Result<(), hotsup_child::Error> {
//! let listener = hotsup_child::tokio::inherit_listener("127.0.0.1:8080")?;
//! let drain = hotsup_child::drain();
//! hotsup_child::ready()?;
//! loop {
//!     tokio::select! {
//!         _ = drain.wait_async() => break,
//!         accepted = listener.accept() => {
//!             let (conn, _) = accepted?;
//!             tokio::spawn(async move { drop(conn) });
//!         }
//!     }
//! }
//! Ok(())
//! }
//! ```

use std::net::ToSocketAddrs;
use std::path::Path;

use ::tokio::net::{TcpListener, UdpSocket, UnixListener};

use crate::Error;

/// Like [`crate::inherit_listener`], as a tokio listener.
pub fn inherit_listener<A: ToSocketAddrs>(fallback: A) -> Result<TcpListener, Error> {
    tcp(crate::inherit_listener_in(fallback, true)?)
}

/// Like [`crate::tcp_listener`], as a tokio listener.
pub fn tcp_listener(name: &str) -> Result<TcpListener, Error> {
    tcp(crate::tcp_listener_in(name, true)?)
}

/// Like [`crate::tcp_listener_or_bind`], as a tokio listener.
pub fn tcp_listener_or_bind<A: ToSocketAddrs>(
    name: &str,
    fallback: A,
) -> Result<TcpListener, Error> {
    tcp(crate::tcp_listener_or_bind_in(name, fallback, true)?)
}

/// Like [`crate::unix_listener`], as a tokio listener.
pub fn unix_listener(name: &str) -> Result<UnixListener, Error> {
    unix(crate::unix_listener_in(name, true)?)
}

/// Like [`crate::unix_listener_or_bind`], as a tokio listener.
pub fn unix_listener_or_bind<P: AsRef<Path>>(
    name: &str,
    fallback: P,
) -> Result<UnixListener, Error> {
    unix(crate::unix_listener_or_bind_in(name, fallback, true)?)
}

/// Like [`crate::udp_socket`], as a tokio socket.
pub fn udp_socket(name: &str) -> Result<UdpSocket, Error> {
    udp(crate::udp_socket_in(name, true)?)
}

/// Like [`crate::udp_socket_or_bind`], as a tokio socket.
pub fn udp_socket_or_bind<A: ToSocketAddrs>(name: &str, fallback: A) -> Result<UdpSocket, Error> {
    udp(crate::udp_socket_or_bind_in(name, fallback, true)?)
}

// The sockets arrive nonblocking already: set once, at the take, with no
// moment in blocking mode that another generation could observe.
fn tcp(listener: std::net::TcpListener) -> Result<TcpListener, Error> {
    Ok(TcpListener::from_std(listener)?)
}

fn unix(listener: std::os::unix::net::UnixListener) -> Result<UnixListener, Error> {
    Ok(UnixListener::from_std(listener)?)
}

fn udp(socket: std::net::UdpSocket) -> Result<UdpSocket, Error> {
    Ok(UdpSocket::from_std(socket)?)
}
