#!/usr/bin/env bash
# Backup benchmark: a bare `pg_dump -Fc` against upkeep's `backup.run` (dump streamed with its
# SHA-256, fsync, read-back through pg_restore -f /dev/null, globals, manifest, catalog) on the
# same database, in one run, and the backup worker's peak RSS.
#
#   scripts/bench-backup.sh [SIZE_MIB]      default 1024 (about 1 GiB of table data)
#
# The database upkeep_bench_backup_<SIZE> is built once and kept for later runs.
# BIN_DIR selects the binaries (default target/release if built, else target/debug).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/dev-services.sh
source scripts/dev-services.sh >/dev/null

SIZE_MIB="${1:-1024}"
if [[ -z "${BIN_DIR:-}" ]]; then
    BIN_DIR=target/debug
    [[ -x target/release/upkeep-worker-backup ]] && BIN_DIR=target/release
fi
SOURCE_DB="upkeep_bench_backup_${SIZE_MIB}"
LEDGER_DB="upkeep_bench_backup_ledger"
base="${DATABASE_URL%/*}"
SOURCE_URL="$base/$SOURCE_DB"
LEDGER_URL="$base/$LEDGER_DB"
WORK="/var/tmp/upkeep-bench-backup"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
PG_BIN="${PG_BIN:-$(dirname "$(command -v pg_dump)")}"

psql -q "$DATABASE_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = '$SOURCE_DB'" | grep -q 1 || {
    echo "bench-backup: building $SOURCE_DB (~${SIZE_MIB} MiB), once" >&2
    psql -q "$DATABASE_URL" -c "CREATE DATABASE $SOURCE_DB"
    # Rows of ~120 bytes: an id, two md5 strings (hex, compresses about 2:1 like real text), a
    # timestamp and a number.
    rows=$(( SIZE_MIB * 1024 * 1024 / 150 ))
    psql -q "$SOURCE_URL" -c "CREATE TABLE events (id bigint PRIMARY KEY, a text, b text, at timestamptz, n numeric)" \
        -c "INSERT INTO events SELECT g, md5(g::text), md5((g * 7)::text), now() - g * interval '1 second', g * 1.5 FROM generate_series(1, $rows) g" \
        -c "CREATE TABLE small AS SELECT g AS id, repeat('s', 50) AS s FROM generate_series(1, 10000) g" \
        -c "VACUUM ANALYZE"
}
psql -q "$DATABASE_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = '$LEDGER_DB'" | grep -q 1 ||
    psql -q "$DATABASE_URL" -c "CREATE DATABASE $LEDGER_DB"
size=$(psql "$SOURCE_URL" -tAc "SELECT pg_size_pretty(pg_database_size(current_database()))")

rm -rf "$WORK" && mkdir -p "$WORK/backups"
cat >"$WORK/upkeep.toml" <<TOML
[backups]
directory = "$WORK/backups"
[[backups.databases]]
name = "bench"
url_env = "BENCH_SOURCE_URL"
TOML
export UPKEEP_CONFIG="$WORK/upkeep.toml" DATABASE_URL="$LEDGER_URL" BENCH_SOURCE_URL="$SOURCE_URL"
export UPKEEP__REDIS__KEY_PREFIX="upkeep-bench-backup-$$" UPKEEP_LOG_FORMAT=json
"$BIN_DIR/upkeepctl" migrate >/dev/null

bare_dump() {
    local start
    sync
    start=$(date +%s.%N)
    "$PG_BIN/pg_dump" -Fc -f "$WORK/bare.dump" "$SOURCE_URL"
    sync -f "$WORK/bare.dump"
    echo "$(date +%s.%N) - $start" | bc
}
# A warm-up dump first, so neither measured run pays for a cold page cache; then bare, upkeep,
# bare again, and the ratio against the mean of the two bare runs.
"$PG_BIN/pg_dump" -Fc "$SOURCE_URL" >/dev/null
bare1=$(bare_dump)
bare_bytes=$(stat -c %s "$WORK/bare.dump")
rm -f "$WORK/bare.dump"

"$BIN_DIR/upkeep-worker-backup" >"$WORK/worker.log" 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q '"worker starting"' "$WORK/worker.log" && break; sleep 0.2; done
job=$("$BIN_DIR/upkeepctl" enqueue backup.run --args '{"database": "bench"}')
status=""
while [[ -z "$status" || "$status" == running ]]; do
    sleep 0.5
    status=$(psql "$LEDGER_URL" -tAc "SELECT status FROM job_runs WHERE job_id = '$job' ORDER BY attempt DESC LIMIT 1")
done
upkeep=$(psql "$LEDGER_URL" -tAc "SELECT extract(epoch FROM finished_at - started_at) FROM job_runs WHERE job_id = '$job' ORDER BY attempt DESC LIMIT 1")
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$worker/status")
kill "$worker"; wait "$worker" 2>/dev/null || true
upkeep_bytes=$(psql "$LEDGER_URL" -tAc "SELECT size_bytes FROM backups ORDER BY id DESC LIMIT 1")
bare2=$(bare_dump)
rm -f "$WORK/bare.dump"
bare=$(echo "scale=3; ($bare1 + $bare2) / 2" | bc)
ratio=$(echo "scale=2; $upkeep / $bare" | bc)
echo "bench-backup: database $SOURCE_DB ($size), binaries $BIN_DIR, pg_dump $("$PG_BIN/pg_dump" --version | awk '{print $3}')"
echo "bench-backup: bare pg_dump -Fc + fsync  ${bare1}s before, ${bare2}s after, mean ${bare}s  (${bare_bytes} bytes)"
echo "bench-backup: upkeep backup.run ($status) ${upkeep}s  (${upkeep_bytes} bytes; dump + sha256 + fsync + pg_restore read-back + globals + manifest + catalog)"
echo "bench-backup: ratio ${ratio}x (target <= 1.3x), worker peak RSS $((rss_kib / 1024)) MiB (target <= 50 MB)"
