//! A real systemd, booted as PID 1 of fresh namespaces, to drive the
//! packaged units with `systemctl`.
//!
//! # How it boots
//!
//! As root, a shell first moves itself into a cgroup of its own (a child of
//! the test process's cgroup in the host's cgroup2 hierarchy, so that
//! everything the guest starts can be killed and removed at once), then
//! runs `unshare --pid --fork --mount --uts --ipc --net --cgroup`, whose
//! child, PID 1 of the new pid namespace, runs [`BOOT`]:
//!
//! - a tmpfs, then an overlay of `/` whose writes go to that tmpfs: the
//!   guest sees the host's files (systemd, libraries, `/usr/bin/...`) and
//!   changes none of them;
//! - fresh `/proc` (with `/proc/sys` read-only: most kernel settings are
//!   global, and systemd would change some at boot), a read-only `/sys`, a
//!   cgroup2 mount (the cgroup namespace makes the guest's cgroup its
//!   root, whatever the host's hierarchy: this machine's is hybrid), and
//!   tmpfs on `/run`, `/tmp` and `/dev` with the usual device nodes bound in;
//! - the files staged by the test (units, the app) copied in, hotsup as
//!   `/usr/bin/hotsup`, testchild as `/usr/local/bin/testchild`;
//! - `pivot_root`, then `exec /usr/lib/systemd/systemd` with
//!   `container=hotsup-e2e` and an empty default target: services pull in
//!   only `sysinit.target` and `basic.target`, whose units that do not
//!   belong in a container (kernel modules, sysctl, udev, ...) are masked.
//!
//! The guest's network namespace has only its own loopback, which systemd
//! brings up: the test's traffic runs on threads moved into that namespace
//! ([`Guest::in_netns`]) and never leaves loopback.
//!
//! Dropping the [`Guest`] kills its cgroup (`cgroup.kill`), which ends the
//! pid namespace, and with its last process the mount namespace and its
//! tmpfs; then the cgroup tree is removed. Should the test process die
//! first, `unshare` gets SIGKILL (parent-death signal) and takes the guest
//! with it (`--kill-child`).
//!
//! # Another systemd
//!
//! `HOTSUP_E2E_SYSTEMD_ROOT=DIR` copies DIR over the guest's `/` before it
//! boots: a newer systemd unpacked there (with merged-/usr paths), from
//! Debian's backports say, then runs in the guest instead of the host's.
//! That is how the `Type=notify-reload` drop-in (systemd 253 and later) is
//! tested on a host that has 252:
//!
//! ```text
//! apt-get download systemd/bookworm-backports libsystemd-shared/bookworm-backports libsystemd0/bookworm-backports
//! for d in *.deb; do dpkg-deb -x "$d" root; done   # then move bin, lib to usr/
//! HOTSUP_E2E_SYSTEMD_ROOT=$PWD/root cargo test --test e2e systemd_real
//! ```
//!
//! # When it cannot boot
//!
//! Not root, no `unshare`/`nsenter`/`pivot_root`, no systemd, no cgroup2 or
//! overlay support, or namespaces refused: [`boot`] says on stderr (past
//! libtest's capture) that the test is skipped, and why, and returns None.
//! With `HOTSUP_REQUIRE_SYSTEMD` set, and not `0` (as `.ci/run` does when it
//! runs as root on a machine with systemd), that is a failure instead.

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{Stream, WAIT, example, hotsup_bin, output_bounded, tempdir, text};

/// PID 1's script before it becomes systemd. `$1`: the tmpfs mount point;
/// `$2`: the staged files; `$3`: hotsup; `$4`: testchild; `$5`: another
/// systemd to copy in, or empty.
const BOOT: &str = r#"
set -eu
base=$1 stage=$2 hotsup=$3 app=$4 systemd_root=$5
mount -t tmpfs -o mode=0755 tmpfs "$base"
mkdir "$base/upper" "$base/work" "$base/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root"
R=$base/root
mount -t proc proc "$R/proc"
mount --bind "$R/proc/sys" "$R/proc/sys"
mount -o remount,bind,ro "$R/proc/sys"
mount -t sysfs -o ro sysfs "$R/sys"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mount -t tmpfs -o mode=0755 tmpfs "$R/dev"
for d in null zero full random urandom tty; do
    touch "$R/dev/$d"
    mount --bind "/dev/$d" "$R/dev/$d"
done
mkdir "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"
if [ -n "$systemd_root" ]; then cp -a "$systemd_root/." "$R/"; fi
cp -a "$stage/." "$R/"
install -m 755 "$hotsup" "$R/usr/bin/hotsup"
install -m 755 "$app" "$R/usr/local/bin/testchild"
cd "$R"
mkdir .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot
rmdir /.oldroot
echo "guest: exec systemd"
exec /usr/lib/systemd/systemd --unit=hotsup-e2e.target
"#;

/// The target the guest boots into: nothing.
const TARGET: &str = "[Unit]\nDescription=hotsup end-to-end tests\nAllowIsolate=yes\n";

/// Units that `sysinit.target` and `basic.target` would start and that do
/// not belong in a test container: most change the host's kernel (modules,
/// sysctl, binfmt) or need real hardware (udev), the rest only cost time.
const MASKED: &[&str] = &[
    "systemd-modules-load.service",
    "modprobe@.service",
    "kmod-static-nodes.service",
    "systemd-sysctl.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "systemd-hwdb-update.service",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    "dev-mqueue.mount",
    "systemd-remount-fs.service",
    "systemd-sysusers.service",
    "systemd-firstboot.service",
    "systemd-random-seed.service",
    "systemd-machine-id-commit.service",
    "systemd-journal-flush.service",
    "systemd-update-utmp.service",
    "systemd-ask-password-console.path",
    "systemd-ask-password-wall.path",
    "systemd-pstore.service",
    "ldconfig.service",
];

/// The app the units run as `/usr/local/bin/%i` with %i = `app`: testchild,
/// with the mode and readiness delay the test wrote (read at each start).
const APP: &str = "#!/bin/sh\n\
    exec /usr/local/bin/testchild --mode-file /etc/app/mode --ready-delay-ms \"$(cat /etc/app/delay)\"\n";

/// Tells apart the cgroups of guests booted by one test process.
static GUESTS: AtomicU32 = AtomicU32::new(0);

/// A booted systemd in namespaces of its own.
pub struct Guest {
    /// unshare, in the host's pid namespace.
    unshare: Child,
    /// The guest's PID 1 (systemd), as the host sees it.
    pub pid: i32,
    cgroup: PathBuf,
    /// What PID 1 printed before and while it was systemd.
    pub console: Stream,
    _dir: tempfile::TempDir,
}

/// Why systemd cannot be booted here.
fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root to create namespaces and mounts".into());
    }
    for tool in ["unshare", "nsenter", "pivot_root", "systemctl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    if !Path::new("/usr/lib/systemd/systemd").exists() {
        return Some("/usr/lib/systemd/systemd is not installed".into());
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    for needed in ["cgroup2", "overlay", "tmpfs"] {
        if !fs
            .lines()
            .any(|l| l.split_whitespace().last() == Some(needed))
        {
            return Some(format!("the kernel has no {needed} file system"));
        }
    }
    if let Err(why) = own_cgroup() {
        return Some(why);
    }
    None
}

/// The test process's own cgroup directory in the host's cgroup2
/// hierarchy (`/sys/fs/cgroup/...`, or `/sys/fs/cgroup/unified/...` on a
/// hybrid system).
fn own_cgroup() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    // "36 25 0:31 / /sys/fs/cgroup/unified rw,... - cgroup2 cgroup2 rw"
    let (root, mount) = mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if right.split_whitespace().next() != Some("cgroup2") {
                return None;
            }
            let f: Vec<&str> = left.split_whitespace().collect();
            Some((f.get(3)?.to_string(), PathBuf::from(f.get(4)?)))
        })
        .ok_or("no cgroup2 hierarchy is mounted on the host")?;
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process has no cgroup2 cgroup")?;
    let rel = Path::new(own)
        .strip_prefix(&root)
        .map_err(|_| format!("own cgroup {own} is outside the mounted {root}"))?;
    let dir = mount.join(rel);
    let probe = dir.join("cgroup.procs");
    if rustix::fs::access(&probe, rustix::fs::Access::WRITE_OK).is_err() {
        return Err(format!("cannot create cgroups below {}", dir.display()));
    }
    Ok(dir)
}

/// A test that cannot boot systemd here: skipped with its reason, or a
/// failure where `HOTSUP_REQUIRE_SYSTEMD` is set.
fn cannot_boot(test: &str, why: &str) {
    assert!(
        std::env::var_os("HOTSUP_REQUIRE_SYSTEMD").is_none_or(|v| v == "0"),
        "{test}: cannot boot systemd ({why}) but HOTSUP_REQUIRE_SYSTEMD is set"
    );
    crate::util::skip(test, &format!("cannot boot a real systemd here: {why}"));
}

/// Files to copy into the guest's `/`, and how.
pub struct Stage {
    dir: PathBuf,
}

impl Stage {
    /// Writes `contents` at `path` (absolute, as in the guest).
    pub fn write(&self, path: &str, contents: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let at = self.dir.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(&at, contents).unwrap();
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// Boots a guest with the packaged units in `/etc/systemd/system`, the app
/// in `/usr/local/bin/app` (mode `serve`, no readiness delay), and what
/// `stage` adds. None when the test must be skipped (said on stderr).
pub fn boot(test: &str, stage: impl FnOnce(&Stage)) -> Option<Guest> {
    if let Some(why) = unavailable() {
        cannot_boot(test, &why);
        return None;
    }
    let dir = tempdir();
    let base = dir.path().join("mnt");
    let staged = Stage {
        dir: dir.path().join("stage"),
    };
    std::fs::create_dir(&base).unwrap();
    for unit in crate::packaging::packaged_units() {
        let name = unit.file_name().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(&unit).unwrap();
        staged.write(&format!("/etc/systemd/system/{name}"), &text, 0o644);
    }
    staged.write("/etc/systemd/system/hotsup-e2e.target", TARGET, 0o644);
    std::fs::create_dir_all(staged.dir.join("etc/systemd/system")).unwrap();
    for unit in MASKED {
        std::os::unix::fs::symlink(
            "/dev/null",
            staged.dir.join("etc/systemd/system").join(unit),
        )
        .unwrap();
    }
    staged.write("/usr/local/bin/app", APP, 0o755);
    staged.write("/etc/app/mode", "serve", 0o644);
    staged.write("/etc/app/delay", "0", 0o644);
    stage(&staged);

    let cgroup = match own_cgroup() {
        Ok(own) => own.join(format!(
            "e2e-systemd-{}-{}",
            std::process::id(),
            GUESTS.fetch_add(1, Ordering::SeqCst)
        )),
        Err(why) => {
            cannot_boot(test, &why);
            return None;
        }
    };
    std::fs::create_dir(&cgroup).unwrap_or_else(|e| panic!("{}: {e}", cgroup.display()));
    let mut cmd = Command::new("sh");
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        // How systemd knows it runs in a container.
        .env("container", "hotsup-e2e")
        .env("BOOT", BOOT)
        .args([
            "-c",
            r#"echo $$ > "$1/cgroup.procs" && shift && unset_boot=$BOOT && unset BOOT && exec unshare --pid --fork --kill-child=SIGKILL --mount --uts --ipc --net --cgroup --propagation private -- sh -c "$unset_boot" boot "$@""#,
            "guest",
        ])
        .arg(&cgroup)
        .arg(&base)
        .arg(&staged.dir)
        .arg(hotsup_bin())
        .arg(example("testchild"))
        .arg(std::env::var_os("HOTSUP_E2E_SYSTEMD_ROOT").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl(PR_SET_PDEATHSIG) is a raw syscall, async-signal-safe,
    // touching no memory of the parent: if the test thread dies, unshare
    // gets SIGKILL and, with --kill-child, so does the guest.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    let mut unshare = cmd.spawn().expect("spawn sh");
    let console = Stream::follow(unshare.stdout.take().unwrap(), "guest");
    let errors = Stream::follow(unshare.stderr.take().unwrap(), "guest");
    let host_pid = unshare.id() as i32;
    let mut guest = Guest {
        unshare,
        pid: 0,
        cgroup,
        console,
        _dir: dir,
    };
    // PID 1 says so just before it becomes systemd; before that, a failure
    // is the environment's (namespaces or mounts refused).
    let deadline = Instant::now() + WAIT;
    loop {
        if guest
            .console
            .all()
            .iter()
            .any(|l| l.contains("guest: exec systemd"))
        {
            break;
        }
        if let Ok(Some(status)) = guest.unshare.try_wait() {
            let why = format!(
                "the namespaces or mounts were refused ({status}): {}",
                errors.all().join(" | ")
            );
            cannot_boot(test, &why);
            return None;
        }
        assert!(Instant::now() < deadline, "the guest did not boot");
        thread::sleep(Duration::from_millis(10));
    }
    guest.pid = *crate::util::children_of(host_pid)
        .first()
        .expect("unshare has no child");
    // Up when systemd says so; any failed unit is a failure of the test.
    let deadline = Instant::now() + WAIT;
    loop {
        let out = guest.systemctl(&["is-system-running"]);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match state.as_str() {
            "running" => break,
            "degraded" => panic!(
                "the guest booted degraded:\n{}",
                text(&guest.systemctl(&["--failed", "--no-legend"]))
            ),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "systemd did not finish booting: {state}\n{}",
            guest.console.all().join("\n")
        );
        thread::sleep(Duration::from_millis(20));
    }
    Some(guest)
}

impl Guest {
    /// Runs `program ARGS` inside every namespace of the guest.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.pid.to_string())
            .args(["-a", "--", program])
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0");
        output_bounded(cmd)
    }

    /// The guest's systemd version (252 for `systemd 252 (252.38-1~deb12u1)`).
    pub fn version(&self) -> u32 {
        let out = self.systemctl(&["--version"]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("systemctl --version: {}", text(&out)))
    }

    pub fn systemctl(&self, args: &[&str]) -> Output {
        self.exec("systemctl", args)
    }

    /// `systemctl ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.systemctl(args);
        assert!(
            out.status.success(),
            "systemctl {args:?}: {}\n{}",
            text(&out),
            self.journal()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A property of a unit (`systemctl show -P`).
    pub fn show(&self, unit: &str, property: &str) -> String {
        self.ok(&["show", "-P", property, unit]).trim().to_string()
    }

    /// The unit's main pid, in the guest's pid namespace.
    pub fn main_pid(&self, unit: &str) -> u32 {
        self.show(unit, "MainPID").parse().expect("MainPID")
    }

    /// Polls `check` until it holds, for at most [`WAIT`].
    pub fn wait_for(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !check() {
            assert!(
                Instant::now() < deadline,
                "never true: {what}\n{}",
                self.journal()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `hotsup ARGS` in the guest (as root, whose control sockets are in
    /// the guest's own /run/hotsup).
    pub fn hotsup(&self, args: &[&str]) -> Output {
        self.exec("/usr/bin/hotsup", args)
    }

    /// `hotsup status --json` of the only hotsup in the guest.
    pub fn status(&self) -> serde_json::Value {
        let out = self.hotsup(&["status", "--json"]);
        assert!(out.status.success(), "hotsup status: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Writes a file in the guest (through `/proc/PID/root`, into the
    /// overlay's tmpfs).
    pub fn write(&self, path: &str, contents: &str) {
        let at = format!("/proc/{}/root{path}", self.pid);
        std::fs::write(&at, contents).unwrap_or_else(|e| panic!("{at}: {e}"));
    }

    /// The journal's last lines, for failure messages.
    pub fn journal(&self) -> String {
        let out = self.exec(
            "journalctl",
            &["--no-pager", "-n", "80", "-o", "short-monotonic"],
        );
        format!("guest journal:\n{}", text(&out))
    }

    /// Runs `f` on a thread moved into the guest's network namespace: its
    /// sockets, and those of the threads it starts, are the guest's, on the
    /// guest's own loopback.
    pub fn in_netns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.pid)).expect("guest netns");
        thread::spawn(move || {
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns into the guest's network namespace");
            f()
        })
        .join()
        .expect("thread in the guest's network namespace")
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // Everything the guest runs is in its cgroup: kill it all at once.
        // Without cgroup.kill (Linux < 5.14), killing PID 1 ends the pid
        // namespace, which the kernel empties.
        if std::fs::write(self.cgroup.join("cgroup.kill"), "1").is_err()
            && self.pid > 0
            && let Some(pid) = rustix::process::Pid::from_raw(self.pid)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        let deadline = Instant::now() + WAIT;
        let events = self.cgroup.join("cgroup.events");
        while std::fs::read_to_string(&events).is_ok_and(|e| e.contains("populated 1"))
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        remove_cgroup_tree(&self.cgroup);
    }
}

/// Removes an emptied cgroup and every cgroup below it, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "warning: cannot remove cgroup {}: {e}",
            dir.display()
        );
    }
}
