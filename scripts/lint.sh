#!/usr/bin/env bash
# Formatting and lints for the whole workspace; scripts/test.sh runs this first.
# Needs no services, unless sqlx's query macros find no offline data (.sqlx/), then
# they read DATABASE_URL at compile time: scripts/test.sh has set it up by then.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! cargo fmt --version >/dev/null 2>&1; then
    echo "lint: cargo fmt is missing: rustup component add rustfmt" >&2
    exit 1
fi
if ! cargo clippy --version >/dev/null 2>&1; then
    echo "lint: cargo clippy is missing: rustup component add clippy" >&2
    exit 1
fi

echo "lint: cargo fmt --all --check" >&2
cargo fmt --all --check
echo "lint: cargo clippy --workspace --all-targets -- -D warnings" >&2
cargo clippy --workspace --all-targets -- -D warnings
