#!/usr/bin/env bash
# Fuzzes upkeep-api against its own OpenAPI document with schemathesis (PyPI):
# a bounded number of examples per operation; fails on any 5xx and on any 4xx whose body is
# not the JSON error shape {"error", "field"?} (scripts/schemathesis/upkeep_checks.py).
#
#   scripts/schemathesis.sh                 uses target/debug/upkeep-api (builds it if missing)
#   UPKEEP_SCHEMATHESIS_EXAMPLES=100 scripts/schemathesis.sh
#
# It installs schemathesis into .dev/schemathesis-venv when missing, creates a fresh
# database on the Postgres of DATABASE_URL (dropped at exit), and starts upkeep-api on a free
# 127.0.0.1 port with its own Redis key prefix and an operate token.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

if [[ -z "${DATABASE_URL:-}" || -z "${REDIS_URL:-}" ]]; then
    # shellcheck source=scripts/dev-services.sh
    source scripts/dev-services.sh
fi

version="4.32.5"
venv="$root/.dev/schemathesis-venv"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
    echo "schemathesis: installing schemathesis $version into $venv" >&2
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv --help >/dev/null 2>&1 ||
        ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        # Debian splits venv/ensurepip out of python3.
        echo "schemathesis: installing python3 and python3-venv (apt-get)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

bin="$root/target/debug/upkeep-api"
if [[ ! -x "$bin" ]]; then
    cargo build -p upkeep-api --bin upkeep-api
fi

# A fresh database beside DATABASE_URL's.
re='^(postgres(ql)?://[^/?]*)(/([^?]*))?(\?.*)?$'
[[ "$DATABASE_URL" =~ $re ]] || { echo "schemathesis: cannot parse DATABASE_URL" >&2; exit 2; }
base="${BASH_REMATCH[1]}"
query="${BASH_REMATCH[5]}"
db="upkeep_schemathesis_$$"
admin=(psql "${base}/postgres${query}" -X -q -A -t -v ON_ERROR_STOP=1)
"${admin[@]}" -c "create database \"$db\""

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
token="schemathesis-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
log="$(mktemp -t upkeep-schemathesis-api.XXXXXX.log)"
config="$(mktemp -t upkeep-schemathesis.XXXXXX.toml)"
cat >"$config" <<TOML
[database]
migrate_on_start = true

[redis]
key_prefix = "schemathesis-$$"

[api]
# High enough that the fuzzer's mutating calls are not all 429 (which would also pass).
mutating_rate_per_minute = 100000

[[schedules]]
name = "schemathesis-ping"
cron = "0 0 3 * * *"
kind = "system.ping"
TOML

pid=""
cleanup() {
    if [[ -n "$pid" ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    "${admin[@]}" -c "drop database if exists \"$db\" with (force)" >/dev/null 2>&1 || true
    rm -f "$config"
}
trap cleanup EXIT

UPKEEP_CONFIG="$config" \
    DATABASE_URL="${base}/${db}${query}" \
    UPKEEP_API_ADDR="127.0.0.1:$port" \
    UPKEEP_API_TOKEN="$token" \
    RUST_LOG="${RUST_LOG:-warn}" \
    "$bin" >"$log" 2>&1 &
pid=$!

for _ in $(seq 1 100); do
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "http://127.0.0.1:$port/api/v1/health" >/dev/null 2>&1; then
        break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "schemathesis: upkeep-api exited; its log:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.2
done

examples="${UPKEEP_SCHEMATHESIS_EXAMPLES:-30}"
echo "schemathesis: upkeep-api on 127.0.0.1:$port, $examples examples per operation" >&2
status=0
PYTHONPATH="$root/scripts/schemathesis${PYTHONPATH:+:$PYTHONPATH}" \
    SCHEMATHESIS_HOOKS=upkeep_checks \
    "$venv/bin/schemathesis" run "http://127.0.0.1:$port/api/v1/openapi.json" \
    --url "http://127.0.0.1:$port" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,json_error_shape \
    --max-examples "$examples" \
    --seed "${UPKEEP_SCHEMATHESIS_SEED:-1}" \
    --workers 1 \
    --no-color \
    --generation-database none \
    --request-timeout 15 || status=$?
if [[ "$status" != 0 ]]; then
    echo "schemathesis: failed (exit $status); upkeep-api log: $log" >&2
    tail -n 50 "$log" >&2
    exit "$status"
fi
rm -f "$log"
echo "schemathesis: passed" >&2
