//! End-to-end tests: the real `hotsup` binary supervising real servers on
//! loopback. One test binary, as ripgrep does; each module is one area.

mod bad_input;
mod containment;
mod control;
mod faults;
mod hygiene;
mod lifecycle;
mod listeners;
mod notify;
mod privileges;
mod reliability_log;
mod rollback;
mod systemd;
mod upgrade;
mod util;
#[cfg(feature = "watch")]
mod watch;
