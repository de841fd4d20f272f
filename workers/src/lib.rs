//! upkeep's worker runtime: apalis-core workers over our Redis backend, one per queue, with
//! every attempt recorded in the Postgres ledger before it is acknowledged.
//!
//! - [`registry`]: job kind → handler, and the dispatch service every worker runs.
//! - [`handlers`]: one module per job family.
//! - [`ledger`]: the Postgres implementation of the queue's `Ledger` seam.
//! - [`runtime`]: builds the apalis `Monitor`, runs it until shutdown, and gives back what is
//!   left when the grace period runs out.
//!
//! The binaries in `src/bin/` are thin: one per queue family, each calling [`run_daemon`].

pub mod bench;
pub mod handlers;
pub mod ledger;
pub mod registry;
pub mod runtime;

pub use registry::{HandlerContext, Registry};
pub use runtime::{WorkerRuntime, run_daemon};
