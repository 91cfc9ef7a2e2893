//! End-to-end tests: the real `hotsup` binary supervising real servers on
//! loopback. One test binary, as ripgrep does; each module is one area.

mod bad_input;
mod child_v2;
mod control;
mod faults;
mod lifecycle;
mod listeners;
mod recipes;
mod rollback;
mod systemd;
mod upgrade;
mod util;
