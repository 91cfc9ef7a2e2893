//! The `hotsup-bench` binary's scenario, measurements and report.

pub mod json;
pub mod logline;
pub mod output;
pub mod procfs;
pub mod scenario;
pub mod supervised;
