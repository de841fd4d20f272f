#!/usr/bin/env bash
# The test command: provide Redis and Postgres, lint, build the binaries the system
# tests start, then run the whole test suite.
#
#   scripts/test.sh                         everything
#   scripts/test.sh -E 'test(/redis/)'      extra arguments go to the test runner
#                                           (nextest filters; with plain cargo test,
#                                           cargo test's own arguments)
#   UPKEEP_SKIP_LINT=1 scripts/test.sh ...  skip fmt and clippy while iterating
#   UPKEEP_SKIP_SCHEMATHESIS=1 ...          skip the API fuzzing (scripts/schemathesis.sh)
#
# Uses cargo-nextest with .config/nextest.toml (the `ci` profile when CI is set) when it
# is installed, `cargo test` otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/dev-services.sh
source scripts/dev-services.sh

if [[ "${UPKEEP_SKIP_LINT:-0}" != 1 ]]; then
    scripts/lint.sh
fi

# tests/deploy checks the unit, PM2, compose and Docker files with their own tools.
scripts/deploy-tools.sh

# The dashboard's browser test drives Debian's chromium through chromium-driver. When they
# cannot be installed the suite still runs, and that test fails saying why (never skipped).
if ! scripts/ensure-chromium.sh; then
    echo "test: chromium/chromedriver unavailable: the dashboard browser test will fail" >&2
fi

# System tests run the real binaries from target/<profile>/ (see tests/src/lib.rs), and
# cargo does not build another package's binaries for a test target.
echo "test: cargo build --workspace --bins" >&2
cargo build --workspace --bins

status=0
if [[ "${UPKEEP_NEXTEST:-0}" == 1 ]]; then
    profile=default
    if [[ -n "${CI:-}" ]]; then profile=ci; fi
    echo "test: cargo nextest run --workspace --no-fail-fast --profile $profile $*" >&2
    cargo nextest run --workspace --no-fail-fast --profile "$profile" "$@" || status=$?
else
    echo "test: cargo test --workspace --no-fail-fast $*" >&2
    cargo test --workspace --no-fail-fast "$@" || status=$?
fi

# The API against its OpenAPI document (bounded examples per route; no 5xx, JSON 4xx).
if [[ "${UPKEEP_SKIP_SCHEMATHESIS:-0}" != 1 ]]; then
    echo "test: scripts/schemathesis.sh" >&2
    scripts/schemathesis.sh || status=$?
fi
exit "$status"
