//! One cgroup v2 per worker process, so that no process escapes its
//! generation.
//!
//! A process group is not a boundary: `setsid()` or `setpgid()` leaves it,
//! and a process in the same session can join another generation's group.
//! A cgroup holds: a process can leave it only by writing to a
//! `cgroup.procs` it has write access to, and its children are born in it.
//! So, where hotsup may create cgroups, each generation gets one; it is
//! killed with `cgroup.kill` and notify senders are attributed by
//! `/proc/PID/cgroup`. Elsewhere hotsup keeps using process groups.
//!
//! # Layout
//!
//! hotsup finds the cgroup2 mount in `/proc/self/mountinfo` (on hybrid
//! systems it is `/sys/fs/cgroup/unified`, under pure-unified systemd
//! `/sys/fs/cgroup`) and its own cgroup from the `0::PATH` line of
//! `/proc/self/cgroup` (`/` at the hierarchy root or in a cgroup namespace).
//! It then creates, below its own cgroup `<own>`:
//!
//! ```text
//! <own>/                         hotsup itself stays here
//! <own>/hotsup-<pid>/            this supervisor's base: no process ever
//! <own>/hotsup-<pid>/worker-1/   one leaf per worker process, never reused
//! <own>/hotsup-<pid>/worker-2/
//! ```
//!
//! hotsup does not move itself. The "no internal processes" rule only
//! forbids a cgroup with processes from *enabling controllers* for its
//! children (and the kernel never lets a non-root cgroup that enabled some
//! hold processes), so a process may live in `<own>` while its
//! descendants' cgroups carry no controllers: that is always legal, at the
//! hierarchy root, in a session scope, and in a `Delegate=yes` unit alike.
//! hotsup needs no controllers: it only kills and attributes.
//!
//! Moving itself into a leaf (`<own>/supervisor`, as systemd recommends for
//! delegated units, and as `DelegateSubgroup=` does for it) would let
//! `<own>` enable controllers for per-generation limits, but it changes
//! hotsup's own cgroup, needs a way back before the base can be removed at
//! exit, collides when two supervisors share `<own>` (a shell's scope, or
//! the root here), and is undone by nothing after a `kill -9`. Per-generation
//! resource limits are not a feature, so hotsup stays put. If they become
//! one, the base can grow a `supervisor` leaf without changing the rest.
//!
//! # Entering
//!
//! The child is born in its cgroup: [`GenCgroup::open_enter`] opens the
//! generation's directory before the fork, and [`crate::fork`] forks with
//! `clone3(CLONE_INTO_CGROUP)` (Linux 5.7). Every process the app will ever
//! start is then born in the cgroup too. Moving the child from the parent
//! after the fork would race with the app's first `fork`.
//!
//! A kernel without `CLONE_INTO_CGROUP` refuses it (ENOSYS, E2BIG or
//! EINVAL); then the child moves itself between fork and exec, before
//! anything else, by writing `0` (the writer itself) to the generation's
//! `cgroup.procs`, opened before the fork. That write takes the kernel's
//! `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace
//! period: seconds on a loaded machine, while hotsup waits for the exec.
//! Being born there takes it only for reading.
//!
//! Enter before dropping privileges: kernels before 5.16 check the writer's
//! credentials at write time, later ones the opener's.
//!
//! # Stale directories
//!
//! Each supervisor holds an exclusive `flock` on its base directory for its
//! whole life; the kernel drops it when the process dies, however it dies.
//! At start-up hotsup removes the empty `worker-*` leaves and the base of every
//! `hotsup-*` directory in `<own>` nobody holds locked: the leftovers of a
//! supervisor that was `kill -9`ed. The lock, not the pid in the name,
//! decides: pids are reused, and a supervisor in another pid namespace may
//! share `<own>`. Leaves that still hold processes (escapees of a dead
//! supervisor: its main children got `PDEATHSIG`, their double-forked
//! descendants did not) are neither killed nor removed, because they may
//! belong to another service that shares `<own>`; they are reported by
//! [`Cgroups::stale_populated`] so the caller can log them. Under systemd,
//! stopping or restarting the unit kills its whole cgroup, these included.
//!
//! # Security
//!
//! Moving a process needs write access to the target's `cgroup.procs` and
//! to that of the common ancestor of both cgroups. hotsup creates every
//! directory itself, so:
//!
//! - hotsup as root, app as another user: the app cannot write root's
//!   0644 `cgroup.procs` files, so it cannot leave its generation nor enter
//!   another one. The boundary holds against a hostile app.
//! - hotsup and app under the same uid (a `Delegate=yes` user service, or
//!   root running a root app): the app may write the same files hotsup may,
//!   so it could move itself out. The boundary holds against accidents
//!   (`setsid`, double forks, daemonizing libraries), not against an app
//!   that means to escape. A root app can do anything, cgroups or not.
//!
//! The open `cgroup.procs` is close-on-exec, so the app never inherits it.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, CWD, FlockOperation, Mode as FileMode, OFlags};
use rustix::io::Errno;
use rustix::process::{Pid, Signal};

/// Prefix of a supervisor's base directory: `hotsup-<pid>[.<n>]`.
const BASE_PREFIX: &str = "hotsup-";
/// Prefix of a worker's directory: `worker-<seq>`.
const GEN_PREFIX: &str = "worker-";
/// Names tried for the base directory before giving up.
const BASE_ATTEMPTS: u32 = 64;
/// Rounds of "read cgroup.procs, SIGKILL what is new" when `cgroup.kill`
/// is missing (kernels before 5.14).
const FALLBACK_KILL_ROUNDS: usize = 16;
/// Longest sleep between two reads of `cgroup.events` while waiting.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// How long dropping the manager waits for killed generations to empty.
const DROP_GRACE: Duration = Duration::from_secs(2);

/// Whether each generation gets a cgroup of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A cgroup v2 per generation where hotsup may create one (root, a
    /// systemd unit with Delegate=yes, a container with a writable
    /// cgroupfs); process groups elsewhere.
    Auto,
    /// Process groups only.
    Off,
}

/// Why cgroups cannot be used, or what failed on one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no cgroup2 filesystem is mounted")]
    NoMount,
    #[error("/proc/self/cgroup has no cgroup v2 line (0::PATH)")]
    NoOwnCgroup,
    #[error(
        "hotsup's cgroup {} lies outside its cgroup namespace",
        .0.display()
    )]
    OutsideNamespace(PathBuf),
    #[error(
        "hotsup's cgroup {} is not visible under any cgroup2 mount",
        .0.display()
    )]
    NotVisible(PathBuf),
    #[error("hotsup's cgroup {} is of type {kind:?}, not a domain", path.display())]
    NotDomain { path: PathBuf, kind: String },
    #[error("cannot create cgroups in {}: {source}", path.display())]
    NotWritable { path: PathBuf, source: io::Error },
    #[error("no free name for this supervisor's cgroup in {}", .0.display())]
    NoName(PathBuf),
    #[error("cgroup {} exists already", .0.display())]
    Exists(PathBuf),
    #[error("cgroup {} still has processes", .0.display())]
    Busy(PathBuf),
    #[error("cgroup {} kept processes after {FALLBACK_KILL_ROUNDS} rounds of SIGKILL", .0.display())]
    Unkillable(PathBuf),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path, e: impl Into<io::Error>) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// This supervisor's cgroup subtree. Created once, before the first child;
/// dropping it kills what is left in its generations and removes every
/// directory it created.
#[derive(Debug)]
pub struct Cgroups {
    /// Where the cgroup2 filesystem is mounted.
    mount: PathBuf,
    /// The base directory, `<mount>/<own>/hotsup-<pid>`.
    base: PathBuf,
    /// The base as `/proc/PID/cgroup` shows it.
    base_rel: PathBuf,
    /// The base directory, flock'ed: it marks the base as alive.
    _lock: OwnedFd,
    kill_supported: bool,
    swept: usize,
    stale_populated: Vec<PathBuf>,
}

impl Cgroups {
    /// Sets up this supervisor's subtree. `Ok(None)` for [`Mode::Off`]; an
    /// error, for one log line, when no writable cgroup v2 subtree exists:
    /// the caller then falls back to process groups.
    pub fn detect(mode: Mode) -> Result<Option<Cgroups>, Error> {
        match mode {
            Mode::Off => Ok(None),
            Mode::Auto => Cgroups::create_base().map(Some),
        }
    }

    fn create_base() -> Result<Cgroups, Error> {
        let own_rel = own_cgroup()?;
        let mountinfo = std::fs::read("/proc/self/mountinfo")
            .map_err(|e| io_err("read", Path::new("/proc/self/mountinfo"), e))?;
        let (mount, own_dir) = locate(&mountinfo, &own_rel)?;
        check_domain(&own_dir)?;
        // The kernel checks the common ancestor's cgroup.procs when a child
        // moves from <own> into its generation: without write access every
        // spawn would fail, so fall back now instead.
        let procs = own_dir.join("cgroup.procs");
        rustix::fs::accessat(CWD, &procs, rustix::fs::Access::WRITE_OK, AtFlags::EACCESS).map_err(
            |e| Error::NotWritable {
                path: own_dir.clone(),
                source: e.into(),
            },
        )?;
        let (swept, stale_populated) = sweep(&own_dir);
        let (name, lock) = make_base(&own_dir)?;
        let base = own_dir.join(&name);
        let kill_supported = rustix::fs::accessat(
            CWD,
            base.join("cgroup.kill"),
            rustix::fs::Access::EXISTS,
            AtFlags::empty(),
        )
        .is_ok();
        Ok(Cgroups {
            mount,
            base_rel: own_rel.join(&name),
            base,
            _lock: lock,
            kill_supported,
            swept,
            stale_populated,
        })
    }

    /// This subtree as `hotsup upgrade --self` hands it over; the lock's fd
    /// must survive the exec.
    pub fn to_state(&self) -> crate::state::CgroupsState {
        use crate::state::Os;
        crate::state::CgroupsState {
            mount: Os::new(self.mount.as_os_str()),
            base: Os::new(self.base.as_os_str()),
            base_rel: Os::new(self.base_rel.as_os_str()),
            lock_fd: self._lock.as_raw_fd(),
            kill_supported: self.kill_supported,
        }
    }

    /// Takes over the subtree of the hotsup that exec'd this one: the base
    /// directory must still be there, and the fd of its lock open.
    pub fn adopt(st: &crate::state::CgroupsState) -> Result<Cgroups, String> {
        let base = st.base.to_path();
        if !base.is_dir() {
            return Err(format!("cgroup {} is gone", base.display()));
        }
        let lock = crate::state::adopt_fd(st.lock_fd, "the cgroup lock")?;
        Ok(Cgroups {
            mount: st.mount.to_path(),
            base,
            base_rel: st.base_rel.to_path(),
            _lock: lock,
            kill_supported: st.kill_supported,
            swept: 0,
            stale_populated: Vec::new(),
        })
    }

    /// The cgroup2 mount point.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// This supervisor's base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Whether the kernel has `cgroup.kill` (5.14); without it, kills
    /// signal the pids listed in `cgroup.procs`, which can race with forks
    /// and pid reuse.
    pub fn kill_supported(&self) -> bool {
        self.kill_supported
    }

    /// How many stale base directories of dead supervisors were removed.
    pub fn swept(&self) -> usize {
        self.swept
    }

    /// Generation cgroups of dead supervisors that still hold processes:
    /// left alone, for the caller to report.
    pub fn stale_populated(&self) -> &[PathBuf] {
        &self.stale_populated
    }

    /// Creates the cgroup of generation `id`. Ids are never reused, so the
    /// directory must not exist yet.
    pub fn create(&self, id: u64) -> Result<GenCgroup, Error> {
        let name = format!("{GEN_PREFIX}{id}");
        let dir = self.base.join(&name);
        match rustix::fs::mkdir(&dir, FileMode::from_raw_mode(0o755)) {
            Ok(()) => {}
            Err(Errno::EXIST) => return Err(Error::Exists(dir)),
            Err(e) => return Err(io_err("create", &dir, e)),
        }
        Ok(GenCgroup {
            id,
            rel: self.base_rel.join(&name),
            dir,
        })
    }

    /// Kills what is left in the generation cgroups, waits up to `grace`
    /// for them to empty, and removes them and the base.
    fn cleanup(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut busy = Vec::new();
        for dir in gen_dirs(&self.base) {
            match remove_dir(&dir) {
                Ok(()) => {}
                Err(Error::Busy(_)) => busy.push(dir),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        for dir in &busy {
            match kill_dir(dir) {
                Ok(()) => tracing::warn!(
                    cgroup = %dir.display(),
                    "killed processes still in a generation's cgroup at exit"
                ),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        for dir in &busy {
            let left = deadline.saturating_duration_since(Instant::now());
            match wait_empty_dir(dir, left).and_then(|_| remove_dir(dir)) {
                Ok(()) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
        if let Err(e) = remove_dir(&self.base) {
            tracing::warn!("{e}");
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.cleanup(DROP_GRACE);
    }
}

/// The cgroup of one generation.
#[derive(Debug)]
pub struct GenCgroup {
    id: u64,
    /// The directory in the cgroup2 mount.
    dir: PathBuf,
    /// The cgroup as `/proc/PID/cgroup` shows it.
    rel: PathBuf,
}

/// A generation's cgroup directory, open for [`crate::fork`]: keep it until
/// `spawn` returns.
#[derive(Debug)]
pub struct EnterFd(OwnedFd);

impl AsRawFd for EnterFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for EnterFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A generation's `cgroup.events`, open for reading. It can be polled (and
/// registered with epoll, e.g. tokio's `AsyncFd` with `Interest::PRIORITY`):
/// it signals `POLLPRI` whenever `populated` or `frozen` changes.
#[derive(Debug)]
pub struct Events {
    fd: OwnedFd,
    path: PathBuf,
}

impl Events {
    /// Whether the cgroup holds any live process (zombies do not count).
    pub fn populated(&self) -> Result<bool, Error> {
        let mut buf = [0u8; 256];
        let mut len = 0;
        // Re-reading from offset 0 also re-arms POLLPRI.
        loop {
            match rustix::io::pread(&self.fd, &mut buf[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    if len == buf.len() {
                        break;
                    }
                }
                Err(Errno::INTR) => continue,
                // The cgroup was removed, which only an empty one can be.
                Err(Errno::NODEV) => return Ok(false),
                Err(e) => return Err(io_err("read", &self.path, e)),
            }
        }
        parse_populated(&buf[..len]).ok_or_else(|| {
            io_err(
                "parse",
                &self.path,
                io::Error::new(io::ErrorKind::InvalidData, "no populated line"),
            )
        })
    }
}

impl AsFd for Events {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Events {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl GenCgroup {
    pub fn to_state(&self) -> crate::state::CgroupState {
        use crate::state::Os;
        crate::state::CgroupState {
            id: self.id,
            dir: Os::new(self.dir.as_os_str()),
            rel: Os::new(self.rel.as_os_str()),
        }
    }

    /// A generation's cgroup as the hotsup that exec'd this one left it.
    pub fn adopt(st: &crate::state::CgroupState) -> GenCgroup {
        GenCgroup {
            id: st.id,
            dir: st.dir.to_path(),
            rel: st.rel.to_path(),
        }
    }

    /// The generation this cgroup belongs to.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The directory in the cgroup2 mount.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cgroup as `/proc/PID/cgroup` (and [`cgroup_of`]) shows it.
    pub fn path(&self) -> &Path {
        &self.rel
    }

    /// Opens the directory for `clone3(CLONE_INTO_CGROUP)` (not `O_PATH`,
    /// which clone3 refuses): call it before `spawn`.
    pub fn open_enter(&self) -> Result<EnterFd, Error> {
        rustix::fs::open(
            &self.dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            FileMode::empty(),
        )
        .map(EnterFd)
        .map_err(|e| io_err("open", &self.dir, e))
    }

    /// SIGKILLs every process in the cgroup, wherever it moved in the
    /// process tree. With `cgroup.kill` (Linux 5.14) this is one write, and
    /// forks racing with it are killed too; without it, the pids listed in
    /// `cgroup.procs` are signalled (with the cgroup frozen when the kernel
    /// can) until no new pid shows up. It does not wait: see
    /// [`GenCgroup::events`] and [`GenCgroup::is_populated`].
    pub fn kill(&self) -> Result<(), Error> {
        kill_dir(&self.dir)
    }

    /// Opens `cgroup.events`, to read or poll whether the cgroup is
    /// populated.
    pub fn events(&self) -> Result<Events, Error> {
        open_events(&self.dir)
    }

    /// Whether any live process is in the cgroup.
    pub fn is_populated(&self) -> Result<bool, Error> {
        self.events()?.populated()
    }

    /// Blocks until the cgroup is empty (`true`) or `timeout` has passed
    /// (`false`), woken by `cgroup.events`. For exit paths and tests: the
    /// supervisor loop should poll [`GenCgroup::events`] instead.
    pub fn wait_empty(&self, timeout: Duration) -> Result<bool, Error> {
        wait_empty_dir(&self.dir, timeout)
    }

    /// Removes the cgroup. [`Error::Busy`] while it holds processes: retry
    /// once they are gone. Removing a removed cgroup succeeds.
    pub fn remove(&self) -> Result<(), Error> {
        remove_dir(&self.dir)
    }

    /// Whether `pid` is in this cgroup now. One small read of
    /// `/proc/PID/cgroup`, no allocation; `false` once the process is gone.
    pub fn contains(&self, pid: Pid) -> bool {
        let want = self.rel.as_os_str().as_bytes();
        with_v2_line(pid, |line| line == want).unwrap_or(false)
    }
}

/// `pid`'s cgroup v2, as its `0::` line in `/proc/PID/cgroup` shows it
/// (relative to the reader's cgroup namespace). `None` when the process is
/// gone, or its cgroup was removed (a zombie). One small read; one
/// allocation for the result.
///
/// Call it when a notify datagram arrives, with the pid from its
/// `SCM_CREDENTIALS`: a sender that exits right after sending cannot be
/// attributed later.
pub fn cgroup_of(pid: Pid) -> Option<PathBuf> {
    with_v2_line(pid, |line| PathBuf::from(OsStr::from_bytes(line)))
}

/// Runs `f` on the path of `pid`'s `0::` line, read with a stack buffer
/// (a heap one only for a file longer than a page).
fn with_v2_line<R>(pid: Pid, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    let mut path = [0u8; 32];
    let path = proc_cgroup_path(pid, &mut path)?;
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, FileMode::empty()).ok()?;
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        match rustix::io::read(&fd, &mut buf[len..]) {
            Ok(0) => return v2_line(&buf[..len]).map(f),
            Ok(n) => len += n,
            Err(Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
    // Many deep cgroup v1 hierarchies: read the rest on the heap.
    let mut all = buf.to_vec();
    let mut chunk = [0u8; 4096];
    loop {
        match rustix::io::read(&fd, &mut chunk) {
            Ok(0) => return v2_line(&all).map(f),
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
}

/// `/proc/<pid>/cgroup` as a C string in `buf`, without allocating.
fn proc_cgroup_path(pid: Pid, buf: &mut [u8; 32]) -> Option<&CStr> {
    let mut digits = [0u8; 10];
    let mut n = pid.as_raw_pid().unsigned_abs();
    let mut nd = 0;
    loop {
        digits[nd] = b'0' + (n % 10) as u8;
        nd += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let head = b"/proc/";
    buf[..head.len()].copy_from_slice(head);
    let mut len = head.len();
    for d in digits[..nd].iter().rev() {
        buf[len] = *d;
        len += 1;
    }
    let tail = b"/cgroup\0";
    buf[len..len + tail.len()].copy_from_slice(tail);
    len += tail.len();
    CStr::from_bytes_with_nul(&buf[..len]).ok()
}

/// The path of the `0::PATH` line, unless the cgroup was removed.
fn v2_line(text: &[u8]) -> Option<&[u8]> {
    text.split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"0::"))
        .filter(|p| !p.ends_with(b" (deleted)"))
}

/// hotsup's own cgroup v2 path.
fn own_cgroup() -> Result<PathBuf, Error> {
    let path = Path::new("/proc/self/cgroup");
    let text = std::fs::read(path).map_err(|e| io_err("read", path, e))?;
    let rel = v2_line(&text).ok_or(Error::NoOwnCgroup)?;
    let rel = PathBuf::from(OsStr::from_bytes(rel));
    if !rel.is_absolute() || rel.components().any(|c| c == Component::ParentDir) {
        return Err(Error::OutsideNamespace(rel));
    }
    Ok(rel)
}

/// One line of `/proc/self/mountinfo`, for the fields used here.
#[derive(Debug, PartialEq, Eq)]
struct MountLine {
    root: PathBuf,
    point: PathBuf,
    fstype: Vec<u8>,
}

fn parse_mountinfo_line(line: &[u8]) -> Option<MountLine> {
    let mut fields = line.split(|&b| b == b' ');
    let root = fields.nth(3)?;
    let point = fields.next()?;
    // Skip the mount options and the optional fields up to the separator.
    fields.by_ref().find(|f| *f == b"-")?;
    let fstype = fields.next()?;
    Some(MountLine {
        root: PathBuf::from(OsStr::from_bytes(&unescape(root))),
        point: PathBuf::from(OsStr::from_bytes(&unescape(point))),
        fstype: unescape(fstype),
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let oct = s.get(i + 1..i + 4).filter(|d| {
            s[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match oct {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    out
}

/// The cgroup2 mount that shows `own_rel`, and `own_rel`'s directory in it.
/// A mount's root is the part of the hierarchy it shows (`/` usually; a
/// subtree for a container that was given only its own cgroup).
fn locate(mountinfo: &[u8], own_rel: &Path) -> Result<(PathBuf, PathBuf), Error> {
    let mut seen = false;
    for m in mountinfo
        .split(|&b| b == b'\n')
        .filter_map(parse_mountinfo_line)
    {
        if m.fstype != b"cgroup2" {
            continue;
        }
        seen = true;
        if let Ok(rest) = own_rel.strip_prefix(&m.root) {
            let dir = if rest.as_os_str().is_empty() {
                m.point.clone()
            } else {
                m.point.join(rest)
            };
            return Ok((m.point, dir));
        }
    }
    Err(if seen {
        Error::NotVisible(own_rel.to_path_buf())
    } else {
        Error::NoMount
    })
}

/// Children of a threaded cgroup are threaded, and processes cannot be
/// moved into those as a whole. The root has no `cgroup.type`.
fn check_domain(own_dir: &Path) -> Result<(), Error> {
    let path = own_dir.join("cgroup.type");
    let kind = match std::fs::read_to_string(&path) {
        Ok(k) => k.trim().to_string(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("read", &path, e)),
    };
    match kind.as_str() {
        "domain" | "domain threaded" => Ok(()),
        _ => Err(Error::NotDomain {
            path: own_dir.to_path_buf(),
            kind,
        }),
    }
}

/// Creates and locks this supervisor's base directory in `own_dir`.
fn make_base(own_dir: &Path) -> Result<(String, OwnedFd), Error> {
    let pid = rustix::process::getpid().as_raw_pid();
    for attempt in 0..BASE_ATTEMPTS {
        // Another manager in this process (tests), or a stale directory of
        // a dead supervisor that had our pid and still holds processes.
        let name = if attempt == 0 {
            format!("{BASE_PREFIX}{pid}")
        } else {
            format!("{BASE_PREFIX}{pid}.{attempt}")
        };
        let dir = own_dir.join(&name);
        match rustix::fs::mkdir(&dir, FileMode::from_raw_mode(0o755)) {
            Ok(()) => {}
            Err(Errno::EXIST) => continue,
            Err(e) => {
                return Err(Error::NotWritable {
                    path: own_dir.to_path_buf(),
                    source: e.into(),
                });
            }
        }
        // A supervisor starting at the same moment may sweep the new,
        // still unlocked directory: lock it, then check it is still the
        // one created, and take another name if not.
        let Ok(fd) = open_dir(&dir) else { continue };
        if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        let same = match (rustix::fs::fstat(&fd), rustix::fs::stat(&dir)) {
            (Ok(a), Ok(b)) => a.st_ino == b.st_ino && a.st_dev == b.st_dev,
            _ => false,
        };
        if same {
            return Ok((name, fd));
        }
    }
    Err(Error::NoName(own_dir.to_path_buf()))
}

fn open_dir(dir: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        FileMode::empty(),
    )
}

/// Removes the directories of dead supervisors in `own_dir`: every
/// `hotsup-*` nobody holds locked. Returns how many bases were removed and
/// the generation cgroups left because they hold processes.
fn sweep(own_dir: &Path) -> (usize, Vec<PathBuf>) {
    let mut swept = 0;
    let mut populated = Vec::new();
    let Ok(entries) = std::fs::read_dir(own_dir) else {
        return (swept, populated);
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .as_bytes()
            .starts_with(BASE_PREFIX.as_bytes())
        {
            continue;
        }
        let dir = entry.path();
        let Ok(fd) = open_dir(&dir) else { continue };
        // A live supervisor holds its lock; holding it here keeps a
        // starting supervisor from adopting the directory being removed.
        if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        let mut busy = false;
        for g in gen_dirs(&dir) {
            if let Err(Error::Busy(p)) = remove_dir(&g) {
                populated.push(p);
                busy = true;
            }
        }
        if !busy && remove_dir(&dir).is_ok() {
            swept += 1;
        }
    }
    (swept, populated)
}

/// The `worker-*` directories in `base`.
fn gen_dirs(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().as_bytes().starts_with(GEN_PREFIX.as_bytes()))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

fn remove_dir(dir: &Path) -> Result<(), Error> {
    match rustix::fs::unlinkat(CWD, dir, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        // The kernel refuses with EBUSY while the cgroup has processes or
        // child cgroups.
        Err(Errno::BUSY) | Err(Errno::NOTEMPTY) => Err(Error::Busy(dir.to_path_buf())),
        Err(e) => Err(io_err("remove", dir, e)),
    }
}

/// Writes `value` to the file at `path`, opened for this one write.
fn write_file(path: &Path, value: &[u8]) -> Result<(), Errno> {
    let fd = rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, FileMode::empty())?;
    loop {
        match rustix::io::write(&fd, value) {
            Ok(n) if n == value.len() => return Ok(()),
            Ok(_) => return Err(Errno::IO),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn kill_dir(dir: &Path) -> Result<(), Error> {
    let path = dir.join("cgroup.kill");
    match write_file(&path, b"1") {
        Ok(()) => Ok(()),
        Err(Errno::NOENT) => {
            if rustix::fs::accessat(
                CWD,
                dir.join("cgroup.procs"),
                rustix::fs::Access::EXISTS,
                AtFlags::empty(),
            )
            .is_err()
            {
                // The cgroup itself is gone, so nothing is in it.
                return Ok(());
            }
            kill_by_pids(dir)
        }
        Err(e) => Err(io_err("write", &path, e)),
    }
}

/// The fallback for kernels without `cgroup.kill`: SIGKILL each pid listed
/// in `cgroup.procs` until a round finds no pid it has not signalled. The
/// cgroup is frozen meanwhile where `cgroup.freeze` exists (5.2): frozen
/// processes neither fork nor exit on their own, yet die of SIGKILL, so
/// the list holds still. Without the freezer a pid may exit and be reused
/// between the read and the kill; the window is a few microseconds.
fn kill_by_pids(dir: &Path) -> Result<(), Error> {
    let freeze = dir.join("cgroup.freeze");
    let frozen = write_file(&freeze, b"1").is_ok();
    let procs = dir.join("cgroup.procs");
    let mut signalled: Vec<i32> = Vec::new();
    let mut outcome = Err(Error::Unkillable(dir.to_path_buf()));
    for _ in 0..FALLBACK_KILL_ROUNDS {
        let text = match std::fs::read(&procs) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                outcome = Ok(());
                break;
            }
            Err(e) => {
                outcome = Err(io_err("read", &procs, e));
                break;
            }
        };
        let mut fresh = 0;
        for raw in text
            .split(|&b| b == b'\n')
            .filter_map(|l| std::str::from_utf8(l).ok()?.parse::<i32>().ok())
        {
            if let Some(pid) = Pid::from_raw(raw) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
                if !signalled.contains(&raw) {
                    signalled.push(raw);
                    fresh += 1;
                }
            }
        }
        if fresh == 0 {
            outcome = Ok(());
            break;
        }
    }
    if frozen {
        // Killed processes die frozen or not; thawing lets any survivor of
        // a failed round run again rather than hang.
        if let Err(e) = write_file(&freeze, b"0") {
            tracing::warn!(cgroup = %dir.display(), "cannot thaw: {e}");
        }
    }
    outcome
}

fn open_events(dir: &Path) -> Result<Events, Error> {
    let path = dir.join("cgroup.events");
    let fd = rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, FileMode::empty())
        .map_err(|e| io_err("open", &path, e))?;
    Ok(Events { fd, path })
}

fn parse_populated(text: &[u8]) -> Option<bool> {
    text.split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"populated "))
        .and_then(|v| match v {
            b"0" => Some(false),
            b"1" => Some(true),
            _ => None,
        })
}

fn wait_empty_dir(dir: &Path, timeout: Duration) -> Result<bool, Error> {
    // No deadline for a timeout too long to represent.
    let deadline = Instant::now().checked_add(timeout);
    let events = match open_events(dir) {
        Ok(e) => e,
        // A removed cgroup is empty.
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(true);
        }
        Err(e) => return Err(e),
    };
    loop {
        if !events.populated()? {
            return Ok(true);
        }
        let left = deadline.map_or(POLL_SLICE, |d| d.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            return Ok(false);
        }
        // The kernel sends at most one notification per 10 ms and defers
        // the rest; removing the cgroup meanwhile drops the deferred one.
        // Re-reading now and then cannot miss that: a removed cgroup reads
        // as empty.
        let left = left.min(POLL_SLICE);
        let timeout = rustix::event::Timespec {
            tv_sec: left.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: left.subsec_nanos().into(),
        };
        let mut fds = [rustix::event::PollFd::new(
            &events.fd,
            rustix::event::PollFlags::PRI,
        )];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(io_err("poll", &events.path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};

    use rustix::process::{WaitOptions, getpid};

    /// Longest wait for anything in these tests; SIGKILLed sleeps die in
    /// microseconds.
    const WAIT: Duration = Duration::from_secs(10);

    /// The manager for a test, or `None` after saying why the test is
    /// skipped. Set HOTSUP_REQUIRE_CGROUP=1 (CI as root) to make an
    /// unavailable cgroup a failure instead.
    fn manager(test: &str) -> Option<Cgroups> {
        match Cgroups::detect(Mode::Auto) {
            Ok(Some(m)) => {
                // The escapees are orphaned on purpose; as a subreaper this
                // test process gets them back and reaps them, since PID 1
                // (on this machine, not an init) may never do it.
                rustix::process::set_child_subreaper(Some(getpid())).expect("subreaper");
                Some(m)
            }
            Ok(None) => panic!("{test}: Mode::Auto gave neither a manager nor a reason"),
            Err(e) => {
                assert!(
                    std::env::var_os("HOTSUP_REQUIRE_CGROUP").is_none(),
                    "{test}: cgroups required but unavailable: {e}"
                );
                // Past libtest's capture, so the skip shows in plain
                // `cargo test` output.
                let _ = writeln!(io::stderr(), "skipped: {test}: {e}");
                None
            }
        }
    }

    fn pid_of(raw: u32) -> Pid {
        Pid::from_raw(raw as i32).expect("pid")
    }

    /// Moves the calling process into the cgroup whose `cgroup.procs` is
    /// open at `procs_fd`: one raw write, for `pre_exec`.
    fn enter_in_child(procs_fd: RawFd) -> io::Result<()> {
        // SAFETY: the parent keeps the fd open until spawn returns.
        let fd = unsafe { BorrowedFd::borrow_raw(procs_fd) };
        rustix::io::write(fd, b"0")?;
        Ok(())
    }

    fn open_procs(g: &GenCgroup) -> OwnedFd {
        rustix::fs::open(
            g.dir().join("cgroup.procs"),
            OFlags::WRONLY | OFlags::CLOEXEC,
            FileMode::empty(),
        )
        .expect("open cgroup.procs")
    }

    /// Starts `cmd` in a new process group, inside `g` (by the write
    /// hotsup falls back to; `crate::fork`'s tests below cover its own
    /// spawn).
    fn spawn_in(g: &GenCgroup, cmd: &mut Command) -> io::Result<Child> {
        let enter = open_procs(g);
        let raw = enter.as_raw_fd();
        // SAFETY: enter_in_child makes one raw write on an fd the child
        // inherited open (`enter` lives until spawn returns).
        unsafe {
            cmd.pre_exec(move || enter_in_child(raw));
        }
        let child = cmd.process_group(0).spawn();
        drop(enter);
        child
    }

    /// A process that leaves its session and process group: `sh` (in its
    /// own group) starts a background `setsid sh`, which prints its pid
    /// once it has left and becomes `sleep 60`; the first `sh` exits, so
    /// the escapee is orphaned too. Returns the escapee and the group it
    /// left.
    fn escapee(g: &GenCgroup) -> (Pid, Pid) {
        let mut sh = spawn_in(
            g,
            Command::new("sh")
                .args(["-c", "setsid sh -c 'echo $$; exec sleep 60' &"])
                .stdout(Stdio::piped()),
        )
        .expect("spawn sh");
        let group = pid_of(sh.id());
        let mut line = String::new();
        BufReader::new(sh.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the escapee's pid");
        assert!(sh.wait().expect("reap sh").success());
        let esc = Pid::from_raw(line.trim().parse().expect("a pid")).expect("pid");
        // It left: a session (and group) of its own, not sh's group.
        assert_eq!(rustix::process::getsid(Some(esc)), Ok(esc));
        assert_eq!(rustix::process::getpgid(Some(esc)), Ok(esc));
        assert_ne!(esc, group);
        (esc, group)
    }

    /// Reaps an orphan re-parented to this (subreaper) process, once its
    /// cgroup is empty (so it has exited), and checks SIGKILL killed it.
    fn reap_killed(pid: Pid) {
        let (_, status) = rustix::process::waitpid(Some(pid), WaitOptions::empty())
            .expect("waitpid")
            .expect("a status");
        assert_eq!(status.terminating_signal(), Some(libc::SIGKILL));
    }

    fn assert_killed(child: &mut Child) {
        let status = child.wait().expect("reap");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    }

    /// Kills and removes a cgroup directory on drop, so a failing test
    /// leaves no process and no directory behind.
    struct Cleanup(PathBuf);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = kill_dir(&self.0);
            let _ = wait_empty_dir(&self.0, WAIT);
            let _ = remove_dir(&self.0);
        }
    }

    #[test]
    fn a_generation_holds_its_escapees_and_kill_takes_them_all() {
        let Some(m) = manager("a_generation_holds_its_escapees_and_kill_takes_them_all") else {
            return;
        };
        let base = m.base().to_path_buf();
        let g = m.create(1).expect("create");
        let _cleanup = Cleanup(g.dir().to_path_buf());
        assert!(g.dir().is_dir());
        assert!(matches!(m.create(1), Err(Error::Exists(_))));
        assert!(!g.is_populated().expect("events"));

        let mut sleeper = spawn_in(&g, Command::new("sleep").arg("60")).expect("spawn");
        let sleeper_pid = pid_of(sleeper.id());
        let proc_cgroup =
            std::fs::read_to_string(format!("/proc/{}/cgroup", sleeper.id())).expect("read");
        let want = format!("0::{}\n", g.path().display());
        assert!(
            proc_cgroup.contains(&want),
            "{proc_cgroup:?} lacks {want:?}"
        );
        assert_eq!(cgroup_of(sleeper_pid).as_deref(), Some(g.path()));
        assert!(g.contains(sleeper_pid));

        let (esc, group) = escapee(&g);
        assert!(g.contains(esc), "the escapee left the cgroup");
        // What a process-group kill reaches: nothing. sh's group is empty,
        // and the escapee lives on.
        assert_eq!(
            rustix::process::kill_process_group(group, Signal::KILL),
            Err(Errno::SRCH)
        );
        assert!(g.contains(esc));
        assert!(g.is_populated().expect("events"));

        g.kill().expect("kill");
        assert!(g.wait_empty(WAIT).expect("wait"), "still populated");
        assert!(!g.is_populated().expect("events"));
        assert_killed(&mut sleeper);
        reap_killed(esc);

        g.remove().expect("remove");
        assert!(!g.dir().exists());
        g.remove().expect("removing twice");
        g.kill().expect("killing a removed cgroup");
        drop(m);
        assert!(!base.exists(), "{} left behind", base.display());
    }

    #[test]
    fn the_fallback_kills_every_listed_pid_and_thaws() {
        let Some(m) = manager("the_fallback_kills_every_listed_pid_and_thaws") else {
            return;
        };
        let g = m.create(7).expect("create");
        let _cleanup = Cleanup(g.dir().to_path_buf());
        let mut sleeper = spawn_in(&g, Command::new("sleep").arg("60")).expect("spawn");
        let (esc, _) = escapee(&g);

        kill_by_pids(g.dir()).expect("kill by pids");
        assert!(g.wait_empty(WAIT).expect("wait"), "still populated");
        assert_killed(&mut sleeper);
        reap_killed(esc);
        let events = std::fs::read_to_string(g.dir().join("cgroup.events")).expect("read");
        assert!(events.contains("frozen 0"), "left frozen: {events:?}");
        g.remove().expect("remove");
    }

    #[test]
    fn dropping_the_manager_kills_leftovers_and_removes_everything() {
        let Some(m) = manager("dropping_the_manager_kills_leftovers_and_removes_everything") else {
            return;
        };
        let base = m.base().to_path_buf();
        let _cleanup = Cleanup(base.join("worker-1"));
        let g = m.create(1).expect("create");
        let _empty = m.create(2).expect("create");
        let mut sleeper = spawn_in(&g, Command::new("sleep").arg("60")).expect("spawn");
        let (esc, _) = escapee(&g);
        drop(m);
        assert!(!base.exists(), "{} left behind", base.display());
        assert_killed(&mut sleeper);
        reap_killed(esc);
    }

    /// hotsup's own spawn: `sleep 60` born in `g` (with
    /// `clone3(CLONE_INTO_CGROUP)`), or moved there by its own write with
    /// `fallback`.
    fn fork_into(dir: &EnterFd, fallback: bool) -> io::Result<Pid> {
        use crate::fork::{CStrings, Plan, spawn_with};
        let argv = CStrings::new(["sleep", "60"])?;
        let envp = CStrings::new::<_, &str>([])?;
        let plan = Plan {
            path: c"/bin/sleep",
            argv: &argv,
            envp: &envp,
            cgroup: Some(dir.as_fd()),
            place: &[],
            keep: &[],
            nofile: None,
            rlimits: &[],
            umask: None,
            creds: None,
            chdir: None,
            parent: getpid(),
        };
        spawn_with(&plan, fallback)
    }

    #[test]
    fn hotsups_spawn_puts_the_child_in_its_cgroup_both_ways() {
        let Some(m) = manager("hotsups_spawn_puts_the_child_in_its_cgroup_both_ways") else {
            return;
        };
        for (id, fallback) in [(1, false), (2, true)] {
            let g = m.create(id).expect("create");
            let _cleanup = Cleanup(g.dir().to_path_buf());
            let dir = g.open_enter().expect("open");
            let pid = fork_into(&dir, fallback).expect("spawn");
            let in_it = g.contains(pid);
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            reap_killed(pid);
            assert!(in_it, "fallback {fallback}: not in {}", g.path().display());
        }
    }

    #[test]
    fn a_child_that_cannot_enter_never_runs() {
        let Some(m) = manager("a_child_that_cannot_enter_never_runs") else {
            return;
        };
        for (id, fallback) in [(1, false), (2, true)] {
            let g = m.create(id).expect("create");
            let dir = g.open_enter().expect("open");
            g.remove().expect("remove");
            let err = fork_into(&dir, fallback).expect_err("ran outside its cgroup");
            // The fallback opens cgroup.procs, gone with its directory.
            let codes = [Some(libc::ENODEV), Some(libc::ENOENT)];
            assert!(
                codes.contains(&err.raw_os_error()),
                "fallback {fallback}: {err}"
            );
        }
    }

    /// What a supervisor leaves when it is killed: a base in `dir` with
    /// generation cgroups, a process in each when `populate`, and no lock.
    fn dead_base(dir: &Path, name: &str, gens: &[u64], populate: bool) -> (PathBuf, Vec<Child>) {
        let base = dir.join(format!("{BASE_PREFIX}{name}"));
        let mode = FileMode::from_raw_mode(0o755);
        rustix::fs::mkdir(&base, mode).expect("mkdir");
        let mut children = Vec::new();
        for id in gens {
            let g = GenCgroup {
                id: *id,
                dir: base.join(format!("{GEN_PREFIX}{id}")),
                rel: PathBuf::new(),
            };
            rustix::fs::mkdir(g.dir(), mode).expect("mkdir");
            if populate {
                children.push(spawn_in(&g, Command::new("sleep").arg("60")).expect("spawn"));
            }
        }
        (base, children)
    }

    #[test]
    fn dead_supervisors_leftovers_are_swept_and_live_ones_kept() {
        let Some(m) = manager("dead_supervisors_leftovers_are_swept_and_live_ones_kept") else {
            return;
        };
        // A private parent, not named hotsup-*, so that no other test's
        // sweep reaches into it: the one below is the only one.
        static N: AtomicU32 = AtomicU32::new(0);
        let own_dir = m.base().parent().expect("own dir");
        let parent = own_dir.join(format!(
            "sweep-test-{}-{}",
            getpid().as_raw_pid(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mode = FileMode::from_raw_mode(0o755);
        rustix::fs::mkdir(&parent, mode).expect("mkdir");
        let _cleanup_parent = Cleanup(parent.clone());

        let (live_name, live_lock) = make_base(&parent).expect("a live base");
        let live = parent.join(&live_name);
        let _cleanup_live = Cleanup(live.clone());
        rustix::fs::mkdir(live.join("worker-1"), mode).expect("mkdir");
        let _cleanup_live_gen = Cleanup(live.join("worker-1"));
        let (stale, _) = dead_base(&parent, "1", &[1, 2], false);
        let _cleanup_stale = Cleanup(stale.clone());
        let (busy, mut sleepers) = dead_base(&parent, "2", &[3], true);
        let _cleanup_busy = Cleanup(busy.clone());
        let busy_gen = busy.join("worker-3");
        let _cleanup_busy_gen = Cleanup(busy_gen.clone());
        let other = parent.join("not-hotsup");
        rustix::fs::mkdir(&other, mode).expect("mkdir");
        let _cleanup_other = Cleanup(other.clone());

        let (swept, populated) = sweep(&parent);
        assert_eq!(swept, 1);
        assert!(!stale.exists(), "{} not swept", stale.display());
        // Processes of a dead supervisor are reported, never killed.
        assert_eq!(populated, vec![busy_gen.clone()]);
        assert!(is_populated_dir(&busy_gen));
        // A live supervisor's directories, and anything not hotsup's,
        // are left alone.
        assert!(live.join("worker-1").is_dir());
        assert!(other.is_dir());
        // A second supervisor with our pid takes another name.
        let (next_name, _next_lock) = make_base(&parent).expect("another base");
        assert_ne!(next_name, live_name);
        let _cleanup_next = Cleanup(parent.join(&next_name));
        drop(live_lock);

        kill_dir(&busy_gen).expect("kill");
        assert!(wait_empty_dir(&busy_gen, WAIT).expect("wait"));
        for mut s in sleepers.drain(..) {
            assert_killed(&mut s);
        }
        // A dead supervisor's base is swept once its processes are gone,
        // and so is the live one once its lock is released.
        let (swept, populated) = sweep(&parent);
        assert_eq!((swept, populated), (2, vec![]));
        assert!(!busy.exists() && !live.exists());
    }

    fn is_populated_dir(dir: &Path) -> bool {
        open_events(dir)
            .and_then(|e| e.populated())
            .expect("events")
    }

    #[test]
    fn an_emptied_cgroup_wakes_an_async_waiter() {
        use tokio::io::Interest;
        use tokio::io::unix::AsyncFd;

        let Some(m) = manager("an_emptied_cgroup_wakes_an_async_waiter") else {
            return;
        };
        let g = m.create(1).expect("create");
        let _cleanup = Cleanup(g.dir().to_path_buf());
        let mut sleeper = spawn_in(&g, Command::new("sleep").arg("60")).expect("spawn");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let events = g.events().expect("events");
            // SAFETY: Events owns its fd, which stays open and keeps its
            // number until the AsyncFd that owns the Events drops it.
            let events = unsafe { AsyncFd::register_with_interest(events, Interest::PRIORITY) }
                .expect("register");
            assert!(events.get_ref().populated().expect("read"));
            g.kill().expect("kill");
            let emptied = tokio::time::timeout(WAIT, async {
                loop {
                    let mut ready = events.ready(Interest::PRIORITY).await.expect("ready");
                    if !events.get_ref().populated().expect("read") {
                        return;
                    }
                    ready.clear_ready();
                }
            })
            .await;
            assert!(emptied.is_ok(), "no wake-up for the emptied cgroup");
        });
        assert_killed(&mut sleeper);
        g.remove().expect("remove");
    }

    #[test]
    fn cgroup_of_reads_the_v2_line() {
        let text = std::fs::read("/proc/self/cgroup").expect("read");
        let own = v2_line(&text).map(|l| PathBuf::from(OsStr::from_bytes(l)));
        assert!(own.is_some(), "no 0:: line in {text:?}");
        assert_eq!(cgroup_of(getpid()), own);
        // No such process.
        assert_eq!(cgroup_of(Pid::from_raw(i32::MAX).expect("pid")), None);
    }

    #[test]
    fn parsers() {
        let hybrid = b"9:name=systemd:/\n4:memory:/a/b\n0::/x/y\n";
        assert_eq!(v2_line(hybrid), Some(&b"/x/y"[..]));
        assert_eq!(v2_line(b"0::/"), Some(&b"/"[..]));
        assert_eq!(v2_line(b"0::/gone (deleted)\n"), None);
        assert_eq!(v2_line(b"1:cpu:/\n"), None);

        let mut buf = [0u8; 32];
        let p = proc_cgroup_path(Pid::from_raw(i32::MAX).expect("pid"), &mut buf);
        assert_eq!(p.map(CStr::to_bytes), Some(&b"/proc/2147483647/cgroup"[..]));
        let p = proc_cgroup_path(Pid::from_raw(7).expect("pid"), &mut buf);
        assert_eq!(p.map(CStr::to_bytes), Some(&b"/proc/7/cgroup"[..]));

        assert_eq!(parse_populated(b"populated 1\nfrozen 0\n"), Some(true));
        assert_eq!(parse_populated(b"populated 0\nfrozen 0\n"), Some(false));
        assert_eq!(parse_populated(b"frozen 0\n"), None);

        assert_eq!(unescape(br"a\040b\\c\0"), b"a b\\\\c\\0".to_vec());
    }

    #[test]
    fn the_mount_showing_our_cgroup_is_found() {
        let hybrid = b"25 30 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n\
            35 31 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        let unified = PathBuf::from("/sys/fs/cgroup/unified");
        assert_eq!(
            locate(hybrid, Path::new("/")).expect("root"),
            (unified.clone(), unified.clone())
        );
        assert_eq!(
            locate(hybrid, Path::new("/system.slice/a.service")).expect("unit"),
            (unified.clone(), unified.join("system.slice/a.service"))
        );
        // A container given only its own cgroup, at an escaped path.
        let container =
            b"50 40 0:38 /docker/abc /sys/fs/cgroup\\040x ro,nosuid - cgroup2 cgroup2 rw\n";
        let point = PathBuf::from("/sys/fs/cgroup x");
        assert_eq!(
            locate(container, Path::new("/docker/abc/app")).expect("inside"),
            (point.clone(), point.join("app"))
        );
        assert_eq!(
            locate(container, Path::new("/docker/abc")).expect("its root"),
            (point.clone(), point.clone())
        );
        assert!(matches!(
            locate(container, Path::new("/docker/abcd")),
            Err(Error::NotVisible(_))
        ));
        assert!(matches!(
            locate(b"25 30 0:22 / /sys rw - sysfs sysfs rw\n", Path::new("/")),
            Err(Error::NoMount)
        ));
    }

    #[test]
    fn off_means_none() {
        assert!(matches!(Cgroups::detect(Mode::Off), Ok(None)));
    }
}
