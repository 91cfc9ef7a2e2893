//! Load generation and benchmarking support for hotsup.
//!
//! [`loadgen`] drives HTTP/1.1 load at a server on loopback with plain
//! threads and counts every failure; [`http`] is the minimal blocking client
//! it is built on, also usable for one-off probes ([`request_once`]);
//! [`procfs`] is what the bench reads from /proc; [`kit`] runs hotsup
//! under test, for the bench and the end-to-end tests.

pub mod http;
pub mod kit;
pub mod loadgen;
pub mod procfs;
pub mod recipes;

pub use http::{Connection, Failure, FailureKind, Identity, Response, request_once};
pub use loadgen::{
    FailureSample, LatencyStats, Load, LoadConfig, MAX_FAILURE_SAMPLES, Report, Sample, Snapshot,
    Window, percentile,
};
