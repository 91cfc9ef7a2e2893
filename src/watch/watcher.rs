//! The file watcher: `notify`'s inotify thread, filtered, reduced to one
//! "something changed" value for the event loop.
//!
//! The notify thread filters each event itself (an ignored write never
//! wakes the loop) and records a change in a `tokio::sync::watch` channel:
//! one slot holding a counter, the newest path and its time. The slot is
//! the bound: a burst of a million writes is one pending value, and no
//! change is ever lost, because the counter moves and the loop always
//! sees the newest value. The quiet-period debounce is the loop's (see
//! `super`).

use std::path::PathBuf;
use std::time::Instant;

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, RemoveKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::filter::Filter;

/// The newest change, as the loop sees it.
#[derive(Debug, Clone)]
pub struct Change {
    /// Counts relevant changes since the start.
    pub seq: u64,
    pub path: PathBuf,
    pub at: Instant,
}

/// Keeps the watch alive; dropping it stops notify's thread.
pub struct FsWatcher {
    _inner: RecommendedWatcher,
}

/// Watches `roots` recursively. Changes that `filter` does not skip are
/// published on the returned receiver.
pub fn start(
    roots: &[PathBuf],
    mut filter: Filter,
) -> Result<(FsWatcher, watch::Receiver<Change>), String> {
    let (tx, rx) = watch::channel(Change {
        seq: 0,
        path: PathBuf::new(),
        at: Instant::now(),
    });
    let handler = move |res: notify::Result<notify::Event>| {
        let ev = match res {
            Ok(ev) => ev,
            // Typically the inotify watch limit
            // (fs.inotify.max_user_watches): changes below the directories
            // it could not watch go unseen.
            Err(e) => {
                warn!(error = %e, "watch_error");
                return;
            }
        };
        if ev.need_rescan() {
            // The kernel's queue overflowed: something changed, and which is
            // unknown.
            if let Some(root) = ev.paths.first() {
                publish(&tx, root.clone());
            }
            return;
        }
        if !counts(&ev.kind) {
            return;
        }
        for path in &ev.paths {
            if Filter::is_ignore_file(path) {
                filter.reload();
                continue;
            }
            let is_dir = match ev.kind {
                EventKind::Create(CreateKind::Folder) | EventKind::Remove(RemoveKind::Folder) => {
                    true
                }
                EventKind::Remove(_) => false,
                _ => path.is_dir(),
            };
            if filter.ignored(path, is_dir) || special(path) {
                continue;
            }
            debug!(path = %path.display(), kind = ?ev.kind, "watch_change");
            publish(&tx, path.clone());
        }
    };
    // notify's thread must never take the signals the loop handles.
    let mut inner = crate::logging::with_signals_blocked(|| notify::recommended_watcher(handler))
        .map_err(|e| format!("cannot start the file watcher: {e}"))?;
    for root in roots {
        inner
            .watch(root, RecursiveMode::Recursive)
            .map_err(|e| format!("cannot watch {}: {e}", root.display()))?;
    }
    Ok((FsWatcher { _inner: inner }, rx))
}

/// Sockets and FIFOs are not sources: a control socket or a Unix
/// listener that hotsup itself (or the app) creates in a watched
/// directory must not count as a save.
fn special(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| {
        let t = m.file_type();
        t.is_socket() || t.is_fifo() || t.is_char_device() || t.is_block_device()
    })
}

fn publish(tx: &watch::Sender<Change>, path: PathBuf) {
    tx.send_modify(|c| {
        c.seq = c.seq.wrapping_add(1);
        c.path = path;
        c.at = Instant::now();
    });
}

/// Whether an event can mean new content. Opening and reading (which the
/// build itself does to every source file) cannot.
fn counts(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}
