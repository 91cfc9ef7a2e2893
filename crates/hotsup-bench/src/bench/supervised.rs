//! How the bench starts hotsup (the test kit, `hotsup_bench::kit`, runs
//! it) and where it finds the binaries it drives.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
pub use hotsup_bench::kit::{Hotsup, Stopped};
use hotsup_bench::kit::{Runtime, built};
use rustix::process::Signal;

use super::procs::die_with_bench;

/// `--drain-timeout` given to hotsup unless a scenario says otherwise.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start `hotsup run`.
#[derive(Debug, Clone)]
pub struct Launch {
    pub hotsup: PathBuf,
    /// One `-l` each.
    pub listen: Vec<String>,
    /// More options of `hotsup run`.
    pub args: Vec<String>,
    /// COMMAND and its arguments.
    pub command: Vec<OsString>,
    pub drain_timeout: Duration,
    /// `--log-format json`; false for a hotsup from before it (its log is
    /// then only counted, never read).
    pub json: bool,
}

impl Launch {
    /// `hotsup run -l 127.0.0.1:0 --drain-timeout 10s --log-format json --
    /// PROGRAM`.
    pub fn new(hotsup: &Path, program: &Path) -> Launch {
        Launch {
            hotsup: hotsup.to_path_buf(),
            listen: vec!["127.0.0.1:0".into()],
            args: Vec::new(),
            command: vec![program.into()],
            drain_timeout: DRAIN_TIMEOUT,
            json: true,
        }
    }

    pub fn listeners(mut self, k: usize) -> Launch {
        self.listen = vec!["127.0.0.1:0".into(); k.max(1)];
        self
    }

    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Launch {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Every argument of hotsup.
    pub fn argv(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec!["run".into()];
        for l in &self.listen {
            v.extend(["-l".into(), l.into()]);
        }
        v.extend([
            "--drain-timeout".into(),
            format!("{}ms", self.drain_timeout.as_millis()).into(),
        ]);
        if self.json {
            v.extend(["--log-format".into(), "json".into()]);
        }
        v.extend(self.args.iter().map(OsString::from));
        v.push("--".into());
        v.extend(self.command.iter().cloned());
        v
    }

    /// Starts hotsup with a private runtime directory, its stdout on
    /// /dev/null (the children inherit it: their banners stay off the
    /// report) and its log followed quietly. hotsup gets SIGTERM if the
    /// bench dies in any way (even SIGKILL), and shuts its generations
    /// down.
    pub fn start(&self) -> Result<Hotsup> {
        let runtime = Runtime::try_new().context("cannot create a runtime directory")?;
        let mut cmd = Command::new(&self.hotsup);
        runtime.apply(&mut cmd);
        die_with_bench(&mut cmd, Signal::TERM);
        let child = cmd
            .args(self.argv())
            // Every event is at INFO or above, whatever the caller's RUST_LOG.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", self.hotsup.display()))?;
        Ok(Hotsup::follow(child, false).with_runtime(runtime))
    }
}

/// The binaries the bench drives, next to its own executable.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub hotsup: PathBuf,
    pub http: PathBuf,
    /// `examples/listenfd_app`, if it was built.
    pub listenfd_app: Option<PathBuf>,
    pub testchild: PathBuf,
    pub cpu: PathBuf,
    /// `--old-hotsup`: a hotsup built from an older commit, to measure
    /// beside this one, with its own `examples/http`.
    pub old: Option<OldBuild>,
}

#[derive(Debug, Clone)]
pub struct OldBuild {
    pub hotsup: PathBuf,
    pub http: PathBuf,
}

impl Binaries {
    /// Finds the binaries in the directory of the running executable
    /// (target/release/ under `cargo run --release`).
    pub fn locate(old: Option<&Path>) -> Result<Binaries> {
        let example = |name: &str| built(&format!("examples/{name}"));
        let bins = Binaries {
            hotsup: built("hotsup"),
            http: example("http"),
            listenfd_app: Some(example("listenfd_app")).filter(|p| p.is_file()),
            testchild: example("testchild"),
            cpu: example("cpu"),
            old: old.map(|h| OldBuild {
                hotsup: h.to_path_buf(),
                http: h
                    .parent()
                    .map(|d| d.join("examples").join("http"))
                    .unwrap_or_default(),
            }),
        };
        let mut needed = vec![&bins.hotsup, &bins.http, &bins.testchild, &bins.cpu];
        if let Some(o) = &bins.old {
            needed.extend([&o.hotsup, &o.http]);
        }
        let missing: Vec<String> = needed
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} not found; build with: cargo build --release --bin hotsup --examples",
                missing.join(", ")
            );
        }
        Ok(bins)
    }
}
