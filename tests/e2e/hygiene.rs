//! What children must not inherit from the way hotsup itself was started:
//! ignored signals, `LISTEN_FDS_FIRST_FD`, and a umask that would open the
//! notify socket's directory.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use rustix::process::Signal;

use crate::privileges::nobody;
use crate::util::{Hotsup, WAIT, environ_var, example, hotsup_command, http_get, proc_status};

/// Signals a parent of hotsup might ignore (nohup, shells, CI runners).
const IGNORED_BY_PARENT: [libc::c_int; 8] = [
    libc::SIGALRM,
    libc::SIGTSTP,
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn bit(sig: libc::c_int) -> u64 {
    1 << (sig - 1)
}

fn sig_ign(pid: i32) -> u64 {
    u64::from_str_radix(&proc_status(pid, "SigIgn"), 16).unwrap()
}

#[test]
fn signals_ignored_by_hotsups_parent_are_not_ignored_by_children() {
    let testchild = example("testchild").into_os_string();
    let notify_app = example("notify_app").into_os_string();
    let cases: [(&[&str], Vec<std::ffi::OsString>); 3] = [
        (&["--ready", "exec"], vec!["sleep".into(), "60".into()]),
        (&[], vec![testchild]),
        (&["--fds", "systemd"], vec![notify_app]),
    ];
    let watched = IGNORED_BY_PARENT.iter().fold(0, |m, s| m | bit(*s));
    for (args, command) in cases {
        let mut all = vec!["-l", "127.0.0.1:0"];
        all.extend(args);
        let mut cmd = hotsup_command(&all, &command);
        // SAFETY: runs in the forked child before exec; signal() only
        // makes the rt_sigaction syscall.
        unsafe {
            cmd.pre_exec(|| {
                for sig in IGNORED_BY_PARENT {
                    libc::signal(sig, libc::SIG_IGN);
                }
                Ok(())
            });
        }
        let mut h = Hotsup::spawn(cmd);
        let pid = h.ready(1);
        // The set-up works: hotsup inherited them ignored (those it
        // handles itself it catches instead).
        let hotsup = sig_ign(h.pid);
        assert_eq!(
            hotsup & (bit(libc::SIGALRM) | bit(libc::SIGTSTP)),
            bit(libc::SIGALRM) | bit(libc::SIGTSTP),
            "hotsup SigIgn {hotsup:016x}"
        );
        let child = sig_ign(pid);
        assert_eq!(
            child & watched,
            0,
            "{command:?} SigIgn {child:016x}: ignored because hotsup's parent ignored them"
        );
        if command[0] == "sleep" {
            // Rust apps ignore SIGPIPE themselves; sleep ignores nothing.
            assert_eq!(child, 0, "sleep SigIgn {child:016x}");
        }
        h.signal(Signal::TERM);
        assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    }
}

#[test]
fn an_inherited_listen_fds_first_fd_does_not_reach_children() {
    // listenfd honours LISTEN_FDS_FIRST_FD; were it inherited, the app
    // would find no listener at fd 10, fall back to its ADDR argument
    // (deliberately unbindable) and exit.
    let listenfd_app = example("listenfd_app").into_os_string();
    let testchild = example("testchild").into_os_string();
    let cases: [(&[&str], Vec<std::ffi::OsString>); 2] = [
        (
            &["--fds", "systemd", "--ready", "delay:300ms"],
            vec![listenfd_app, "127.0.0.1:99999".into()],
        ),
        (&[], vec![testchild]),
    ];
    for (args, command) in cases {
        let mut all = vec!["-l", "web=127.0.0.1:0"];
        all.extend(args);
        let mut cmd = hotsup_command(&all, &command);
        cmd.env("LISTEN_FDS_FIRST_FD", "10");
        let mut h = Hotsup::spawn(cmd);
        let addr = h.addr("web");
        let pid = h.ready(1);
        assert_eq!(environ_var(pid, "LISTEN_FDS_FIRST_FD"), None);
        let reply = http_get(addr);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains(&format!("pid={pid} ")), "{reply}");
        h.signal(Signal::TERM);
        assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    }
}

/// hotsup started with `umask`, children as `args` say; returns the
/// metadata of the child's NOTIFY_SOCKET directory and socket.
fn notify_socket_of(umask: libc::mode_t, args: &[&str]) -> (std::fs::Metadata, std::fs::Metadata) {
    let mut all = vec!["--ready", "exec", "-l", "127.0.0.1:0"];
    all.extend(args);
    let mut cmd = hotsup_command(&all, &["sleep", "60"]);
    // SAFETY: runs in the forked child before exec; umask() is a plain
    // syscall.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask);
            Ok(())
        });
    }
    let mut h = Hotsup::spawn(cmd);
    let pid = h.ready(1);
    let socket = environ_var(pid, "NOTIFY_SOCKET").expect("a NOTIFY_SOCKET");
    let socket = Path::new(&socket);
    let found = (
        std::fs::metadata(socket.parent().unwrap()).unwrap(),
        std::fs::symlink_metadata(socket).unwrap(),
    );
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
    assert!(!socket.exists(), "the notify socket was left behind");
    found
}

#[test]
fn the_notify_directory_is_private_whatever_the_umask() {
    let me = rustix::process::geteuid().as_raw();
    for umask in [0o022, 0o000] {
        let (dir, socket) = notify_socket_of(umask, &[]);
        assert_eq!(dir.mode() & 0o7777, 0o700, "directory, umask {umask:03o}");
        assert_eq!(dir.uid(), me);
        assert_eq!(socket.mode() & 0o7777, 0o600, "socket, umask {umask:03o}");
        assert_eq!(socket.uid(), me);
    }
    if !crate::util::root_or_skip(
        "the_notify_directory_is_private_whatever_the_umask (--user part)",
        "needs root to run children as nobody",
    ) {
        return;
    }
    // With --user, the socket is the children's, in hotsup's directory that
    // only their group may traverse.
    let (uid, gid, _) = nobody();
    let (dir, socket) = notify_socket_of(0o000, &["--user", "nobody"]);
    assert_eq!(dir.mode() & 0o7777, 0o710);
    assert_eq!((dir.uid(), dir.gid()), (me, gid));
    assert_eq!(socket.mode() & 0o7777, 0o600);
    assert_eq!((socket.uid(), socket.gid()), (uid, gid));
}
