#!/usr/bin/env bash
# Benchmark of the dashboard's pages with a large ledger: a fresh database gets ROWS attempts
# in job_runs (default 1,000,000, over 90 days, 1 % failed, the newest hour as dense as the
# rest), 200,000 findings and 50,000 audit entries; a real upkeep-api serves it (BIN_DIR:
# target/release when built, else the debug build, which is built if needed), and each page is fetched N times (default 20) with a signed-in
# session. Prints min / median / p95 / max of the full request time per page (curl's
# time_total: server render plus loopback transfer).
#
# Usage: scripts/bench-dashboard.sh [ROWS] [N]
# Provides Redis and Postgres through scripts/dev-services.sh; drops its database at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS="${1:-1000000}"
N="${2:-20}"

# shellcheck source=scripts/dev-services.sh
source scripts/dev-services.sh >/dev/null
if [[ -z "${BIN_DIR:-}" ]]; then
    BIN_DIR=target/debug
    [[ -x target/release/upkeep-api ]] && BIN_DIR=target/release
fi
[[ "$BIN_DIR" == target/debug ]] && cargo build -q -p upkeep-api --bin upkeep-api
BIN=$BIN_DIR
echo "bench-dashboard: $BIN/upkeep-api, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2

DB="upkeep_bench_dashboard_$$"
BASE_URL="${DATABASE_URL%/*}"
QUERY=""
if [[ "$DATABASE_URL" == *\?* ]]; then QUERY="?${DATABASE_URL#*\?}"; BASE_URL="${DATABASE_URL%%\?*}"; BASE_URL="${BASE_URL%/*}"; fi
ADMIN_URL="${BASE_URL}/postgres${QUERY}"
BENCH_URL="${BASE_URL}/${DB}${QUERY}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/upkeep-bench-dashboard.XXXXXX")"
API_PID=""
cleanup() {
    [[ -n "$API_PID" ]] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null || true
    psql "$ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

psql "$ADMIN_URL" -X -q -c "CREATE DATABASE $DB" >/dev/null
# The schema, file by file (what the embedded migrator applies; upkeepctl is not needed here).
for migration in migrations/*.sql; do
    psql "$BENCH_URL" -X -q -v ON_ERROR_STOP=1 -f "$migration" >/dev/null
done

echo "bench-dashboard: seeding $ROWS runs, 200000 findings, 50000 audit entries" >&2
start=$(date +%s)
psql "$BENCH_URL" -X -q -v ON_ERROR_STOP=1 <<SQL
INSERT INTO job_runs (job_id, attempt, kind, queue, status, enqueued_at, started_at,
                      finished_at, duration_ms, worker, args, outcome, error, next_state)
SELECT gen_random_uuid(), 1,
       (ARRAY['system.ping','system.disk','db.slow_queries','backup.run','logs.scan_errors'])[1 + i % 5],
       'reports',
       CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'succeeded' END,
       t - interval '2 seconds', t - interval '1 second', t, 1000, 'bench', '{}',
       CASE WHEN i % 100 = 0 THEN NULL
            ELSE '{"summary":"bench","metrics":{},"findings":[]}'::jsonb END,
       CASE WHEN i % 100 = 0 THEN 'bench failure ' || i END,
       CASE WHEN i % 100 = 0 THEN 'dead' ELSE 'done' END
FROM (SELECT i, now() - (interval '90 days') * (i::float8 / $ROWS) AS t
      FROM generate_series(1, $ROWS) AS i) s;
INSERT INTO findings (job_id, attempt, ordinal, kind, code, subject, severity, message, created_at)
SELECT gen_random_uuid(), 1, 0, 'system.disk',
       (ARRAY['disk.used_pct','table.dead_tuples_pct','backup.stale','logs.errors'])[1 + i % 4],
       'subject-' || (i % 50),
       (ARRAY['ok','ok','warn','critical'])[1 + (i / 4) % 4],
       'bench finding ' || i, now() - (interval '90 days') * (i::float8 / 200000)
FROM generate_series(1, 200000) AS i;
INSERT INTO audit_log (created_at, actor, action, target, client_addr, result)
SELECT now() - (interval '90 days') * (i::float8 / 50000), 'bench', 'tasks.ack',
       'daily.bench.' || i, '127.0.0.1', 'ok'
FROM generate_series(1, 50000) AS i;
ANALYZE;
SQL
echo "bench-dashboard: seeded in $(( $(date +%s) - start )) s" >&2

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
TOKEN="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
DATABASE_URL="$BENCH_URL" UPKEEP_API_TOKEN="$TOKEN" UPKEEP_API_ADDR="127.0.0.1:$PORT" \
    UPKEEP_CONFIG="deploy/demo.toml" RUST_LOG=warn "$BIN/upkeep-api" >"$WORK/api.log" 2>&1 &
API_PID=$!
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$PORT/api/v1/health" >/dev/null 2>&1 && break
    sleep 0.2
done

# Sign in: the login form's CSRF cookie and field, then the session cookie.
JAR="$WORK/cookies"
csrf="$(curl -fsS -c "$JAR" "http://127.0.0.1:$PORT/login" | sed -n 's/.*name="csrf" value="\([0-9a-f]*\)".*/\1/p' | head -1)"
curl -fsS -b "$JAR" -c "$JAR" -o /dev/null --data-urlencode "token=$TOKEN" --data-urlencode "csrf=$csrf" \
    "http://127.0.0.1:$PORT/login"
mid_failure="$(psql "$BENCH_URL" -X -A -t -c "SELECT id FROM job_runs WHERE status = 'failed' ORDER BY id LIMIT 1 OFFSET 5000")"
mid_audit="$(psql "$BENCH_URL" -X -A -t -c "SELECT id FROM audit_log ORDER BY id LIMIT 1 OFFSET 25000")"

printf '%-32s %8s %8s %8s %8s   (ms, %s requests each, %s runs)\n' page min median p95 max "$N" "$ROWS"
for page in "/" "/failures" "/failures?before=$mid_failure" "/audit" "/audit?before=$mid_audit"; do
    status="$(curl -s -b "$JAR" -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT$page")"
    [[ "$status" == 200 ]] || { echo "bench-dashboard: $page answered $status" >&2; cat "$WORK/api.log" >&2; exit 1; }
    for _ in $(seq "$N"); do
        curl -s -b "$JAR" -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$PORT$page"
    done | sort -n | awk -v page="$page" '{ t[NR] = $1 * 1000 } END {
        p95 = int(NR * 0.95); if (p95 < 1) p95 = 1;
        printf "%-32s %8.1f %8.1f %8.1f %8.1f\n", page, t[1], t[int((NR + 1) / 2)], t[p95], t[NR] }'
done
