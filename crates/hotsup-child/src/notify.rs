//! Readiness and status for a service manager that listens on
//! `NOTIFY_SOCKET` (systemd, or `hotsup run --fds systemd`).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Mutex;

use hotsup_protocol::FromChild;

use crate::error::Error;

/// The `NOTIFY_SOCKET` captured at start-up.
#[derive(Debug)]
pub(crate) struct Notifier {
    /// The variable's value, as it was.
    value: OsString,
    /// Where to send: an absolute path or an abstract name (`@name`); an
    /// error for any other form.
    addr: Result<SocketAddr, String>,
    /// Whether `READY=1` was sent.
    ready: Mutex<bool>,
}

impl Notifier {
    /// Parses a `NOTIFY_SOCKET` value; `None` if it is empty.
    pub(crate) fn new(value: OsString) -> Option<Notifier> {
        if value.is_empty() {
            return None;
        }
        let bytes = value.as_bytes();
        let addr = match bytes {
            [b'/', ..] => {
                SocketAddr::from_pathname(OsStr::from_bytes(bytes)).map_err(|e| e.to_string())
            }
            [b'@', name @ ..] => SocketAddr::from_abstract_name(name).map_err(|e| e.to_string()),
            _ => Err("only an absolute path or an @abstract name is supported".into()),
        };
        Some(Notifier {
            value,
            addr,
            ready: Mutex::new(false),
        })
    }

    pub(crate) fn value(&self) -> &OsStr {
        &self.value
    }

    /// Sends `READY=1`, once; later calls do nothing. A failed send is
    /// retried by the next call.
    pub(crate) fn ready(&self) -> Result<(), Error> {
        let mut sent = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        if !*sent {
            self.send(b"READY=1\n")?;
            *sent = true;
        }
        Ok(())
    }

    /// Sends `STATUS=<text>`; `text` must be one line, as on the native
    /// channel.
    pub(crate) fn status(&self, text: &str) -> Result<(), Error> {
        // The same rules as the native `STATUS` (one line, bounded length).
        FromChild::Status(text.to_owned())
            .encode()
            .map_err(|_| Error::invalid_text(text))?;
        self.send(format!("STATUS={text}\n").as_bytes())
    }

    fn send(&self, message: &[u8]) -> Result<(), Error> {
        let fail = |source: io::Error| Error::Notify {
            socket: self.value.to_string_lossy().into_owned(),
            source,
        };
        let addr = self
            .addr
            .as_ref()
            .map_err(|e| fail(io::Error::new(io::ErrorKind::InvalidInput, e.clone())))?;
        let socket = UnixDatagram::unbound().map_err(fail)?;
        let sent = socket.send_to_addr(message, addr).map_err(fail)?;
        if sent != message.len() {
            return Err(fail(io::Error::new(
                io::ErrorKind::WriteZero,
                "incomplete datagram",
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_paths_and_abstract_names() {
        let dir = std::env::temp_dir().join(format!("hsc-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.clone().into_os_string()).unwrap();
        notifier.ready().unwrap();
        notifier.ready().unwrap();
        notifier.status("warming up").unwrap();
        assert!(matches!(
            notifier.status("two\nlines"),
            Err(Error::InvalidText { .. })
        ));
        let mut buf = [0; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=warming up\n");
        server.set_nonblocking(true).unwrap();
        assert!(server.recv(&mut buf).is_err(), "READY=1 is sent once");
        let _ = std::fs::remove_dir_all(&dir);

        let name = format!("hsc-notify-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier::new(format!("@{name}").into()).unwrap();
        notifier.ready().unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");

        assert!(Notifier::new(OsString::new()).is_none());
        let relative = Notifier::new("vsock:2:1234".into()).unwrap();
        match relative.ready() {
            Err(Error::Notify { socket, source }) => {
                assert_eq!(socket, "vsock:2:1234");
                assert_eq!(source.kind(), io::ErrorKind::InvalidInput);
            }
            other => panic!("expected a Notify error, got {other:?}"),
        }
        // A socket nobody listens on.
        let gone = Notifier::new(dir.join("gone.sock").into_os_string()).unwrap();
        assert!(matches!(gone.ready(), Err(Error::Notify { .. })));
    }
}
