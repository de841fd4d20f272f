#!/usr/bin/env bash
# The run command: provide Redis and Postgres, build the release binaries, apply the
# migrations and run everything in one process with `upkeepctl up`.
#
#   scripts/run.sh                                  uses deploy/demo.toml
#   UPKEEP_CONFIG=/etc/upkeep/upkeep.toml scripts/run.sh
#
# Extra arguments go to `upkeepctl up`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/dev-services.sh
source scripts/dev-services.sh

export UPKEEP_CONFIG="${UPKEEP_CONFIG:-deploy/demo.toml}"
if [[ ! -f "$UPKEEP_CONFIG" ]]; then
    echo "run: config file $UPKEEP_CONFIG not found (set UPKEEP_CONFIG)" >&2
    exit 1
fi

echo "run: cargo build --release -p upkeepctl -p upkeep-workers -p upkeep-scheduler" >&2
cargo build --release -p upkeepctl -p upkeep-workers -p upkeep-scheduler

echo "run: upkeepctl migrate" >&2
target/release/upkeepctl migrate
echo "run: upkeepctl up (config $UPKEEP_CONFIG)" >&2
exec target/release/upkeepctl up "$@"
