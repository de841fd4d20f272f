#!/usr/bin/env bash
# Two builds of upkeepctl, A and B, in interleaved `upkeepctl bench` runs (A, B, A, B, ...), and
# for each the median jobs/s, CPU per job and p50/p99 latency (the figures of live mode, `-- --live
# 2000`), then the median of the pairs' B/A jobs/s ratios. This
# VM's speed drifts by up to 2x within an hour, so a change is judged only against its
# predecessor run next to it (issue #19).
#
# usage: scripts/bench-ab.sh A B [PAIRS=8] [-- bench args...]
#   e.g. cp target/release/upkeepctl /tmp/upkeepctl-before; (change, rebuild);
#        scripts/bench-ab.sh /tmp/upkeepctl-before target/release/upkeepctl 8 -- --jobs 20000
#
# Redis: a private redis-server on 127.0.0.1:$BENCH_REDIS_PORT (default 6394, no persistence),
# flushed before every run and stopped at the end. Postgres: DATABASE_URL's server (default
# from scripts/dev-services.sh), with one scratch database per build, `upkeep_ab_a` and
# `upkeep_ab_b`, (re)created and migrated by that build (their migrations may differ).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
A=$1
B=$2
shift 2
PAIRS=8
if [ $# -gt 0 ] && [ "$1" != "--" ]; then PAIRS=$1; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
BENCH_ARGS=("$@")
[ ${#BENCH_ARGS[@]} -gt 0 ] || BENCH_ARGS=(--jobs 20000 --concurrency 16)
for bin in "$A" "$B"; do
  [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 1; }
done

PORT=${BENCH_REDIS_PORT:-6394}
if redis-cli -p "$PORT" ping >/dev/null 2>&1; then
  echo "port $PORT is taken; set BENCH_REDIS_PORT" >&2
  exit 1
fi
OUT=$(mktemp -d /tmp/upkeep-bench-ab.XXXXXX)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize yes --pidfile "$OUT/redis.pid" --logfile "$OUT/redis.log"
trap '[ -f "$OUT/redis.pid" ] && kill "$(cat "$OUT/redis.pid")" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

if [ -z "${DATABASE_URL:-}" ]; then
  # shellcheck source=scripts/dev-services.sh
  source scripts/dev-services.sh >/dev/null
fi
DB_BASE=${DATABASE_URL%/*}
for side in a b; do
  psql "$DB_BASE/postgres" -q -c "DROP DATABASE IF EXISTS upkeep_ab_$side" \
    -c "CREATE DATABASE upkeep_ab_$side"
done
bin_of() { if [ "$1" = a ]; then echo "$A"; else echo "$B"; fi; }
for side in a b; do
  DATABASE_URL=$DB_BASE/upkeep_ab_$side "$(bin_of "$side")" migrate >/dev/null
done

field() { grep -o "$1=[^ ]*" | head -n 1 | cut -d= -f2; }
# Sum of the `cpu_us_per_job=worker:W,redis:R,postgres:P` parts.
cpu_total() { tr ',' '\n' | cut -d: -f2 | awk '{ s += $1 } END { printf "%.1f", s }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

run() {
  redis-cli -p "$PORT" flushall >/dev/null
  DATABASE_URL=$DB_BASE/upkeep_ab_$1 REDIS_URL=redis://127.0.0.1:$PORT/ \
    "$(bin_of "$1")" bench "${BENCH_ARGS[@]}" 2>>"$OUT/bench-$1.log"
}

: >"$OUT/a.txt"
: >"$OUT/b.txt"
: >"$OUT/ratios.txt"
for pair in $(seq 1 "$PAIRS"); do
  line_a=$(run a)
  line_b=$(run b)
  rate_a=$(echo "$line_a" | field process_per_s)
  rate_b=$(echo "$line_b" | field process_per_s)
  cpu_a=$(echo "$line_a" | field cpu_us_per_job)
  cpu_b=$(echo "$line_b" | field cpu_us_per_job)
  p99_a=$(echo "$line_a" | field p99_ms)
  p99_b=$(echo "$line_b" | field p99_ms)
  echo "$rate_a $(echo "$cpu_a" | cpu_total) $(echo "$line_a" | field p50_ms) $p99_a" >>"$OUT/a.txt"
  echo "$rate_b $(echo "$cpu_b" | cpu_total) $(echo "$line_b" | field p50_ms) $p99_b" >>"$OUT/b.txt"
  ratio=$(awk -v a="$rate_a" -v b="$rate_b" 'BEGIN { printf "%.2f", b / a }')
  echo "$ratio" >>"$OUT/ratios.txt"
  echo "pair $pair: A $rate_a jobs/s (cpu_us_per_job $cpu_a, p99 ${p99_a} ms), B $rate_b jobs/s ($cpu_b, p99 ${p99_b} ms): ${ratio}x"
done
for side in a b; do
  printf '%s: median %s jobs/s, median %s us of CPU per job, median p50 %s ms, median p99 %s ms (%s)\n' \
    "$(echo "$side" | tr ab AB)" \
    "$(cut -d' ' -f1 "$OUT/$side.txt" | median)" "$(cut -d' ' -f2 "$OUT/$side.txt" | median)" \
    "$(cut -d' ' -f3 "$OUT/$side.txt" | median)" "$(cut -d' ' -f4 "$OUT/$side.txt" | median)" \
    "$(bin_of "$side")"
done
echo "B/A: median ratio $(median <"$OUT/ratios.txt")x over $PAIRS pairs ($(tr '\n' ' ' <"$OUT/ratios.txt"))"
echo "logs in $OUT"
