//! The supervisor's side of one child's channel: send the listeners, then
//! relay what the child says to the supervisor loop.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotsup_protocol::{DecodeError, FromChild, ListenerInfo, RecvError, ToChild, VERSION};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::Sender;

use crate::lifecycle::WorkerId;

use crate::listeners::Listener;

/// After this many malformed messages a channel is no longer read, so a
/// child spewing garbage cannot flood the log or busy the supervisor.
const MAX_BAD_MESSAGES: u32 = 10;

/// The listeners a generation receives, encoded once. Generations started
/// before a config file changed the listeners keep the set they started
/// with; a listener stays open while any of them holds it.
pub struct Outbox {
    pub listeners: Vec<Arc<Listener>>,
    chunks: Vec<(Vec<u8>, std::ops::Range<usize>)>,
}

impl Outbox {
    pub fn new(listeners: Vec<Arc<Listener>>) -> Result<Outbox, hotsup_protocol::EncodeError> {
        let infos: Vec<ListenerInfo> = listeners.iter().map(|l| l.info.clone()).collect();
        let chunks = hotsup_protocol::chunk_listeners(&infos)
            .into_iter()
            .map(|(msg, range)| Ok((msg.encode()?, range)))
            .collect::<Result<_, hotsup_protocol::EncodeError>>()?;
        Ok(Outbox { listeners, chunks })
    }
}

/// What a channel reports to the supervisor loop.
#[derive(Debug)]
pub enum ChannelEvent {
    /// Every listener was sent.
    HandedOff { elapsed: Duration },
    /// The child said READY.
    Ready,
    /// The child sent a status line.
    Status(String),
    /// The child answered HELLO: it speaks this protocol version.
    Hello(u32),
    /// The child reports itself unhealthy.
    Unhealthy(String),
    /// The child sent a well-formed message with a verb this version does
    /// not know.
    Unknown(String),
    /// The child sent something that is not a valid message.
    Malformed(String),
    /// The child stopped reading or closed its end.
    Closed(String),
}

/// A channel shared by its task (which reads) and the supervisor (which
/// writes DRAIN).
pub type Channel = Arc<AsyncFd<OwnedFd>>;

/// Registers the supervisor's end with the runtime. Must run inside it.
pub fn register(fd: OwnedFd) -> std::io::Result<Channel> {
    // SAFETY: an OwnedFd is open and keeps returning the same fd until it is
    // dropped, which happens only when the AsyncFd that owns it is dropped.
    let registered =
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) };
    registered.map(Arc::new).map_err(|e| e.into())
}

async fn send(chan: &Channel, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    chan.async_io(Interest::WRITABLE, |fd| {
        hotsup_protocol::send(fd.as_fd(), bytes, fds)
    })
    .await
}

/// Sends the handoff, then relays messages until the channel closes.
///
/// The queue to the supervisor is bounded: when it is full this task stops
/// reading, and a child that floods its channel is the one that waits.
pub async fn run(
    worker: WorkerId,
    chan: Channel,
    outbox: Arc<Outbox>,
    tx: Sender<(WorkerId, ChannelEvent)>,
) {
    let generation = worker.generation;
    let emit = |ev| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((worker, ev)).await;
        }
    };
    let start = Instant::now();
    let hello = ToChild::Hello {
        version: hotsup_protocol::BASE_VERSION,
        generation,
        listeners: outbox.listeners.len(),
        max_version: VERSION,
    };
    // A Hello of three integers always encodes.
    let hello = hello.encode().unwrap_or_default();
    if let Err(e) = send(&chan, &hello, &[]).await {
        emit(ChannelEvent::Closed(format!("sending HELLO failed: {e}"))).await;
        return;
    }
    for (bytes, range) in &outbox.chunks {
        let fds: Vec<BorrowedFd<'_>> = outbox.listeners[range.clone()]
            .iter()
            .map(|l| l.fd())
            .collect();
        if let Err(e) = send(&chan, bytes, &fds).await {
            emit(ChannelEvent::Closed(format!(
                "sending listeners {}..{} failed: {e}",
                range.start, range.end
            )))
            .await;
            return;
        }
    }
    // The child has its copies: the set may close a listener the config
    // file removed once no generation holds it, and this task must not
    // keep it open.
    drop(outbox);
    emit(ChannelEvent::HandedOff {
        elapsed: start.elapsed(),
    })
    .await;
    relay(worker, chan, tx).await;
}

/// Relays a worker's messages until its channel closes: after the handoff,
/// or for a worker handed over by the hotsup that exec'd this one
/// (`hotsup upgrade --self`), which has its listeners already.
pub async fn relay(worker: WorkerId, chan: Channel, tx: Sender<(WorkerId, ChannelEvent)>) {
    let emit = |ev| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((worker, ev)).await;
        }
    };
    let mut bad = 0;
    loop {
        let received = match chan.readable().await {
            Ok(mut guard) => match hotsup_protocol::recv(chan.get_ref().as_fd(), true) {
                Err(RecvError::WouldBlock) => {
                    guard.clear_ready();
                    continue;
                }
                other => other,
            },
            Err(e) => Err(RecvError::Io(e)),
        };
        let ev = match received {
            Ok(msg) => {
                // Fds a child sends are dropped (closed) right here.
                let extra = msg.fds.len();
                match FromChild::decode(&msg.bytes) {
                    Ok(_) if extra > 0 => Err(format!("message carried {extra} unexpected fds")),
                    Ok(FromChild::Ready) => Ok(ChannelEvent::Ready),
                    Ok(FromChild::Status(s)) => Ok(ChannelEvent::Status(s)),
                    Ok(FromChild::Hello { version }) => Ok(ChannelEvent::Hello(version)),
                    Ok(FromChild::Unhealthy(s)) => Ok(ChannelEvent::Unhealthy(s)),
                    // Well-formed but from a newer protocol: ignored, as the
                    // protocol's versioning rules require.
                    Err(DecodeError::UnknownVerb(verb)) => Ok(ChannelEvent::Unknown(verb)),
                    Err(e) => Err(describe(&e, &msg.bytes)),
                }
            }
            Err(RecvError::Closed) => {
                emit(ChannelEvent::Closed("child closed its end".into())).await;
                return;
            }
            // A child that exits with messages unread resets the pair.
            Err(RecvError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                emit(ChannelEvent::Closed("child closed its end".into())).await;
                return;
            }
            Err(e @ (RecvError::Truncated | RecvError::FdsTruncated)) => Err(e.to_string()),
            Err(e) => {
                emit(ChannelEvent::Closed(format!("read failed: {e}"))).await;
                return;
            }
        };
        match ev {
            Ok(ev) => emit(ev).await,
            Err(why) => {
                bad += 1;
                emit(ChannelEvent::Malformed(why)).await;
                if bad >= MAX_BAD_MESSAGES {
                    emit(ChannelEvent::Closed(format!(
                        "stopped reading after {bad} malformed messages"
                    )))
                    .await;
                    return;
                }
            }
        }
    }
}

fn describe(e: &DecodeError, bytes: &[u8]) -> String {
    let shown: String = String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    format!("{e} (starts with {shown:?})")
}

/// What the supervisor tells a child after the handoff.
#[derive(Debug, Clone, Copy)]
pub enum Command {
    Drain(Duration),
    Pause,
    Resume,
}

/// Sends a command without waiting. Fails if the child's buffer is full or
/// the channel is gone; the caller decides what to do instead.
pub fn send_now(chan: &Channel, cmd: Command) -> std::io::Result<()> {
    let msg = match cmd {
        Command::Drain(timeout) => ToChild::Drain { timeout },
        Command::Pause => ToChild::Pause,
        Command::Resume => ToChild::Resume,
    };
    let bytes = msg.encode().map_err(std::io::Error::other)?;
    hotsup_protocol::send(chan.get_ref().as_fd(), &bytes, &[])
}
