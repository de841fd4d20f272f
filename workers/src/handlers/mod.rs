//! Job handlers, one module per job family (`ping`, `tokens`); the other maintenance kinds
//! arrive with their own issues and are refused at enqueue until then.

pub mod ping;
pub mod tokens;
