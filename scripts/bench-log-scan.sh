#!/usr/bin/env bash
# Benchmark of logs.scan_errors: a real upkeep-worker-logs (release build) scans SIZE_MB of
# JSON log lines (1 % errors, a few distinct messages) through a real job, side by side with
# `grep -c` over the same files in the same run. Prints lines/s of both, their ratio, and the
# worker's peak RSS (VmHWM of the process, read after the job).
#
# Usage: scripts/bench-log-scan.sh [SIZE_MB]   (default 1024; needs SIZE_MB free in $TMPDIR)
# Provides Redis and Postgres through scripts/dev-services.sh, a fresh database and a fresh
# Redis key prefix; removes the generated files at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SIZE_MB="${1:-1024}"

# shellcheck source=scripts/dev-services.sh
source scripts/dev-services.sh >/dev/null
cargo build --release -q -p upkeep-workers --bin upkeep-worker-logs -p upkeepctl --bin upkeepctl
BIN=target/release

WORK="$(mktemp -d "${TMPDIR:-/tmp}/upkeep-bench-logs.XXXXXX")"
WORKER_PID=""
cleanup() {
    [ -n "$WORKER_PID" ] && kill "$WORKER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# 1. The files: four of SIZE_MB/4 each, lines like tracing-subscriber's JSON formatter writes.
python3 - "$WORK" "$SIZE_MB" <<'PY'
import os, sys, uuid
work, size_mb = sys.argv[1], int(sys.argv[2])
per_file = size_mb * (1 << 20) // 4
messages = ["job finished", "lease renewed", "tick enqueued", "ledger batch committed"]
for f in range(4):
    with open(os.path.join(work, f"app-{f}.log"), "w") as out:
        written, i = 0, 0
        chunk = []
        while written < per_file:
            i += 1
            if i % 100 == 0:
                line = ('{"timestamp":"2026-11-29T06:00:%02d.%06dZ","level":"ERROR","message":"order %d failed for customer %s","target":"upkeep_workers::handlers","job_id":"%s"}\n'
                        % (i % 60, i % 1000000, i, uuid.uuid4(), uuid.uuid4()))
            else:
                line = ('{"timestamp":"2026-11-29T06:00:%02d.%06dZ","level":"INFO","message":"%s","target":"upkeep_workers::runtime","job_id":"%s","attempt":%d}\n'
                        % (i % 60, i % 1000000, messages[i % 4], uuid.uuid4(), i % 5))
            chunk.append(line)
            written += len(line)
            if len(chunk) == 10000:
                out.write("".join(chunk)); chunk = []
        out.write("".join(chunk))
PY
N_LINES=$(cat "$WORK"/app-*.log | wc -l)
BYTES=$(cat "$WORK"/app-*.log | wc -c)
# Warm the page cache for both readers alike.
cat "$WORK"/app-*.log > /dev/null

# 2. grep -c over the same files.
GREP_START=$(date +%s.%N)
GREP_COUNT=$(grep -c '"level":"ERROR"' "$WORK"/app-*.log | awk -F: '{ n += $2 } END { print n }')
GREP_END=$(date +%s.%N)

# 3. The worker: one scan job over the four files.
DB_NAME="upkeep_bench_logs_$$"
psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $DB_NAME" -c "CREATE DATABASE $DB_NAME" >/dev/null
BENCH_DB_URL="${DATABASE_URL%/*}/$DB_NAME"
cat > "$WORK/upkeep.toml" <<TOML
[logs]
scan_budget = "64GiB"
[[logs.sources]]
name = "bench"
path = "$WORK/app-*.log"
format = "json"
TOML
export DATABASE_URL="$BENCH_DB_URL" UPKEEP_CONFIG="$WORK/upkeep.toml" UPKEEP__REDIS__KEY_PREFIX="bench-logs-$$"
"$BIN/upkeepctl" migrate >/dev/null
RUST_LOG=warn "$BIN/upkeep-worker-logs" > "$WORK/worker.log" 2>&1 &
WORKER_PID=$!
sleep 1
JOB_ID=$("$BIN/upkeepctl" enqueue logs.scan_errors)
SCAN_START=$(date +%s.%N)
while :; do
    STATUS=$(psql "$DATABASE_URL" -Atc "SELECT status FROM job_runs WHERE job_id = '$JOB_ID' AND status <> 'running' LIMIT 1")
    [ -n "$STATUS" ] && break
    sleep 0.05
done
SCAN_END=$(date +%s.%N)
RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$WORKER_PID/status")
LINES_READ=$(psql "$DATABASE_URL" -Atc "SELECT outcome->'metrics'->>'lines_read' FROM job_runs WHERE job_id = '$JOB_ID' AND status = 'succeeded'")
ERRORS=$(psql "$DATABASE_URL" -Atc "SELECT outcome->'metrics'->>'errors' FROM job_runs WHERE job_id = '$JOB_ID' AND status = 'succeeded'")
kill "$WORKER_PID"; wait "$WORKER_PID" 2>/dev/null || true; WORKER_PID=""
psql "${BENCH_DB_URL%/*}/postgres" -qc "DROP DATABASE IF EXISTS $DB_NAME" >/dev/null 2>&1 || true

python3 - "$N_LINES" "$BYTES" "$GREP_START" "$GREP_END" "$GREP_COUNT" "$SCAN_START" "$SCAN_END" "$LINES_READ" "$ERRORS" "$RSS_KB" "$STATUS" <<'PY'
import sys
n, size, gs, ge, gc, ss, se, lines, errors, rss, status = sys.argv[1:]
n, size = int(n), int(size)
g, s = float(ge) - float(gs), float(se) - float(ss)
print(f"log scan benchmark: {size / 2**20:.0f} MiB, {n} JSON lines, 4 files")
print(f"  grep -c          {g:7.2f} s  {n / g:12,.0f} lines/s  count {gc}")
print(f"  logs.scan_errors {s:7.2f} s  {n / s:12,.0f} lines/s  lines {lines}, errors {errors}, status {status}")
print(f"  ratio (scan/grep speed) {g / s:.2f}x   worker peak RSS {int(rss) / 1024:.1f} MiB")
PY
