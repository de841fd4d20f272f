#!/usr/bin/env bash
# API benchmark (issue #15): latency of the operator's read routes at ledger scale, with `oha`
# (a Rust HTTP load generator, installed with `cargo install oha --locked` when missing).
#
#   scripts/bench-api.sh [DURATION]          default 20s per route
#
# 1. A scratch database upkeep_bench_api gets 1,000,000 `job_runs` rows (UUIDv7 job ids over the
#    last 60 days, kinds from the catalog, ~5% failed, one finding per 10 runs), and the queue
#    `reports` under a private key prefix gets 100,000 waiting jobs. Measured:
#    GET /api/v1/queues/stats at 50 concurrent clients (target p99 <= 10 ms).
# 2. The ledger grows to 5,000,000 rows. Measured: GET /api/v1/tasks?period=daily and
#    GET /api/v1/runs?limit=50 at 50 concurrent clients (target p99 <= 20 ms). When the runs
#    route is not served by this build (404), the keyset query it uses is timed with
#    EXPLAIN ANALYZE instead, and the script says so.
# Every run starts from an empty scratch database; its Redis keys are deleted at the end.
# BIN_DIR selects the binaries (default target/release if built, else target/debug).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/dev-services.sh
source scripts/dev-services.sh >/dev/null

DURATION="${1:-20s}"
CONCURRENCY=50
if [[ -z "${BIN_DIR:-}" ]]; then
    BIN_DIR=target/debug
    [[ -x target/release/upkeep-api ]] && BIN_DIR=target/release
fi
DB=upkeep_bench_api
base="${DATABASE_URL%/*}"
BENCH_URL="$base/$DB"
PREFIX="benchapi$$"
PORT="${BENCH_API_PORT:-18089}"
TOKEN="bench-token-$$"
OUT="${BENCH_OUT:-/var/tmp/upkeep-bench-api}"
mkdir -p "$OUT"

command -v oha >/dev/null || {
    echo "bench-api: installing oha (cargo install oha --locked)" >&2
    cargo install oha --locked
}

export UPKEEP__DATABASE__URL="$BENCH_URL" DATABASE_URL="$BENCH_URL"
export UPKEEP__REDIS__KEY_PREFIX="$PREFIX" UPKEEP_API_TOKEN="$TOKEN"
export UPKEEP__API__ADDR="127.0.0.1:$PORT" UPKEEP__TELEMETRY__FILTER=warn

psql -q "${base}/postgres" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
"$BIN_DIR/upkeepctl" migrate

# Seeds job_runs rows $1..$2: job ids are v7 (the minting millisecond, then pseudo-random bits),
# minted over the last 60 days in id order, so every month's partition gets its share.
seed_runs() {
    local from=$1 to=$2 total=$3
    psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" <<SQL
DO \$\$
DECLARE m date;
BEGIN
  FOR m IN SELECT generate_series(date_trunc('month', now() - interval '61 days'),
                                  date_trunc('month', now()), interval '1 month')::date LOOP
    IF to_regclass('job_runs_p' || to_char(m, 'YYYYMM')) IS NULL THEN
      EXECUTE format('CREATE TABLE %I PARTITION OF job_runs FOR VALUES FROM (%L) TO (%L)',
        'job_runs_p' || to_char(m, 'YYYYMM'), upkeep_uuid_floor(m::timestamp AT TIME ZONE 'UTC'),
        upkeep_uuid_floor((m + interval '1 month') AT TIME ZONE 'UTC'));
      EXECUTE format('CREATE TABLE %I PARTITION OF findings FOR VALUES FROM (%L) TO (%L)',
        'findings_p' || to_char(m, 'YYYYMM'), upkeep_uuid_floor(m::timestamp AT TIME ZONE 'UTC'),
        upkeep_uuid_floor((m + interval '1 month') AT TIME ZONE 'UTC'));
    END IF;
  END LOOP;
END \$\$;
WITH g AS (
  SELECT i, now() - interval '60 days' + (interval '60 days') * (i::float8 / $total) AS at,
         md5(i::text) AS h,
         (ARRAY['system.ping','system.disk','backup.run','logs.scan_errors','db.slow_queries',
                'queues.snapshot','tokens.refresh','logs.rotate'])[1 + i % 8] AS kind
  FROM generate_series($from, $to) AS i
), runs AS (
  INSERT INTO job_runs (job_id, attempt, kind, queue, status, enqueued_at, started_at,
                        finished_at, duration_ms, worker, args, error, next_state)
  SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7'
          || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid,
         1, kind, 'reports', CASE WHEN i % 20 = 0 THEN 'failed' ELSE 'succeeded' END,
         at, at, at + interval '150 ms', 150, 'bench', '{}'::jsonb,
         CASE WHEN i % 20 = 0 THEN 'bench failure' END,
         CASE WHEN i % 20 = 0 THEN 'dead' ELSE 'done' END
  FROM g
  RETURNING job_id, kind, finished_at
)
INSERT INTO findings (job_id, attempt, ordinal, kind, code, severity, message, subject, created_at)
SELECT job_id, 1, 1, kind, 'bench.code' || (abs(hashtext(job_id::text)) % 7),
       (ARRAY['ok','warn','critical'])[1 + abs(hashtext(job_id::text)) % 3], 'm',
       's' || (abs(hashtext(job_id::text)) % 5), finished_at
FROM runs WHERE abs(hashtext(job_id::text)) % 10 = 0;
SQL
}

# Runs oha against $1 and prints one summary line; the full JSON goes to $OUT.
measure() {
    local name=$1 path=$2
    local json="$OUT/$name.json"
    oha --no-tui --output-format json -z "$DURATION" -c "$CONCURRENCY" \
        -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT$path" >"$json"
    python3 - "$name" "$path" "$json" <<'PY'
import json, sys
name, path, f = sys.argv[1:4]
d = json.load(open(f))
p = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
s = d["summary"]
print(f"{name:<14} {path:<32} rps={s['requestsPerSec']:.0f} p50={p['p50']*1000:.2f}ms "
      f"p99={p['p99']*1000:.2f}ms p99.9={p['p99.9']*1000:.2f}ms codes={codes}")
PY
}

API_PID=""
cleanup() {
    [[ -n "$API_PID" ]] && kill "$API_PID" 2>/dev/null || true
    redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX:*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" DEL >/dev/null || true
}
trap cleanup EXIT

echo "bench-api: seeding 1,000,000 job_runs rows" >&2
t0=$SECONDS
for chunk in 0 1 2 3 4; do
    seed_runs $((chunk * 200000 + 1)) $(((chunk + 1) * 200000)) 5000000
done
psql -q "$BENCH_URL" -c "VACUUM ANALYZE job_runs" -c "VACUUM ANALYZE findings"
echo "bench-api: seeded in $((SECONDS - t0)) s" >&2
echo "bench-api: enqueueing 100,000 jobs on queue reports" >&2
"$BIN_DIR/upkeepctl" enqueue system.ping --queue reports --count 100000 >/dev/null

"$BIN_DIR/upkeep-api" >"$OUT/api.log" 2>&1 &
API_PID=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/api/v1/health" >/dev/null 2>&1 && break
    sleep 0.2
done
echo "== $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), binaries $BIN_DIR"
"$BIN_DIR/upkeepctl" stats
echo "-- job_runs: 1,000,000 rows, 100,000 jobs waiting"
measure stats /api/v1/queues/stats

echo "bench-api: growing job_runs to 5,000,000 rows" >&2
for chunk in $(seq 5 24); do
    seed_runs $((chunk * 200000 + 1)) $(((chunk + 1) * 200000)) 5000000
done
psql -q "$BENCH_URL" -c "VACUUM ANALYZE job_runs" -c "VACUUM ANALYZE findings"
echo "-- job_runs: $(psql -tAq "$BENCH_URL" -c 'SELECT count(*) FROM job_runs') rows"
measure tasks "/api/v1/tasks?period=daily"
measure stats-5m /api/v1/queues/stats
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$PORT/api/v1/runs?limit=50")
if [[ "$code" == 200 ]]; then
    measure runs "/api/v1/runs?limit=50"
    measure runs-kind "/api/v1/runs?limit=50&kind=backup.run"
    measure runs-failed "/api/v1/runs?limit=50&status=failed"
else
    echo "runs: GET /api/v1/runs answers $code in this build; timing its keyset SQL instead"
    for filter in "" "WHERE kind = 'backup.run'" "WHERE status = 'failed'" \
        "WHERE id < (SELECT max(id) - 2000000 FROM job_runs) AND kind = 'system.disk'"; do
        ms=$(psql -tAq "$BENCH_URL" -c "EXPLAIN (ANALYZE, FORMAT JSON)
            SELECT id, job_id, attempt, kind, queue, status, schedule, tick_at, enqueued_at,
                   started_at, finished_at, duration_ms, worker, args, outcome, error,
                   next_state, recorded_at
            FROM job_runs $filter ORDER BY id DESC LIMIT 50" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Execution Time"])')
        echo "runs-sql      ${filter:-(no filter)}: ${ms} ms"
    done
fi
echo "bench-api: JSON reports in $OUT" >&2
