//! The `hotsup-bench` binary's scenarios, measurements and report.

pub mod idle;
pub mod json;
pub mod logline;
pub mod output;
pub mod procfs;
pub mod procs;
pub mod restarts;
pub mod scale;
pub mod scenario;
pub mod suite;
pub mod supervised;
pub mod throughput;
