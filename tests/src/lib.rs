//! Helpers for the system tests: start binaries, reach Redis and Postgres.
