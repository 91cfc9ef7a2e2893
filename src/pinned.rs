//! Pinned executables: an `O_PATH` descriptor on the exact file a
//! generation ran, so that a crash restart or a rollback runs that file
//! again, whatever a deploy has since put at its path.
//!
//! A deploy that replaces a binary by renaming a new file over it, or by
//! deleting and re-creating it, leaves the old inode alive as long as this
//! descriptor is open. (Writing into a running binary in place fails with
//! `ETXTBSY`, so deploys do not do that.)
//!
//! How a pinned file is run:
//! - While its path still names the same inode, it is run by that path, so
//!   the process looks as usual (`ps`, `/proc/PID/comm`, `$0`).
//! - Once the path names another file, it is run through
//!   `/proc/self/fd/N`: exactly the pinned file. Its `comm` is then `N`;
//!   `argv[0]` is still the command as given.
//! - A `#!` script is different: the kernel runs its interpreter, which
//!   opens the script by the path it is given. Through `/proc/self/fd/N`
//!   that works only if the descriptor stays open in the child, so it does,
//!   and the script sees `$0` = `/proc/self/fd/N`. What is pinned is the
//!   script file itself, not the interpreter, and not the files the script
//!   reads or runs by path.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::child::{self, ResolveError};

/// One pinned executable.
#[derive(Debug)]
pub struct Pinned {
    fd: OwnedFd,
    /// The file the command resolved to when it was pinned.
    path: PathBuf,
    /// `/proc/self/fd/N`, the way to run exactly this file.
    fd_path: PathBuf,
    dev: u64,
    ino: u64,
    script: bool,
}

impl Pinned {
    /// Looks the command up now and pins the file found.
    pub fn resolve(program: &OsStr) -> Result<Pinned, ResolveError> {
        let path = child::resolve(program)?;
        Pinned::open(&path).map_err(|source| ResolveError::Io { path, source })
    }

    fn open(path: &Path) -> std::io::Result<Pinned> {
        let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
        let st = rustix::fs::fstat(&fd)?;
        // Only the first two bytes tell a script; a file hotsup cannot read
        // but may execute is a binary.
        let script = std::fs::File::open(path)
            .and_then(|mut f| {
                let mut magic = [0u8; 2];
                f.read_exact(&mut magic).map(|()| magic == *b"#!")
            })
            .unwrap_or(false);
        Ok(Pinned {
            fd_path: PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            fd,
            path: path.to_path_buf(),
            dev: st.st_dev,
            ino: st.st_ino,
            script,
        })
    }

    /// The path the command resolved to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the path still names the pinned file.
    fn in_place(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == (self.dev, self.ino))
    }

    /// What to exec to run exactly this file.
    pub fn exec_path(&self) -> &Path {
        if self.in_place() {
            &self.path
        } else {
            &self.fd_path
        }
    }

    /// The descriptor the child must keep open across exec: only when a
    /// script runs through `/proc/self/fd/N`, or when the hidden
    /// `--fds systemd` step re-executes hotsup before the app.
    pub fn inherit_fd(&self, through_trampoline: bool) -> Option<RawFd> {
        let by_fd = !self.in_place();
        (by_fd && (self.script || through_trampoline)).then(|| self.fd.as_raw_fd())
    }

    /// Whether `pid` runs this very file (`/proc/PID/exe`).
    pub fn runs_in(&self, pid: i32) -> bool {
        std::fs::metadata(format!("/proc/{pid}/exe"))
            .is_ok_and(|m| (m.dev(), m.ino()) == (self.dev, self.ino))
    }

    /// Pins what `pid` runs, when a deploy raced the spawn and the file at
    /// the path changed between pinning and exec.
    pub fn from_process(pid: i32, path: &Path) -> std::io::Result<Pinned> {
        let exe = format!("/proc/{pid}/exe");
        let fd = rustix::fs::open(&exe, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
        let st = rustix::fs::fstat(&fd)?;
        Ok(Pinned {
            fd_path: PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            fd,
            path: path.to_path_buf(),
            dev: st.st_dev,
            ino: st.st_ino,
            script: false,
        })
    }

    pub fn is_script(&self) -> bool {
        self.script
    }

    /// This pin as `hotsup upgrade --self` hands it over; its `O_PATH` fd
    /// must survive the exec (a replaced binary lives on only through it).
    pub fn to_state(&self, id: u64) -> crate::state::PinState {
        crate::state::PinState {
            id,
            fd: self.fd.as_raw_fd(),
            path: crate::state::Os::new(self.path.as_os_str()),
            dev: self.dev,
            inode: self.ino,
            script: self.script,
        }
    }

    /// Takes over a pin of the hotsup that exec'd this one. The fd must be
    /// the very file the state names.
    pub fn adopt(st: &crate::state::PinState) -> Result<Pinned, String> {
        let fd = crate::state::adopt_fd(st.fd, "a pinned executable")?;
        match rustix::fs::fstat(&fd) {
            Ok(s) if (s.st_dev, s.st_ino) == (st.dev, st.inode) => {}
            _ => {
                // Not the file described: not ours to close either.
                std::mem::forget(fd);
                return Err(format!(
                    "fd {} is not the pinned {}",
                    st.fd,
                    st.path.to_path().display()
                ));
            }
        }
        Ok(Pinned {
            fd_path: PathBuf::from(format!("/proc/self/fd/{}", st.fd)),
            fd,
            path: st.path.to_path(),
            dev: st.dev,
            ino: st.inode,
            script: st.script,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn executable(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn a_replaced_file_is_run_through_its_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let p = executable(dir.path(), "app", "#!/bin/sh\necho one\n");
        let pin = Pinned::resolve(p.as_os_str()).unwrap();
        assert!(pin.is_script());
        assert_eq!(pin.exec_path(), p);
        assert_eq!(pin.inherit_fd(false), None);
        // A deploy renames a new file over it.
        let tmp = executable(dir.path(), "app.new", "#!/bin/sh\necho two\n");
        std::fs::rename(&tmp, &p).unwrap();
        assert_ne!(pin.exec_path(), p);
        assert!(pin.exec_path().starts_with("/proc/self/fd/"));
        // A script needs its descriptor in the child; the old content is
        // still what the descriptor reads.
        assert!(pin.inherit_fd(false).is_some());
        let pinned_text = std::fs::read_to_string(pin.exec_path()).unwrap();
        assert_eq!(pinned_text, "#!/bin/sh\necho one\n");
    }

    #[test]
    fn a_binary_is_not_a_script() {
        let pin = Pinned::resolve(OsStr::new("true")).unwrap();
        assert!(!pin.is_script());
        assert_eq!(pin.inherit_fd(true), None);
    }
}
