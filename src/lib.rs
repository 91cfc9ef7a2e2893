//! The hotsup supervisor's modules, as a library so that the `hotsup`
//! binary, its fuzz targets and its tests share them. The supported
//! interface is the `hotsup` command line; this crate's API is internal and
//! may change in any release.

pub mod aux;
pub mod cgroup;
pub mod child;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod events;
pub mod exec_env;
pub mod fdstore;
pub mod fork;
pub mod handoff;
pub mod hooks;
pub mod identity;
pub mod lifecycle;
pub mod listeners;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod pinned;
pub mod reload;
pub mod resident;
pub mod runtime_dir;
pub mod settings;
pub mod signals;
pub mod state;
pub mod supervisor;
pub mod sys;
#[cfg(feature = "watch")]
pub mod watch;
#[cfg(not(feature = "watch"))]
#[path = "watch_off.rs"]
pub mod watch;
