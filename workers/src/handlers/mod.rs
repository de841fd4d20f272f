//! Job handlers, one module per job family: `ping` (`system.ping`) and `reports` (the Postgres
//! health reports, queue snapshots and the failed-job review). Maintenance kinds without a
//! handler are refused at enqueue until their module lands.

pub mod ping;
pub mod reports;
