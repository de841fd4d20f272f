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
if [[ "$UPKEEP_CONFIG" == deploy/demo.toml ]]; then
    # The demo backs up its own database at once, so a newcomer sees a real backup, its
    # verification and its catalog row (`upkeepctl backups list`) without waiting for the cron.
    echo "run: enqueue backup.run now and a restore test in 2 minutes" >&2
    target/release/upkeepctl enqueue backup.run
    target/release/upkeepctl enqueue backup.verify --args '{"mode": "restore"}' --delay 2m
fi
if [[ "$UPKEEP_CONFIG" == deploy/demo.toml ]]; then
    # The demo's log rotation and error scan work on the demo's own log: everything upkeep
    # prints is appended (O_APPEND, as the demo's copytruncate target declares) to
    # /tmp/upkeep-demo/upkeep.log as well as shown here. tee ignores Ctrl-C so the last lines
    # of the graceful stop still reach the file.
    mkdir -p /tmp/upkeep-demo
    export UPKEEP_LOG_FORMAT="${UPKEEP_LOG_FORMAT:-json}"
    exec > >(tee -ia /tmp/upkeep-demo/upkeep.log) 2>&1
fi
echo "run: upkeepctl up (config $UPKEEP_CONFIG)" >&2
exec target/release/upkeepctl up "$@"
