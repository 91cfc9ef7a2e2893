//! hotsup's runtime directory, the one place for the sockets it creates: the
//! control socket (`NAME.sock`, see [`crate::control`]) and the private
//! directory of the children's notify sockets (`notify.XXXXXX`, see
//! [`crate::notify`]).
//!
//! It is `$HOTSUP_RUNTIME_DIR` when set (for containers and tests that want
//! their own), else `/run/hotsup` for root, `$XDG_RUNTIME_DIR/hotsup` for
//! other users, or `$TMPDIR/hotsup-UID` when `XDG_RUNTIME_DIR` is unset.
//! hotsup creates it with mode 0700 when it is missing, and refuses one that
//! another user owns or may write to.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The runtime directory (see the module's documentation).
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HOTSUP_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let uid = rustix::process::geteuid();
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !uid.is_root() && !dir.is_empty() => PathBuf::from(dir).join("hotsup"),
        _ if uid.is_root() => PathBuf::from("/run/hotsup"),
        _ => std::env::temp_dir().join(format!("hotsup-{}", uid.as_raw())),
    }
}

/// Creates `dir` (mode 0700, parents included) if it is missing, and checks
/// that nobody else can put files in it: it is a directory (not a symlink),
/// owned by hotsup's user or root, and not writable by others unless
/// sticky.
pub fn ensure(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    if !meta.is_dir() {
        return refuse(format!("{} is not a directory (a symlink?)", dir.display()));
    }
    if meta.uid() != me && meta.uid() != 0 {
        return refuse(format!(
            "directory {} belongs to uid {}",
            dir.display(),
            meta.uid()
        ));
    }
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.mode() & 0o022 != 0 && !sticky {
        return refuse(format!("directory {} is writable by others", dir.display()));
    }
    Ok(())
}
