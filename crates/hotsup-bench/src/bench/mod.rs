//! The `hotsup-bench` binary's scenarios, measurements and report.

pub mod idle;
pub mod notify;
pub mod pools;
pub mod probation;
pub mod procs;
pub mod report;
pub mod restarts;
pub mod scale;
pub mod suite;
pub mod supervised;
pub mod throughput;
pub mod upgrades;
