#!/usr/bin/env bash
# One benchmark window (issue #19): BullMQ before, upkeep with the ledger and the daemons'
# default logging (3 runs), upkeep without the ledger (3 runs), BullMQ after, then live-mode
# latency in rounds (LIVE_ROUNDS, default 3) of BullMQ, upkeep with and without the ledger, and
# a bare Postgres commit of one ledger row (pgbench, when installed: the floor of any durable
# ledger's latency on this machine), then alternating BullMQ/upkeep pairs (PAIRS, default 8)
# and the median of their ratios; `uptime` before and after. Each upkeep run's line ends with
# `fetch_wait=N%`, how much of the run its worker waited on a fetch (when the run logged).
#
# usage: scripts/bench-window.sh [N=20000] [C=16]
#
# Needs: a release build (`cargo build --release -p upkeepctl`, or UPKEEPCTL=path), the peers
# harness with its node_modules (PEERS_DIR, default ../shared/bench/peers; run its run.sh once
# to install them), and a Postgres server at DATABASE_URL's host on which a scratch database
# `upkeep_bench` is (re)created. Redis: a private redis-server on 127.0.0.1:$BENCH_REDIS_PORT
# (default 6392) started here with the peers' flags (no persistence), stopped at the end by pid.
# upkeep's logs (JSON, stderr) go to $OUT/upkeep-*.log, as a daemon's would go to its journal.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
C=${2:-16}
PORT=${BENCH_REDIS_PORT:-6392}
PEERS_DIR=${PEERS_DIR:-../shared/bench/peers}
UPKEEPCTL=${UPKEEPCTL:-target/release/upkeepctl}
OUT=${OUT:-$(mktemp -d /tmp/upkeep-bench-window.XXXXXX)}
mkdir -p "$OUT"

[ -x "$UPKEEPCTL" ] || { echo "no $UPKEEPCTL: cargo build --release -p upkeepctl" >&2; exit 1; }
[ -f "$PEERS_DIR/node_modules/bullmq/package.json" ] ||
  { echo "no BullMQ in $PEERS_DIR/node_modules: run $PEERS_DIR/run.sh once" >&2; exit 1; }
if redis-cli -p "$PORT" ping >/dev/null 2>&1; then
  echo "port $PORT is taken; set BENCH_REDIS_PORT" >&2
  exit 1
fi
PIDFILE=$OUT/redis.pid
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize yes --pidfile "$PIDFILE" --logfile "$OUT/redis.log"
stop_redis() { [ -f "$PIDFILE" ] && kill "$(cat "$PIDFILE")" 2>/dev/null || true; }
trap stop_redis EXIT
for _ in $(seq 1 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

DB_BASE=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/upkeep}
DB_BASE=${DB_BASE%/*}
psql "$DB_BASE/postgres" -q -c 'DROP DATABASE IF EXISTS upkeep_bench' -c 'CREATE DATABASE upkeep_bench'
export DATABASE_URL=$DB_BASE/upkeep_bench REDIS_URL=redis://127.0.0.1:$PORT/
unset RUST_LOG UPKEEP_LOG_FORMAT
"$UPKEEPCTL" migrate >/dev/null

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
field() { grep -o "$1=[0-9.]*" | cut -d= -f2; }

bullmq() {
  local label=$1 rates=()
  for run in 1 2 3; do
    redis-cli -p "$PORT" flushall >/dev/null
    line=$(cd "$PEERS_DIR" && node drivers/bullmq_driver.mjs "$N" "$C" remove "$PORT")
    echo "bullmq $label run $run: $line" >>"$OUT/bullmq.jsonl"
    rates+=("$(echo "$line" | grep -o '"process_per_s":[0-9.]*' | cut -d: -f2)")
  done
  printf 'BullMQ removeOnComplete c=%s (%s): runs %s, median %s jobs/s\n' "$C" "$label" \
    "$(printf '%.0f ' "${rates[@]}")" "$(printf '%s\n' "${rates[@]}" | median | xargs printf '%.0f')"
}

# The share of the run the worker had nothing to hand out while a fetch was on its way: the
# `fetch_wait_s` over the `interval_s` of the last `queue summary` line of log $1 (none when
# the run logged nothing).
fetch_wait_share() {
  grep '"message":"queue summary"' "$1" 2>/dev/null | tail -n 1 |
    grep -o '"\(fetch_wait_s\|interval_s\)":[0-9.e-]*' | cut -d: -f2 | paste -sd' ' |
    awk 'NF == 2 && $1 > 0 { printf " fetch_wait=%.0f%%", 100 * $2 / $1 }'
}

upkeep() {
  local label=$1 rates=()
  shift
  for run in 1 2 3; do
    redis-cli -p "$PORT" flushall >/dev/null
    line=$("$UPKEEPCTL" bench --jobs "$N" --concurrency "$C" "$@" 2>"$OUT/upkeep-run.log")
    cat "$OUT/upkeep-run.log" >>"$OUT/upkeep-$label.log"
    echo "$line$(fetch_wait_share "$OUT/upkeep-run.log")"
    rates+=("$(echo "$line" | field process_per_s)")
  done
  printf 'upkeep %s: median %s jobs/s\n' "$label" "$(printf '%s\n' "${rates[@]}" | median)"
}

echo "window start $(date -u +%FT%TZ); $(uptime)"
bullmq before
upkeep ledger-default-logging
upkeep no-ledger-default-logging --no-ledger
upkeep ledger-no-logs --no-logs
upkeep ledger-debug-logging --log-filter debug
bullmq after
# Live mode, LIVE_ROUNDS (default 3) rounds of: BullMQ, upkeep with the ledger, upkeep without,
# and the floor of any durable ledger, one Postgres commit of one job_runs row per job sent
# alone (pgbench, the same row shape and rate, its own round trip only; skipped without
# pgbench). 500 jobs at 100/s each; medians of the rounds' p50 and p99.
live_floor() {
  command -v pgbench >/dev/null || return 0
  cat >"$OUT/floor.sql" <<'SQL'
INSERT INTO job_runs (job_id, attempt, kind, queue, status, enqueued_at, started_at, finished_at,
  duration_ms, worker, args, outcome, next_state)
VALUES ((lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
         || substr(md5(random()::text), 1, 20))::uuid, 1, 'system.ping', 'bench', 'succeeded',
        now(), now(), now(), 0, 'pgbench-floor', '{}',
        '{"metrics": {"attempt": 1}, "summary": "pong", "findings": []}', 'done');
SQL
  (cd "$OUT" && rm -f pgbench_log.* &&
    pgbench -n -M prepared -f floor.sql -R 100 -t 500 -l "$DATABASE_URL" >/dev/null 2>&1 &&
    awk '{ print ($3 - $7) / 1000 }' pgbench_log.* | sort -n |
    awk '{ v[NR] = $1 } END { printf "peer=postgres-commit-floor n=%d p50_ms=%.2f p99_ms=%.2f\n",
      NR, v[int((NR + 1) / 2)], v[int(NR * 0.99 + 0.5)] }') ||
    echo "pgbench failed: no floor this round" >&2
  psql -q "$DATABASE_URL" -c "DELETE FROM job_runs WHERE worker = 'pgbench-floor'" || true
}
for round in $(seq 1 "${LIVE_ROUNDS:-3}"); do
  redis-cli -p "$PORT" flushall >/dev/null
  (cd "$PEERS_DIR" && node drivers/bullmq_driver.mjs 500 "$C" live-remove "$PORT" 60 100) |
    grep -o '"p50_ms":[0-9.]*,"p99_ms":[0-9.]*' | tr -d '"' | tr ':,' '= ' |
    awk -F'[= ]' '{ printf "peer=bullmq live n=500 rate=100/s p50_ms=%.2f p99_ms=%.2f\n", $2, $4 }'
  for args in "" "--no-ledger"; do
    redis-cli -p "$PORT" flushall >/dev/null
    # shellcheck disable=SC2086 # Deliberately split: no argument or one.
    "$UPKEEPCTL" bench --live 500 --live-rate 100 --concurrency "$C" $args 2>>"$OUT/upkeep-live.log"
  done
  live_floor
done | tee "$OUT/live.txt"
for who in 'peer=bullmq live' 'upkeep live ledger=postgres' 'upkeep live ledger=off' \
  'peer=postgres-commit-floor'; do
  grep -F "${who#upkeep }" "$OUT/live.txt" >"$OUT/live-sel.txt" || true
  [ -s "$OUT/live-sel.txt" ] || continue
  printf '%s: median p50 %s ms, median p99 %s ms over %s rounds\n' "$who" \
    "$(field p50_ms <"$OUT/live-sel.txt" | median)" "$(field p99_ms <"$OUT/live-sel.txt" | median)" \
    "$(wc -l <"$OUT/live-sel.txt")"
done
# This VM's speed drifts within a window (BullMQ's before and after medians can differ by a
# fifth), so the ratio is also taken pair by pair: BullMQ and upkeep (ledger on, default
# logging) alternate, and the median of the pairs' ratios is printed.
PAIRS=${PAIRS:-8}
ratios=()
for pair in $(seq 1 "$PAIRS"); do
  redis-cli -p "$PORT" flushall >/dev/null
  b=$(cd "$PEERS_DIR" && node drivers/bullmq_driver.mjs "$N" "$C" remove "$PORT" |
    grep -o '"process_per_s":[0-9.]*' | cut -d: -f2)
  redis-cli -p "$PORT" flushall >/dev/null
  u=$("$UPKEEPCTL" bench --jobs "$N" --concurrency "$C" 2>>"$OUT/upkeep-pairs.log" | field process_per_s)
  r=$(awk -v u="$u" -v b="$b" 'BEGIN { printf "%.2f", u / b }')
  echo "pair $pair: BullMQ $(printf '%.0f' "$b"), upkeep ledger-default-logging $(printf '%.0f' "$u"): ${r}x"
  ratios+=("$r")
done
echo "pairs: median ratio $(printf '%s\n' "${ratios[@]}" | median)x over $PAIRS pairs"
echo "window end $(date -u +%FT%TZ); $(uptime)"
echo "raw output and logs in $OUT"
