//! Deployment tests: the daemons under a fake systemd (`lifecycle`), the unit, PM2, compose
//! and Docker files and the operations guide (`artifacts`), and `upkeepctl doctor` (`doctor`).
//!
//! The lifecycle and doctor tests start real binaries against the shared Redis and Postgres
//! (and private Redis servers); build them first with `cargo build --workspace --bins`.

mod artifacts;
mod doctor;
mod lifecycle;
mod support;
