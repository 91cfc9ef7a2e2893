//! Built without the `watch` feature: `hotsup run --watch` is refused at
//! start-up, and this stands in for `watch.rs` so that the supervisor is
//! the same either way. Nothing here can run: [`Watch`] has no value.

use std::path::PathBuf;
use std::time::Duration;

use crate::aux::{AuxExit, AuxProcesses};
use crate::lifecycle::{Event, Input};

/// Whether this hotsup was built with watch mode (the `watch` feature).
pub const AVAILABLE: bool = false;

/// The default `--debounce`.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// What `hotsup run --watch` was given (see `watch.rs`).
pub struct Config {
    pub paths: Vec<PathBuf>,
    pub build: Option<String>,
    pub debounce: Duration,
    pub ignore: Vec<String>,
    pub livereload: Option<std::net::TcpListener>,
    pub human: bool,
    pub command: PathBuf,
    pub nofile: Option<u64>,
}

/// Never exists in this build.
pub enum Watch {}

impl Watch {
    pub fn new(_cfg: Config) -> Result<Watch, String> {
        Err("this hotsup was built without watch mode (cargo feature `watch`)".into())
    }

    pub fn starts_at_once(&mut self) -> bool {
        match *self {}
    }

    pub fn on_event(&mut self, _ev: &Event) {
        match *self {}
    }
}

/// Never completes.
pub async fn next(_watch: &mut Option<Watch>, _aux: &mut AuxProcesses) -> Input {
    std::future::pending().await
}

pub fn aux_exited(_watch: &mut Option<Watch>, _exit: &AuxExit) -> Option<Input> {
    None
}
