//! Job handlers, one module per job family: `ping` (`system.ping`), `reports` (the Postgres
//! health reports, queue snapshots and the failed-job review) and `tokens` (`tokens.refresh`).
//! Maintenance kinds without a handler are refused at enqueue until their module lands.

pub mod disk;
pub mod logs;
pub mod ping;
pub mod reports;
pub mod tokens;
