//! Job handlers, one module per job family. Only `system.ping` exists so far; the maintenance
//! kinds arrive with their own issues and are refused at enqueue until then.

pub mod ping;
