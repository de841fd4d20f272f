//! System tests: the real binaries against real Redis and Postgres.
//!
//! Run them with `scripts/test.sh`, which provides the services and builds the binaries
//! first (see `upkeep_tests` for the helpers). One module per area of behaviour.

mod harness;
