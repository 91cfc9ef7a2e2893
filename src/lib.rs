//! The hotsup supervisor's modules, as a library so that the `hotsup`
//! binary, its fuzz targets and its tests share them. The supported
//! interface is the `hotsup` command line; this crate's API is internal and
//! may change in any release.

pub mod child;
pub mod cli;
pub mod client;
pub mod control;
pub mod handoff;
pub mod listeners;
pub mod logging;
pub mod notify;
pub mod signals;
pub mod supervisor;
