//! Parsing `--listen` and binding the sockets hotsup holds for its whole life.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hotsup_os::sockets::local_address;
use hotsup_protocol::{Kind, ListenerInfo, valid_name};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType, ipproto, sockopt};

/// Longest Unix socket path: `sun_path` is 108 bytes including the NUL.
const UNIX_PATH_MAX: usize = 107;

/// Where a listener binds, as written after `NAME=` in `--listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A TCP host and port, resolved when bound.
    Tcp(String),
    /// A UDP host and port.
    Udp(String),
    /// A Unix stream socket path.
    Unix(PathBuf),
}

/// One `--listen` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// The name given with `NAME=`, if any.
    pub name: Option<String>,
    /// The address.
    pub address: Address,
    /// The argument as the user wrote it, for error messages.
    pub raw: String,
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Why a `--listen` argument is malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("empty address")]
    Empty,
    #[error("invalid name {0:?}: names are 1 to 255 of the characters A-Z a-z 0-9 - _ .")]
    BadName(String),
    #[error("unknown scheme {0:?}: use tcp://, udp:// or unix:")]
    BadScheme(String),
    #[error("{0:?} is not HOST:PORT, [V6]:PORT or :PORT")]
    BadHostPort(String),
    #[error("port {0:?} is not a number from 0 to 65535")]
    BadPort(String),
    #[error("empty Unix socket path")]
    EmptyPath,
    #[error("Unix socket path is {0} bytes long; the limit is {UNIX_PATH_MAX}")]
    PathTooLong(usize),
    #[error("Unix socket path contains a line break or NUL")]
    PathBadChar,
}

impl std::str::FromStr for ListenSpec {
    type Err = SpecError;

    fn from_str(raw: &str) -> Result<Self, SpecError> {
        // `NAME=` is a prefix only when what precedes `=` could be a name;
        // this keeps `unix:/tmp/a=b` a path.
        let (name, addr) = match raw.split_once('=') {
            Some((n, a)) if !n.contains([':', '/', '[']) => {
                if !valid_name(n) {
                    return Err(SpecError::BadName(n.to_owned()));
                }
                (Some(n.to_owned()), a)
            }
            _ => (None, raw),
        };
        if addr.is_empty() {
            return Err(SpecError::Empty);
        }
        let address = if let Some(rest) = addr.strip_prefix("tcp://") {
            Address::Tcp(check_host_port(rest)?)
        } else if let Some(rest) = addr.strip_prefix("udp://") {
            Address::Udp(check_host_port(rest)?)
        } else if let Some(rest) = addr.strip_prefix("unix:") {
            // Accept `unix:///path` as well as `unix:/path`.
            let path = rest.strip_prefix("//").unwrap_or(rest);
            Address::Unix(check_path(path)?)
        } else if let Some((scheme, _)) = addr.split_once("://") {
            return Err(SpecError::BadScheme(scheme.to_owned()));
        } else {
            Address::Tcp(check_host_port(addr)?)
        };
        Ok(ListenSpec {
            name,
            address,
            raw: raw.to_owned(),
        })
    }
}

fn check_host_port(s: &str) -> Result<String, SpecError> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| SpecError::BadHostPort(s.to_owned()))?;
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        // A bare IPv6 address needs brackets; anything else is an IPv4
        // address or a host name resolved when binding.
        !host.contains(':') && !host.contains(char::is_whitespace) && !host.contains('/')
    };
    if !host_ok {
        return Err(SpecError::BadHostPort(s.to_owned()));
    }
    if port.parse::<u16>().is_err() {
        return Err(SpecError::BadPort(port.to_owned()));
    }
    if host.is_empty() {
        return Ok(format!("0.0.0.0:{port}"));
    }
    Ok(s.to_owned())
}

fn check_path(p: &str) -> Result<PathBuf, SpecError> {
    if p.is_empty() {
        return Err(SpecError::EmptyPath);
    }
    if p.len() > UNIX_PATH_MAX {
        return Err(SpecError::PathTooLong(p.len()));
    }
    if p.contains(['\n', '\r', '\0']) {
        return Err(SpecError::PathBadChar);
    }
    Ok(PathBuf::from(p))
}

/// Socket options that apply to every listener.
#[derive(Debug, Clone)]
pub struct BindOptions {
    pub backlog: i32,
    pub reuseport: bool,
    pub ipv6_only: bool,
    pub unix_mode: Option<u32>,
}

/// Why binding failed; the message names the `--listen` argument.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("duplicate listener name {name:?} (from --listen {first} and --listen {second})")]
    DuplicateName {
        name: String,
        first: String,
        second: String,
    },
    #[error("cannot resolve --listen {spec}: {source}")]
    Resolve { spec: String, source: io::Error },
    #[error("cannot bind --listen {spec}: {cause}")]
    Bind { spec: String, cause: String },
    #[error(
        "cannot bind --listen {spec}: {path} is in use by a live process (another server is accepting on it)"
    )]
    UnixInUse { spec: String, path: String },
    #[error(
        "cannot bind --listen {spec}: {path} exists and is not a socket; refusing to replace it"
    )]
    UnixNotSocket { spec: String, path: String },
}

/// Where a listener came from, as `hotsup status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// hotsup bound it, for a `--listen`.
    Bound,
    /// systemd passed it (socket activation).
    Activated,
    /// An earlier hotsup bound it; systemd's fd store kept it.
    Restored,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Bound => "bound",
            Origin::Activated => "systemd",
            Origin::Restored => "fd-store",
        }
    }
}

/// A bound socket held by the supervisor.
#[derive(Debug)]
pub struct Listener {
    pub info: ListenerInfo,
    pub origin: Origin,
    socket: OwnedFd,
    /// The Unix socket file we created and must remove once no listener
    /// serves it (a renamed listener shares it with its original).
    owned_path: Option<Arc<SocketFile>>,
}

/// A Unix socket file hotsup created, removed when dropped, with its device
/// and inode so that a file that replaced ours is never removed.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn at(path: &Path) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Listener {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// The same socket under another name (a listener renamed in the
    /// config file keeps its socket: it is never bound again).
    pub fn renamed(&self, name: &str) -> io::Result<Listener> {
        let socket = rustix::io::fcntl_dupfd_cloexec(&self.socket, 3)?;
        Ok(Listener {
            info: ListenerInfo {
                name: name.to_string(),
                ..self.info.clone()
            },
            origin: self.origin,
            socket,
            owned_path: self.owned_path.clone(),
        })
    }

    /// Takes on removing the socket file of a Unix listener that an earlier
    /// hotsup created and systemd's fd store kept: the file as it is now is
    /// the one removed at exit, as if this hotsup had bound it.
    pub fn claim_file(&mut self) {
        if self.info.kind != Kind::Unix || self.info.address.starts_with('@') {
            return;
        }
        let path = Path::new(&self.info.address);
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            self.owned_path = SocketFile::at(path).ok().map(Arc::new);
        }
    }

    /// Whether this is the socket `address` asks for (see [`describes`]).
    pub fn is_bound_to(&self, address: &Address) -> bool {
        describes(address, self.info.kind, &self.info.address)
    }
}

impl Listener {
    /// This listener as `hotsup upgrade --self` hands it over, at place
    /// `id` of the table.
    pub fn to_state(&self, id: u32) -> crate::state::ListenerState {
        use crate::state::{ListenerKind, ListenerOrigin, Os, OwnedFile};
        use std::os::fd::AsRawFd;
        crate::state::ListenerState {
            id,
            name: self.info.name.clone(),
            kind: match self.info.kind {
                Kind::Tcp => ListenerKind::Tcp,
                Kind::Udp => ListenerKind::Udp,
                Kind::Unix => ListenerKind::Unix,
            },
            address: self.info.address.clone(),
            origin: match self.origin {
                Origin::Bound => ListenerOrigin::Bound,
                Origin::Activated => ListenerOrigin::Activated,
                Origin::Restored => ListenerOrigin::Restored,
            },
            fd: self.socket.as_raw_fd(),
            owned_file: self.owned_path.as_ref().map(|f| OwnedFile {
                path: Os::new(f.path.as_os_str()),
                dev: f.dev,
                inode: f.ino,
            }),
        }
    }

    /// Takes over a listener handed over by the hotsup that exec'd this
    /// one. The fd must be the socket the state describes: its type is
    /// checked, so that a mix-up of numbers is an error, not a listener
    /// that hands out the wrong socket.
    fn adopt(
        st: &crate::state::ListenerState,
        files: &mut Vec<Arc<SocketFile>>,
    ) -> Result<Listener, String> {
        use crate::state::{ListenerKind, ListenerOrigin};
        // SAFETY: fcntl(F_GETFD) on a plain integer only asks whether it is
        // open; no Rust object owns or borrows it yet.
        if unsafe { libc::fcntl(st.fd, libc::F_GETFD) } == -1 {
            return Err(format!("listener {} (fd {}) is not open", st.name, st.fd));
        }
        // SAFETY: the exec'ing hotsup handed this fd over for this listener
        // alone; it is open (checked above) and adopted once, here.
        let socket = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(st.fd) };
        let kind = match st.kind {
            ListenerKind::Tcp => Kind::Tcp,
            ListenerKind::Udp => Kind::Udp,
            ListenerKind::Unix => Kind::Unix,
        };
        let found = {
            use hotsup_os::sockets::{Family, Inspected};
            use rustix::net::SocketType;
            match hotsup_os::sockets::inspect(socket.as_fd()) {
                Inspected::Socket {
                    family: Family::Inet,
                    type_: SocketType::STREAM,
                    listening: true,
                } => Some(Kind::Tcp),
                Inspected::Socket {
                    family: Family::Inet,
                    type_: SocketType::DGRAM,
                    ..
                } => Some(Kind::Udp),
                Inspected::Socket {
                    family: Family::Unix,
                    type_: SocketType::STREAM,
                    listening: true,
                } => Some(Kind::Unix),
                _ => None,
            }
        };
        if found != Some(kind) {
            // Not ours to close: leave the fd to whatever it is.
            std::mem::forget(socket);
            return Err(format!(
                "listener {} (fd {}) is not a listening {kind} socket",
                st.name, st.fd
            ));
        }
        let _ = rustix::io::fcntl_setfd(&socket, rustix::io::FdFlags::CLOEXEC);
        Ok(Listener {
            info: ListenerInfo {
                name: st.name.clone(),
                kind,
                address: st.address.clone(),
            },
            origin: match st.origin {
                ListenerOrigin::Bound => Origin::Bound,
                ListenerOrigin::Activated => Origin::Activated,
                ListenerOrigin::Restored => Origin::Restored,
            },
            socket,
            owned_path: st.owned_file.as_ref().map(|f| {
                // A renamed listener shares its original's file: one
                // SocketFile, removed once neither serves.
                let path = f.path.to_path();
                match files
                    .iter()
                    .find(|s| (s.dev, s.ino) == (f.dev, f.inode) && s.path == path)
                {
                    Some(s) => s.clone(),
                    None => {
                        let s = Arc::new(SocketFile {
                            path,
                            dev: f.dev,
                            ino: f.inode,
                        });
                        files.push(s.clone());
                        s
                    }
                }
            }),
        })
    }

    /// Takes over every listener of the hotsup that exec'd this one, in
    /// the order of its table.
    pub fn adopt_all(table: &[crate::state::ListenerState]) -> Result<Vec<Listener>, String> {
        let mut files = Vec::new();
        table
            .iter()
            .map(|st| Listener::adopt(st, &mut files))
            .collect()
    }
}

/// Whether `address` asks for the socket of `kind` bound to `have`: same
/// kind and the same address. A host that is a name rather than an IP is
/// not resolved again: its port alone must match. Port 0 (any port) matches
/// the port the kernel chose.
fn describes(address: &Address, kind: Kind, have: &str) -> bool {
    match (address, kind) {
        (Address::Tcp(hp), Kind::Tcp) | (Address::Udp(hp), Kind::Udp) => {
            let Ok(have) = have.parse::<SocketAddr>() else {
                return false;
            };
            match hp.parse::<SocketAddr>() {
                Ok(w) => w.ip() == have.ip() && (w.port() == 0 || w.port() == have.port()),
                Err(_) => hp
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_some_and(|p| p == 0 || p == have.port()),
            }
        }
        (Address::Unix(path), Kind::Unix) => path.as_os_str() == have,
        _ => false,
    }
}

/// Why sockets passed to hotsup by socket activation cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error(transparent)]
    Env(#[from] hotsup_os::activation::Error),
    #[error("fd {fd} ({name}) from LISTEN_FDS is not a socket")]
    NotASocket { fd: i32, name: String },
    #[error("fd {fd} ({name}) from LISTEN_FDS is a stream socket that is not listening")]
    NotListening { fd: i32, name: String },
    #[error(
        "fd {fd} ({name}) from LISTEN_FDS is {what}; only TCP, UDP and Unix stream sockets are supported"
    )]
    Unsupported { fd: i32, name: String, what: String },
}

/// Adopts the sockets of a socket-activated hotsup (`LISTEN_FDS`, named by
/// `LISTEN_FDNAMES`), by the rules `hotsup-child` follows too (see
/// [`hotsup_os::activation`]). Every one must be a listener hotsup can pass
/// on. Their Unix socket files belong to the service manager and are never
/// removed.
pub fn adopt_activated() -> Result<Vec<Listener>, ActivationError> {
    use hotsup_os::activation::{
        self, LISTEN_FDNAMES, LISTEN_FDS, LISTEN_FDS_FIRST_FD, LISTEN_PID,
    };
    use hotsup_os::sockets::{Family, Inspected};
    use rustix::net::SocketType;
    let [fds, pid, first, names] =
        [LISTEN_FDS, LISTEN_PID, LISTEN_FDS_FIRST_FD, LISTEN_FDNAMES].map(std::env::var_os);
    let vars = activation::Vars {
        listen_fds: fds.as_deref(),
        listen_pid: pid.as_deref(),
        first_fd: first.as_deref(),
    };
    let Some(range) = activation::parse(vars, std::process::id())? else {
        return Ok(Vec::new());
    };
    // SAFETY: by the socket-activation protocol the service manager hands
    // hotsup ownership of these fds (LISTEN_PID is ours or unset), and this
    // is the only adoption in hotsup.
    let owned = unsafe { activation::claim(range.clone()) }?;
    let given: Vec<String> = names
        .as_deref()
        .and_then(|n| n.to_str())
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(owned.len());
    for (a, fd) in activation::inspect(owned, names.as_deref())
        .into_iter()
        .zip(range)
    {
        let name = a.name;
        let kind = match (a.kind, a.found) {
            (Some(kind), _) => kind,
            (None, Inspected::NotASocket) => return Err(ActivationError::NotASocket { fd, name }),
            (
                None,
                Inspected::Socket {
                    family: Family::Inet | Family::Unix,
                    type_: SocketType::STREAM,
                    listening: false,
                },
            ) => return Err(ActivationError::NotListening { fd, name }),
            (None, found) => {
                return Err(ActivationError::Unsupported {
                    fd,
                    name,
                    what: found.to_string(),
                });
            }
        };
        // systemd gives every socket of one .socket unit the same name (the
        // unit's, by default): say so when a later one was renamed, or a
        // name the protocol cannot carry was.
        if let Some(g) = given
            .get(out.len())
            .filter(|g| !g.is_empty() && **g != name)
        {
            if valid_name(g) {
                tracing::warn!(fd, given = %g, name = %name, "duplicate_fdname");
            } else {
                tracing::warn!(fd, given = %g, name = %name, "invalid_fdname");
            }
        }
        out.push(Listener {
            info: ListenerInfo {
                name,
                kind,
                address: a.address.unwrap_or_else(|| "(unnamed)".into()),
            },
            socket: a.fd,
            origin: Origin::Activated,
            owned_path: None,
        });
    }
    Ok(out)
}

/// The default name of the listener at `index`: its kind and position, such
/// as `tcp0` or `unix2`.
pub fn default_name(kind: Kind, index: usize) -> String {
    format!("{kind}{index}")
}

fn kind_of(a: &Address) -> Kind {
    match a {
        Address::Tcp(_) => Kind::Tcp,
        Address::Udp(_) => Kind::Udp,
        Address::Unix(_) => Kind::Unix,
    }
}

/// Assigns names and checks they are unique, before anything is bound.
/// `taken` are the names of sockets adopted by socket activation, which come
/// first.
pub fn name_all(specs: &[ListenSpec], taken: &[String]) -> Result<Vec<String>, BindError> {
    if let Some(name) = taken
        .iter()
        .enumerate()
        .find_map(|(i, n)| taken[..i].contains(n).then_some(n))
    {
        return Err(BindError::DuplicateName {
            name: name.clone(),
            first: "LISTEN_FDNAMES".into(),
            second: "LISTEN_FDNAMES".into(),
        });
    }
    let mut names: Vec<String> = Vec::with_capacity(specs.len());
    for (j, spec) in specs.iter().enumerate() {
        let i = j + taken.len();
        if let Some(name) = spec.name.as_ref().filter(|n| taken.contains(n)) {
            return Err(BindError::DuplicateName {
                name: name.clone(),
                first: "LISTEN_FDNAMES".into(),
                second: spec.raw.clone(),
            });
        }
        let name = spec
            .name
            .clone()
            .unwrap_or_else(|| default_name(kind_of(&spec.address), i));
        if let Some(k) = names.iter().position(|n| *n == name) {
            return Err(BindError::DuplicateName {
                name,
                first: specs[k].raw.clone(),
                second: spec.raw.clone(),
            });
        }
        names.push(name);
    }
    Ok(names)
}

/// Binds every listener, or none: on error, those already bound are closed
/// and their socket files removed.
pub fn bind_all(
    specs: &[ListenSpec],
    taken: &[String],
    opts: &BindOptions,
) -> Result<Vec<Listener>, BindError> {
    Ok(bind_all_reusing(specs, taken, opts, |_, _| None)?
        .into_iter()
        .map(|(l, _)| l)
        .collect())
}

/// Like [`bind_all`], but a listener `reuse` gives for a spec and its name
/// (one kept open elsewhere, such as systemd's fd store) is taken instead
/// of bound. Each comes with whether it was reused.
pub fn bind_all_reusing(
    specs: &[ListenSpec],
    taken: &[String],
    opts: &BindOptions,
    mut reuse: impl FnMut(&ListenSpec, &str) -> Option<Listener>,
) -> Result<Vec<(Listener, bool)>, BindError> {
    let names = name_all(specs, taken)?;
    let mut out = Vec::with_capacity(specs.len());
    for (spec, name) in specs.iter().zip(names) {
        match reuse(spec, &name) {
            Some(l) => out.push((l, true)),
            None => out.push((bind_one(spec, name, opts)?, false)),
        }
    }
    Ok(out)
}

fn describe(e: &io::Error, what: &str) -> String {
    match e.raw_os_error() {
        Some(code) if code == rustix::io::Errno::ACCESS.raw_os_error() && what == "port" => {
            format!("{e}: ports below 1024 need root or CAP_NET_BIND_SERVICE")
        }
        Some(code) if code == rustix::io::Errno::ADDRINUSE.raw_os_error() => {
            format!("{e}: another process is listening on it")
        }
        _ => e.to_string(),
    }
}

pub fn bind_one(
    spec: &ListenSpec,
    name: String,
    opts: &BindOptions,
) -> Result<Listener, BindError> {
    let bind_err = |e: io::Error, what: &str| BindError::Bind {
        spec: spec.raw.clone(),
        cause: describe(&e, what),
    };
    let (socket, address, owned_path) = match &spec.address {
        Address::Tcp(hp) | Address::Udp(hp) => {
            let addr = resolve_one(&spec.raw, hp)?;
            let tcp = matches!(spec.address, Address::Tcp(_));
            let (ty, proto) = if tcp {
                (SocketType::STREAM, ipproto::TCP)
            } else {
                (SocketType::DGRAM, ipproto::UDP)
            };
            let family = if addr.is_ipv6() {
                AddressFamily::INET6
            } else {
                AddressFamily::INET
            };
            let e = |what: &'static str| move |e: rustix::io::Errno| bind_err(e.into(), what);
            let s = rustix::net::socket_with(family, ty, SocketFlags::CLOEXEC, Some(proto))
                .map_err(e("socket"))?;
            // SO_REUSEADDR only lets hotsup rebind past TIME_WAIT after its
            // own restart; it does not allow two live listeners.
            if tcp {
                sockopt::set_socket_reuseaddr(&s, true).map_err(e("opt"))?;
            }
            if opts.reuseport {
                sockopt::set_socket_reuseport(&s, true).map_err(e("opt"))?;
            }
            if addr.is_ipv6() {
                sockopt::set_ipv6_v6only(&s, opts.ipv6_only).map_err(e("opt"))?;
            }
            rustix::net::bind(&s, &addr).map_err(e("port"))?;
            if tcp {
                rustix::net::listen(&s, opts.backlog).map_err(e("listen"))?;
            }
            // The real port when port 0 was asked for.
            let local = local_address(s.as_fd()).unwrap_or_else(|| addr.to_string());
            (s, local, None)
        }
        Address::Unix(path) => {
            clear_stale(spec, path)?;
            let s = rustix::net::socket_with(
                AddressFamily::UNIX,
                SocketType::STREAM,
                SocketFlags::CLOEXEC,
                None,
            )
            .map_err(|e| bind_err(e.into(), "socket"))?;
            let sa = SocketAddrUnix::new(path.as_path()).map_err(|e| bind_err(e.into(), "path"))?;
            // The file gets its mode at creation, from the umask: no window
            // with a wider mode, and no chmod that could follow a symlink.
            // hotsup is single-threaded while it binds.
            let old_umask = opts
                .unix_mode
                .map(|m| rustix::process::umask(rustix::fs::Mode::from_bits_truncate(!m & 0o777)));
            let bound = rustix::net::bind(&s, &sa);
            if let Some(old) = old_umask {
                rustix::process::umask(old);
            }
            bound.map_err(|e| bind_err(e.into(), "path"))?;
            let meta = std::fs::symlink_metadata(path).map_err(|e| bind_err(e, "path"))?;
            // Record ownership before anything else can fail, so the file is
            // removed on every error path below.
            let owned = Some(Arc::new(SocketFile {
                path: path.clone(),
                dev: meta.dev(),
                ino: meta.ino(),
            }));
            let listener = Listener {
                info: ListenerInfo {
                    name: name.clone(),
                    kind: Kind::Unix,
                    address: path.display().to_string(),
                },
                socket: s,
                origin: Origin::Bound,
                owned_path: owned,
            };
            rustix::net::listen(&listener.socket, opts.backlog)
                .map_err(|e| bind_err(e.into(), "listen"))?;
            return Ok(listener);
        }
    };
    Ok(Listener {
        info: ListenerInfo {
            name,
            kind: kind_of(&spec.address),
            address,
        },
        socket,
        origin: Origin::Bound,
        owned_path,
    })
}

impl ListenSpec {
    /// This spec with its host name looked up (blocking: off the event
    /// loop), so that binding it later needs no lookup. An IP, or a Unix
    /// path, is unchanged.
    pub fn resolved(&self) -> Result<ListenSpec, BindError> {
        let (Address::Tcp(hp) | Address::Udp(hp)) = &self.address else {
            return Ok(self.clone());
        };
        if hp.parse::<SocketAddr>().is_ok() {
            return Ok(self.clone());
        }
        let addr = resolve_one(&self.raw, hp)?;
        let address = match self.address {
            Address::Tcp(_) => Address::Tcp(addr.to_string()),
            _ => Address::Udp(addr.to_string()),
        };
        Ok(ListenSpec {
            address,
            ..self.clone()
        })
    }
}

/// The address `--listen` RAW's HOST:PORT binds: the first the resolver
/// gives, with a warning naming the others, which one socket cannot serve.
fn resolve_one(raw: &str, hp: &str) -> Result<SocketAddr, BindError> {
    let (addr, others) = resolve(hp).map_err(|source| BindError::Resolve {
        spec: raw.to_string(),
        source,
    })?;
    if !others.is_empty() {
        let others: Vec<String> = others.iter().map(ToString::to_string).collect();
        tracing::warn!(
            listen = %raw,
            bound = %addr,
            not_bound = %others.join(" "),
            "several_addresses"
        );
    }
    Ok(addr)
}

/// The address a listener binds, and the others its host name resolves to.
///
/// One `--listen` is one socket, which the app takes by its name: a host
/// name with several addresses (`localhost`: 127.0.0.1 and ::1) cannot
/// become several sockets under one name. hotsup binds the first address
/// the resolver returns (its preferred order) and the caller says which
/// were left out; a `--listen` per address serves them all.
fn resolve(host_port: &str) -> io::Result<(SocketAddr, Vec<SocketAddr>)> {
    if let Ok(a) = host_port.parse::<SocketAddr>() {
        return Ok((a, Vec::new()));
    }
    pick(host_port.to_socket_addrs()?)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "host name has no address"))
}

/// The first address, and the other distinct ones in order.
fn pick(addrs: impl Iterator<Item = SocketAddr>) -> Option<(SocketAddr, Vec<SocketAddr>)> {
    let mut addrs = addrs;
    let first = addrs.next()?;
    let mut others: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        if a != first && !others.contains(&a) {
            others.push(a);
        }
    }
    Some((first, others))
}

/// Removes a socket file left by a dead process. A file that some process
/// still accepts on, or that is not a socket, is an error.
fn clear_stale(spec: &ListenSpec, path: &Path) -> Result<(), BindError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(BindError::Bind {
                spec: spec.raw.clone(),
                cause: e.to_string(),
            });
        }
    };
    let shown = path.display().to_string();
    if !meta.file_type().is_socket() {
        return Err(BindError::UnixNotSocket {
            spec: spec.raw.clone(),
            path: shown,
        });
    }
    // Non-blocking: a blocking connect to a live listener whose backlog is
    // full waits until it accepts, and this runs on the event loop when a
    // config file adds a listener at an upgrade.
    let probe = || -> io::Result<()> {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
        Ok(())
    };
    match probe() {
        // EAGAIN: someone listens there, with a full backlog.
        Ok(()) => Err(BindError::UnixInUse {
            spec: spec.raw.clone(),
            path: shown,
        }),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(BindError::UnixInUse {
            spec: spec.raw.clone(),
            path: shown,
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .map_err(|e| BindError::Bind {
                spec: spec.raw.clone(),
                cause: format!("cannot remove stale socket file {shown}: {e}"),
            }),
        Err(e) => Err(BindError::Bind {
            spec: spec.raw.clone(),
            cause: format!("cannot probe existing socket file {shown}: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<ListenSpec, SpecError> {
        s.parse()
    }

    #[test]
    fn an_address_describes_only_the_same_socket() {
        let tcp = |s: &str| Address::Tcp(s.to_string());
        assert!(describes(
            &tcp("127.0.0.1:8080"),
            Kind::Tcp,
            "127.0.0.1:8080"
        ));
        assert!(describes(&tcp("[::1]:8080"), Kind::Tcp, "[::1]:8080"));
        assert!(describes(&tcp("127.0.0.1:0"), Kind::Tcp, "127.0.0.1:41234"));
        assert!(!describes(
            &tcp("127.0.0.1:8081"),
            Kind::Tcp,
            "127.0.0.1:8080"
        ));
        assert!(!describes(
            &tcp("0.0.0.0:8080"),
            Kind::Tcp,
            "127.0.0.1:8080"
        ));
        assert!(!describes(
            &tcp("127.0.0.1:8080"),
            Kind::Udp,
            "127.0.0.1:8080"
        ));
        let udp = Address::Udp("127.0.0.1:53".into());
        assert!(describes(&udp, Kind::Udp, "127.0.0.1:53"));
        // A name is not resolved again; its port decides.
        assert!(describes(
            &tcp("localhost:8080"),
            Kind::Tcp,
            "127.0.0.1:8080"
        ));
        assert!(!describes(
            &tcp("localhost:8081"),
            Kind::Tcp,
            "127.0.0.1:8080"
        ));
        let unix = Address::Unix("/run/app.sock".into());
        assert!(describes(&unix, Kind::Unix, "/run/app.sock"));
        assert!(!describes(&unix, Kind::Unix, "/run/other.sock"));
        assert!(!describes(&unix, Kind::Tcp, "/run/app.sock"));
    }

    #[test]
    fn parses_every_form() {
        let cases = [
            (
                "127.0.0.1:8080",
                None,
                Address::Tcp("127.0.0.1:8080".into()),
            ),
            (
                "http=127.0.0.1:0",
                Some("http"),
                Address::Tcp("127.0.0.1:0".into()),
            ),
            ("[::1]:80", None, Address::Tcp("[::1]:80".into())),
            (
                "tcp://localhost:80",
                None,
                Address::Tcp("localhost:80".into()),
            ),
            (":9000", None, Address::Tcp("0.0.0.0:9000".into())),
            (
                "dns=udp://127.0.0.1:53",
                Some("dns"),
                Address::Udp("127.0.0.1:53".into()),
            ),
            (
                "unix:/run/a.sock",
                None,
                Address::Unix("/run/a.sock".into()),
            ),
            (
                "unix:///run/a.sock",
                None,
                Address::Unix("/run/a.sock".into()),
            ),
            ("unix:/tmp/a=b", None, Address::Unix("/tmp/a=b".into())),
            (
                "adm=unix:rel/x.sock",
                Some("adm"),
                Address::Unix("rel/x.sock".into()),
            ),
        ];
        for (raw, name, addr) in cases {
            let s = p(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(s.name.as_deref(), name, "{raw}");
            assert_eq!(s.address, addr, "{raw}");
        }
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(p(""), Err(SpecError::Empty));
        assert_eq!(p("x="), Err(SpecError::Empty));
        assert!(matches!(
            p("bad name=1.2.3.4:5"),
            Err(SpecError::BadName(_))
        ));
        assert!(matches!(
            p("sctp://1.2.3.4:5"),
            Err(SpecError::BadScheme(_))
        ));
        assert!(matches!(p("8080"), Err(SpecError::BadHostPort(_))));
        assert!(matches!(p("::1:80"), Err(SpecError::BadHostPort(_))));
        assert!(matches!(p("[::zz]:80"), Err(SpecError::BadHostPort(_))));
        assert!(matches!(p("1.2.3.4:99999"), Err(SpecError::BadPort(_))));
        assert!(matches!(p("1.2.3.4:http"), Err(SpecError::BadPort(_))));
        assert_eq!(p("unix:"), Err(SpecError::EmptyPath));
        assert!(matches!(
            p(&format!("unix:/{}", "a".repeat(200))),
            Err(SpecError::PathTooLong(_))
        ));
    }

    #[test]
    fn a_host_name_binds_its_first_address_and_names_the_others() {
        let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(pick([v6, v4, v6, v4].into_iter()), Some((v6, vec![v4])));
        assert_eq!(pick([v4].into_iter()), Some((v4, vec![])));
        assert_eq!(pick(std::iter::empty()), None);
    }

    #[test]
    fn names_default_and_must_be_unique() {
        let specs: Vec<ListenSpec> = ["127.0.0.1:0", "udp://127.0.0.1:0", "x=unix:/a"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(name_all(&specs, &[]).unwrap(), ["tcp0", "udp1", "x"]);
        // Adopted sockets come first and shift the positions.
        assert_eq!(
            name_all(&specs, &["web".into()]).unwrap(),
            ["tcp1", "udp2", "x"]
        );
        assert!(name_all(&specs, &["x".into()]).is_err());
        let dup: Vec<ListenSpec> = ["a=127.0.0.1:0", "a=127.0.0.1:1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(matches!(
            name_all(&dup, &[]),
            Err(BindError::DuplicateName { .. })
        ));
    }

    /// A live listener whose backlog is full answers a blocking connect
    /// only when it accepts: the probe must not wait for that.
    #[test]
    fn a_socket_file_whose_listener_is_full_is_in_use_at_once() {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.sock");
        let listener = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
        let addr = SocketAddrUnix::new(&path).unwrap();
        rustix::net::bind(&listener, &addr).unwrap();
        rustix::net::listen(&listener, 0).unwrap();
        // Fill the backlog with connections nobody accepts.
        let mut held = Vec::new();
        for _ in 0..64 {
            let c = rustix::net::socket_with(
                AddressFamily::UNIX,
                SocketType::STREAM,
                SocketFlags::NONBLOCK,
                None,
            )
            .unwrap();
            let full = rustix::net::connect(&c, &addr).is_err();
            held.push(c);
            if full {
                break;
            }
        }
        let spec = p(&format!("unix:{}", path.display())).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(clear_stale(&spec, &path));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the probe blocked on a full backlog");
        assert!(matches!(got, Err(BindError::UnixInUse { .. })), "{got:?}");
        drop(listener);
    }
}
