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
pub use runtime::{Pruner, Reconciler, WorkerRuntime, run_daemon};

/// Every binary that links the worker runtime (the four worker daemons, `upkeepctl` for `up`
/// and `bench`) allocates through mimalloc. A worker allocates a few dozen small blocks per
/// job (leases, tasks, ledger rows, Redis replies); under glibc's allocator malloc and free
/// took about half of a benchmark worker's CPU (`perf`, `upkeepctl bench`, issue #19), and
/// preloading mimalloc into the same binary gave about 10 % more jobs per second.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
