//! The chaos suite: real worker processes against a private Redis (append-only file, fsync
//! every second) and a private Postgres, while the test kills workers, restarts Redis and
//! Postgres, partitions the workers from Redis and redeploys the fleet.
//!
//! Run it alone: `cargo build --workspace --bins && cargo nextest run -p upkeep-tests --test
//! chaos` (`.config/nextest.toml` gives each scenario the whole machine). Each scenario prints
//! one line, also appended to `target/chaos-report.txt`:
//!
//! ```text
//! chaos scenario=kill9 jobs=1000 lost=0 double_completed=0 redeliveries=41 unaccounted=0 drain=21.3s kills=8
//! ```
//!
//! `UPKEEP_CHAOS_JOBS` sets the jobs per scenario: 1000 by default (the CI profile, a few
//! minutes on two cores), 10000 for the full profile.
//!
//! The `pause` scenario freezes workers with SIGSTOP for longer than their lease and resumes
//! them, with one and with three attempts per job, and checks that Redis ends where the
//! ledger says for every job.
//!
//! Besides the scenarios: poison jobs pushed as raw bytes (`poison`), the reconciliation of
//! the ledger with Redis (`reconcile`), and Redis at its memory limit (`memory`).

mod harness;
mod memory;
mod pause;
mod poison;
mod reconcile;
mod scenarios;
