//! Job handlers, one module per job family: `ping` (`system.ping`), `backup` (`backup.run`,
//! `backup.verify`), `logs` and `disk`, `reports` (the Postgres health reports, queue snapshots and
//! the failed-job review) and `tokens` (`tokens.refresh`).

pub mod backup;
pub mod disk;
pub mod logs;
pub mod ping;
pub mod reports;
pub mod tokens;
