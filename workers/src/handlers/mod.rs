//! Job handlers, one module per job family. Maintenance kinds without a module here arrive with
//! their own issues and are refused at enqueue until then.

pub mod backup;
pub mod ping;
