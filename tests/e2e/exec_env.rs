//! `--chdir`, `--env`, `--env-file`, `--umask` and `--rlimit` reach every
//! generation's process, and bad values stop hotsup before anything exists.

use std::os::unix::process::CommandExt;
use std::path::Path;

use rustix::process::{Resource, Signal, getrlimit};

use crate::util::{
    Hotsup, WAIT, environ_var, example, hotsup_command, proc_status, run_to_end, tempdir,
};

/// The `/proc/PID/limits` row of `label`: (soft, hard) as written there.
fn limits(pid: i32, label: &str) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let row = text
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in /proc/{pid}/limits:\n{text}"));
    let mut cols = row[label.len()..].split_whitespace();
    (
        cols.next().unwrap().to_string(),
        cols.next().unwrap().to_string(),
    )
}

/// Everything the options set, checked on one generation's process.
fn assert_exec_env(pid: i32, g: u64, work: &Path, nofile: (u64, u64)) {
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd");
    assert_eq!(cwd, work, "generation {g}: working directory");
    let var = |k| environ_var(pid, k);
    // The second file overrides the first; --env overrides both.
    assert_eq!(
        var("FROM_FILE").as_deref(),
        Some("second"),
        "generation {g}"
    );
    assert_eq!(
        var("OVERRIDDEN").as_deref(),
        Some("by --env"),
        "generation {g}"
    );
    assert_eq!(
        var("QUOTED").as_deref(),
        Some("two  words # kept"),
        "generation {g}"
    );
    assert_eq!(var("JOINED").as_deref(), Some("one two"), "generation {g}");
    assert_eq!(var("ONLY_CLI").as_deref(), Some("a=b"), "generation {g}");
    // hotsup's own variables are still its own.
    assert_eq!(
        var("HOTSUP_GENERATION"),
        Some(g.to_string()),
        "generation {g}"
    );
    assert_eq!(proc_status(pid, "Umask"), "0027", "generation {g}");
    assert_eq!(
        limits(pid, "Max open files"),
        (nofile.0.to_string(), nofile.1.to_string()),
        "generation {g}: an explicit --rlimit nofile wins over hotsup's own restoring"
    );
    assert_eq!(
        limits(pid, "Max core file size"),
        ("0".into(), "1234567".into()),
        "generation {g}"
    );
    assert_eq!(
        limits(pid, "Max msgqueue size"),
        ("4096".into(), "8192".into()),
        "generation {g}"
    );
}

/// hotsup restores a child's soft RLIMIT_NOFILE to the one hotsup started
/// with: hotsup is started with a soft limit of 2000, and the explicit one
/// is above it, so a restoring that overrode `--rlimit nofile` would show.
const HOTSUP_NOFILE: u64 = 2000;

/// The explicit `--rlimit nofile` (soft, hard): above [`HOTSUP_NOFILE`],
/// and below hotsup's hard limit (raising it would need CAP_SYS_RESOURCE).
/// Soft = hard, because a `hotsup-child` app raises its soft limit to the
/// hard one when it receives sockets natively; under `--fds systemd` it
/// does not, so that is where a restoring that fought `--rlimit` would
/// show (2000).
fn explicit_nofile() -> (u64, u64) {
    let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(u64::MAX);
    assert!(
        hard >= 3000,
        "this test needs a hard RLIMIT_NOFILE of 3000 or more, not {hard}"
    );
    (3000, 3000)
}

fn exec_env_reaches_every_generation(fds: &str) {
    let dir = tempdir();
    let work = dir.path().join("work dir");
    std::fs::create_dir(&work).unwrap();
    let first = dir.path().join("first.env");
    let second = dir.path().join("second.env");
    std::fs::write(
        &first,
        "# the first file\nFROM_FILE=first\nOVERRIDDEN=by the file\n\
         QUOTED=\"two  words # kept\"   \nJOINED=one \\\ntwo\n",
    )
    .unwrap();
    std::fs::write(&second, "; the second file\n  FROM_FILE = second\n").unwrap();
    let missing = format!("-{}", dir.path().join("missing.env").display());
    let nofile = explicit_nofile();
    let nofile_arg = format!("nofile={}:{}", nofile.0, nofile.1);
    let args = [
        "-l",
        "http=127.0.0.1:0",
        "--fds",
        fds,
        "--drain-timeout",
        "5s",
        "--chdir",
        work.to_str().unwrap(),
        "--env-file",
        &missing,
        "--env-file",
        first.to_str().unwrap(),
        "--env-file",
        second.to_str().unwrap(),
        "--env",
        "OVERRIDDEN=by --env",
        "--env",
        "ONLY_CLI=a=b",
        "--umask",
        "027",
        "--rlimit",
        &nofile_arg,
        "--rlimit",
        "LimitCORE=0:1234567",
        "--rlimit",
        "msgqueue=4096:8192",
    ];
    // COMMAND relative to hotsup's own directory, not to --chdir's.
    let testchild = example("testchild");
    let mut cmd = hotsup_command(&args, &["./testchild"]);
    cmd.current_dir(testchild.parent().unwrap());
    let hard = getrlimit(Resource::Nofile).maximum;
    // SAFETY: runs between fork and exec; setrlimit is one raw syscall on
    // values captured by copy, and nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            let lim = rustix::process::Rlimit {
                current: Some(HOTSUP_NOFILE),
                maximum: hard,
            };
            rustix::process::setrlimit(Resource::Nofile, lim).map_err(Into::into)
        });
    }
    let mut h = Hotsup::from_child(cmd.spawn().expect("spawn hotsup"));
    let pid = h.ready(1);
    assert_exec_env(pid, 1, &work, nofile);
    h.upgrade();
    let pid = h.ready(2);
    assert_exec_env(pid, 2, &work, nofile);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn exec_env_reaches_every_generation_native() {
    exec_env_reaches_every_generation("native");
}

#[test]
fn exec_env_reaches_every_generation_systemd() {
    exec_env_reaches_every_generation("systemd");
}

#[test]
fn user_env_overrides_home_but_not_the_protocol() {
    let mut h = Hotsup::run(
        &["-l", "127.0.0.1:0", "--env", "HOME=/srv/app"],
        &[example("testchild")],
    );
    let pid = h.ready(1);
    assert_eq!(environ_var(pid, "HOME").as_deref(), Some("/srv/app"));
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

/// Runs `hotsup run ARGS` with a Unix listener and a COMMAND that would
/// leave a marker: exit 2, one line naming `mentions`, no socket file, no
/// marker.
fn refused(extra: &[&str], mentions: &[&str]) {
    let dir = tempdir();
    let sock = dir.path().join("s.sock");
    let marker = dir.path().join("started");
    let listen = format!("unix:{}", sock.display());
    let touch = format!("touch {}", marker.display());
    let mut args = vec!["run", "-l", &listen];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "/bin/sh", "-c", &touch]);
    let (code, err) = run_to_end(&args);
    assert_eq!(code, 2, "hotsup {extra:?} exited {code}: {err}");
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "hotsup {extra:?} printed:\n{err}");
    assert!(lines[0].starts_with("hotsup: "), "{err}");
    for m in mentions {
        assert!(
            err.contains(m),
            "hotsup {extra:?}: {err:?} does not mention {m:?}"
        );
    }
    assert!(!sock.exists(), "hotsup {extra:?} left its socket file");
    assert!(!marker.exists(), "hotsup {extra:?} started COMMAND");
}

#[test]
fn bad_exec_env_values_stop_hotsup_before_anything_exists() {
    let dir = tempdir();
    let file = dir.path().join("app.env");
    std::fs::write(&file, "A=1\n\nB='never closed\nC=3\n").unwrap();
    let f = file.to_str().unwrap();
    let export = dir.path().join("export.env");
    std::fs::write(&export, "# shell style\nexport A=1\n").unwrap();
    let e = export.to_str().unwrap();
    let protocol = dir.path().join("protocol.env");
    std::fs::write(&protocol, "LISTEN_FDS=3\n").unwrap();
    let p = protocol.to_str().unwrap();
    let absent = dir.path().join("absent.env");
    let a = absent.to_str().unwrap();
    let not_dir = file.to_str().unwrap();

    refused(
        &["--chdir", "/nonexistent/dir"],
        &["--chdir /nonexistent/dir", "No such file"],
    );
    refused(
        &["--chdir", not_dir],
        &["--chdir", not_dir, "not a directory"],
    );
    refused(&["--env", "NOVALUE"], &["--env", "NOVALUE", "KEY=VALUE"]);
    refused(
        &["--env", "1A=x"],
        &["--env", "1A=x", "not a variable name"],
    );
    refused(
        &["--env", "NOTIFY_SOCKET=/tmp/x"],
        &["NOTIFY_SOCKET", "hotsup's own"],
    );
    refused(&["--env", "HOTSUP_FD=9"], &["HOTSUP_FD", "hotsup's own"]);
    refused(&["--env-file", f], &[f, "line 3", "never closed"]);
    refused(&["--env-file", e], &[e, "line 2", "\"export A\""]);
    refused(
        &["--env-file", p],
        &[p, "line 1", "LISTEN_FDS", "hotsup's own"],
    );
    refused(&["--env-file", a], &[a, "No such file"]);
    refused(
        &["--env-file", dir.path().to_str().unwrap()],
        &["--env-file", "directory"],
    );
    refused(&["--umask", "0999"], &["--umask", "0999", "octal"]);
    refused(&["--umask", "1777"], &["--umask", "1777", "octal"]);
    refused(
        &["--rlimit", "nofile"],
        &["--rlimit", "nofile", "NAME=SOFT"],
    );
    refused(&["--rlimit", "files=10"], &["files=10", "unknown limit"]);
    refused(
        &["--rlimit", "core=lots"],
        &["core=lots", "not a number or infinity"],
    );
    refused(
        &["--rlimit", "core=10:5"],
        &["core=10:5", "above the hard limit"],
    );
    refused(&["--rlimit", "nofile=infinity"], &["nofile", "fs.nr_open"]);
    refused(&["--rlimit", "nofile=3"], &["nofile=3:3", "too low"]);
}

#[test]
fn a_missing_optional_env_file_is_skipped() {
    let dir = tempdir();
    let missing = format!("-{}", dir.path().join("absent.env").display());
    let mut h = Hotsup::run(
        &["-l", "127.0.0.1:0", "--env-file", &missing],
        &[example("testchild")],
    );
    h.ready(1);
    assert_eq!(h.log.count_events("env_file_missing", &[]), 1);
    h.signal(Signal::TERM);
    assert_eq!(h.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn chdir_is_entered_as_the_user() {
    if !crate::util::root_or_skip(
        "chdir_is_entered_as_the_user",
        "needs root to run children as nobody",
    ) {
        return;
    }
    let dir = tempdir();
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let p = private.to_str().unwrap();
    // Root could enter it; the children, as nobody, could not.
    refused(
        &["--user", "nobody", "--chdir", p],
        &["--chdir", p, "may not enter it", "mode 700"],
    );
}
