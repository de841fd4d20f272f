//! Job handlers, one module per job family. Kinds without a module here are refused at
//! enqueue (see `job::CATALOG`).

pub mod disk;
pub mod logs;
pub mod ping;
