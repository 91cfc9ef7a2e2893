//! End-to-end tests: the real `hotsup` binary supervising real servers on
//! loopback. One test binary, as ripgrep does; each module is one area.

mod bad_input;
mod child_v2;
mod config;
mod containment;
mod control;
mod exec_env;
mod faults;
mod hooks;
mod hygiene;
mod languages;
mod lifecycle;
mod listeners;
mod notify;
mod observe;
mod packaging;
mod pools;
mod privileges;
mod probation;
mod recipes;
mod reliability_log;
mod rollback;
mod self_upgrade;
mod sysd;
mod systemd;
mod systemd_real;
mod upgrade;
mod util;
#[cfg(feature = "watch")]
mod watch;
