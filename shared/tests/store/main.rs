//! Integration tests of `upkeep_shared::store` against a real Postgres.
//!
//! Each test gets a fresh database with every migration applied, from
//! `#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]`, which reads `DATABASE_URL`
//! (`scripts/test.sh` sets it up; by hand:
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/upkeep cargo test -p upkeep-shared --test store`).
//! One test binary for the whole store, per STYLE.md §10.

mod findings;
mod health;
mod helpers;
mod partitions;
mod pool;
mod runs;
mod schedules;
mod tasks;
mod ticks;
