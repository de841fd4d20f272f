#!/usr/bin/env bash
# The run command: provide Redis and Postgres, build the release binaries, apply the
# migrations, run everything (scheduler, workers, API and dashboard) with `upkeepctl up`;
# prints the dashboard's URL and a token to sign in with.
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

echo "run: cargo build --release -p upkeepctl -p upkeep-workers -p upkeep-scheduler -p upkeep-api" >&2
cargo build --release -p upkeepctl -p upkeep-workers -p upkeep-scheduler -p upkeep-api

# The dashboard signs in with an API token: UPKEEP_API_TOKEN, or one generated once into
# .dev/api-token (kept across runs, readable by this user only).
token_note="the token in UPKEEP_API_TOKEN"
if [[ -z "${UPKEEP_API_TOKEN:-}" ]]; then
    mkdir -p .dev
    if [[ ! -s .dev/api-token ]]; then
        (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > .dev/api-token)
    fi
    UPKEEP_API_TOKEN="$(cat .dev/api-token)"
    export UPKEEP_API_TOKEN
    token_note="$UPKEEP_API_TOKEN   (saved in .dev/api-token)"
fi
# Exported so the server listens where the printed URL points (it overrides [api] addr).
export UPKEEP_API_ADDR="${UPKEEP_API_ADDR:-127.0.0.1:8080}"

echo "run: upkeepctl migrate" >&2
target/release/upkeepctl migrate
if [[ "$UPKEEP_CONFIG" == deploy/demo.toml ]]; then
    # The demo backs up its own database at once, so a newcomer sees a real backup, its
    # verification and its catalog row (`upkeepctl backups list`) without waiting for the cron.
    echo "run: enqueue backup.run now and a restore test in 2 minutes" >&2
    target/release/upkeepctl enqueue backup.run
    target/release/upkeepctl enqueue backup.verify --args '{"mode": "restore"}' --delay 2m
    # And the rest of the checklist once now, so today's and this week's lists fill in within
    # a minute instead of at their production hours: a rotation, an error scan, a disk check,
    # the reports.
    echo "run: enqueue the checklist's daily and weekly jobs now" >&2
    for kind in logs.rotate logs.scan_errors system.disk db.slow_queries queues.snapshot \
        db.bloat db.index_usage jobs.failed_review; do
        target/release/upkeepctl enqueue "$kind" >/dev/null
    done
fi
cat >&2 <<BANNER

  upkeep dashboard:  http://$UPKEEP_API_ADDR/
  sign in with:      $token_note

BANNER
if [[ "$UPKEEP_CONFIG" == deploy/demo.toml ]]; then
    # The demo's log rotation and error scan work on the demo's own log: everything upkeep
    # prints is appended (O_APPEND, as the demo's copytruncate target declares) to
    # /tmp/upkeep-demo/upkeep.log as well as shown here. tee ignores Ctrl-C so the last lines
    # of the graceful stop still reach the file. (After the banner: the token stays out of it.)
    mkdir -p /tmp/upkeep-demo
    export UPKEEP_LOG_FORMAT="${UPKEEP_LOG_FORMAT:-json}"
    exec > >(tee -ia /tmp/upkeep-demo/upkeep.log) 2>&1
fi

# `upkeepctl up` runs the scheduler, the workers and the API (with the dashboard) in one
# process; exec, so Ctrl-C and SIGTERM reach it directly and it stops gracefully.
echo "run: upkeepctl up (config $UPKEEP_CONFIG, API and dashboard on $UPKEEP_API_ADDR)" >&2
exec target/release/upkeepctl up "$@"
