#!/usr/bin/env bash
# Make a Redis and a Postgres reachable for development and tests, and export
# REDIS_URL and DATABASE_URL.
#
# Usage (bash only):
#   source scripts/dev-services.sh        exports into the current shell
#   scripts/dev-services.sh [up]          prints `export ...` lines: eval "$(scripts/dev-services.sh)"
#   scripts/dev-services.sh status        shows what the project-local instances are doing
#   scripts/dev-services.sh stop          stops the project-local instances (data is kept)
#
# How each service is chosen:
#   1. REDIS_URL / DATABASE_URL when set and reachable; when unset, the defaults
#      redis://127.0.0.1:6379/ and postgres://postgres@127.0.0.1:5432/upkeep when reachable.
#      A set URL that is not reachable is reported and replaced by step 2.
#   2. Otherwise a project-local instance with its data under .dev/ (git-ignored):
#      Redis on 127.0.0.1:6479 (.dev/redis), Postgres on 127.0.0.1:5532 (.dev/pg, trust
#      auth, local use only). One already running from an earlier call is reused.
# For Postgres, the database named in the URL is created when missing.
#
# Always, even when reusing services: missing Debian packages (redis-server, redis-tools,
# postgresql, postgresql-client) are installed with apt-get when running as root or with
# sudo, because the system tests start private instances of their own. It also reports
# whether cargo-nextest is available (UPKEEP_NEXTEST=1 or 0); nothing is downloaded.
#
# Knobs: UPKEEP_DEV_REDIS_PORT (6479), UPKEEP_DEV_PG_PORT (5532), UPKEEP_DEV_NO_INSTALL=1
# (never run apt-get), UPKEEP_PG_BIN (directory holding initdb, pg_ctl and postgres).
#
# The script is meant to be sourced, so it never changes the caller's shell options and
# never exits: every step checks its own result and the entry point returns non-zero.

_upkeep_log() { printf 'dev-services: %s\n' "$*" >&2; }

_upkeep_fail() {
    _upkeep_log "error: $*"
    return 1
}

_upkeep_is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Runs a command as root: directly when we are root, through sudo when it exists.
_upkeep_as_root() {
    if _upkeep_is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [[ -t 0 ]]; then sudo "$@"; else sudo -n "$@"; fi
    else
        return 1
    fi
}

# Prints the directory holding initdb, pg_ctl and postgres. Debian keeps them off PATH,
# under /usr/lib/postgresql/<version>/bin; the newest version wins.
_upkeep_pg_bindir() {
    local dir
    if [[ -n "${UPKEEP_PG_BIN:-}" && -x "${UPKEEP_PG_BIN}/initdb" ]]; then
        printf '%s\n' "$UPKEEP_PG_BIN"
        return 0
    fi
    # shellcheck disable=SC2012 # Version directories are plain numbers.
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then
        printf '%s\n' "$dir"
        return 0
    fi
    dir="$(command -v initdb 2>/dev/null)" || return 1
    dir="$(dirname "$dir")"
    [[ -x "$dir/pg_ctl" && -x "$dir/postgres" ]] || return 1
    printf '%s\n' "$dir"
}

# Installs the Debian packages whose programs are missing. Returns non-zero when some
# are still missing; callers decide whether that is fatal.
_upkeep_ensure_packages() {
    local -a missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
    command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
    _upkeep_pg_bindir >/dev/null 2>&1 || missing+=(postgresql)
    [[ ${#missing[@]} -eq 0 ]] && return 0

    if [[ "${UPKEEP_DEV_NO_INSTALL:-0}" == 1 ]]; then
        _upkeep_log "missing Debian packages: ${missing[*]} (UPKEEP_DEV_NO_INSTALL=1, not installing)"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _upkeep_log "missing programs from Debian packages ${missing[*]}, and apt-get is not available: install them by hand"
        return 1
    fi
    if ! _upkeep_is_root && ! command -v sudo >/dev/null 2>&1; then
        _upkeep_log "missing Debian packages: ${missing[*]}; not root and no sudo: run 'apt-get install ${missing[*]}' as root"
        return 1
    fi
    _upkeep_log "installing Debian packages: ${missing[*]}"
    if ! _upkeep_as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update >&2; then
        _upkeep_log "apt-get update failed"
        return 1
    fi
    if ! _upkeep_as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 \
        install --no-install-recommends "${missing[@]}" >&2; then
        _upkeep_log "apt-get install ${missing[*]} failed"
        return 1
    fi
    hash -r
}

# Splits a postgres URL into _upkeep_pg_base (scheme and authority), _upkeep_pg_db and
# _upkeep_pg_query (with its leading '?').
_upkeep_pg_split() {
    local re='^(postgres(ql)?://[^/?]*)(/([^?]*))?(\?.*)?$'
    [[ "$1" =~ $re ]] || return 1
    _upkeep_pg_base="${BASH_REMATCH[1]}"
    _upkeep_pg_db="${BASH_REMATCH[4]}"
    _upkeep_pg_query="${BASH_REMATCH[5]}"
}

# Runs psql against the maintenance database of the server that URL $1 names, so a
# missing target database does not look like an unreachable server.
_upkeep_psql_admin() {
    local url="$1"
    shift
    _upkeep_pg_split "$url" || return 1
    PGCONNECT_TIMEOUT=5 psql "${_upkeep_pg_base}/postgres${_upkeep_pg_query}" -X -q -A -t -v ON_ERROR_STOP=1 "$@"
}

_upkeep_pg_reachable() {
    command -v psql >/dev/null 2>&1 || return 1
    _upkeep_psql_admin "$1" -c 'select 1' >/dev/null 2>&1
}

# Creates the database named in URL $1 when it does not exist yet.
_upkeep_pg_ensure_database() {
    local url="$1" db literal ident exists
    _upkeep_pg_split "$url" || _upkeep_fail "cannot parse DATABASE_URL '$url' (expected postgres://user@host:port/db)" || return 1
    db="${_upkeep_pg_db}"
    [[ -z "$db" || "$db" == postgres ]] && return 0
    literal="${db//\'/\'\'}"
    ident="${db//\"/\"\"}"
    exists="$(_upkeep_psql_admin "$url" -c "select 1 from pg_database where datname = '$literal'")" ||
        _upkeep_fail "cannot query pg_database on ${_upkeep_pg_base}" || return 1
    [[ "$exists" == 1 ]] && return 0
    _upkeep_log "creating database '$db' on ${_upkeep_pg_base}"
    if ! _upkeep_psql_admin "$url" -c "create database \"$ident\"" >/dev/null; then
        # Another run may have created it in the meantime.
        exists="$(_upkeep_psql_admin "$url" -c "select 1 from pg_database where datname = '$literal'")"
        [[ "$exists" == 1 ]] || _upkeep_fail "cannot create database '$db' on ${_upkeep_pg_base}" || return 1
    fi
}

_upkeep_redis_ping() {
    local url="$1" reply host port re='^rediss?://([^@/]*@)?([^:/]+)(:([0-9]+))?'
    if command -v redis-cli >/dev/null 2>&1; then
        reply="$(timeout 5 redis-cli -u "$url" ping 2>/dev/null)" || return 1
        [[ "$reply" == PONG ]]
        return
    fi
    # Without redis-cli, speak the inline protocol over bash's /dev/tcp.
    [[ "$url" =~ $re ]] || return 1
    host="${BASH_REMATCH[2]}"
    port="${BASH_REMATCH[4]:-6379}"
    # shellcheck disable=SC2016 # The inner shell expands $1 and $2.
    timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "PING\r\n" >&3 && IFS= read -r line <&3 && [[ "$line" == +PONG* ]]' \
        _ "$host" "$port" 2>/dev/null
}

_upkeep_redis_local_dir() { printf '%s/.dev/redis\n' "$_upkeep_root"; }

_upkeep_start_local_redis() {
    local port="${UPKEEP_DEV_REDIS_PORT:-6479}" dir url
    dir="$(_upkeep_redis_local_dir)"
    url="redis://127.0.0.1:${port}/"
    if _upkeep_redis_ping "$url"; then
        _upkeep_log "reusing the project-local Redis on 127.0.0.1:${port}"
        _upkeep_redis_url="$url"
        return 0
    fi
    command -v redis-server >/dev/null 2>&1 ||
        _upkeep_fail "redis-server not found: install the Debian package redis-server" || return 1
    mkdir -p "$dir" || _upkeep_fail "cannot create $dir" || return 1
    _upkeep_log "starting a project-local Redis on 127.0.0.1:${port} (data in $dir)"
    # --daemonize points the server's stdio at /dev/null, so it does not hold a CI log pipe open.
    if ! redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize yes \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
        --appendonly yes --save '' >/dev/null 2>&1; then
        _upkeep_fail "redis-server failed to start; see $dir/redis.log" || return 1
    fi
    for _ in $(seq 1 50); do
        if _upkeep_redis_ping "$url"; then
            _upkeep_redis_url="$url"
            return 0
        fi
        sleep 0.2
    done
    tail -n 20 "$dir/redis.log" >&2 2>/dev/null
    _upkeep_fail "the project-local Redis did not answer PING on 127.0.0.1:${port} within 10 s (log: $dir/redis.log)"
}

# Runs a Postgres server program as the postgres user when we are root, because
# initdb and postgres refuse to run as root. The working directory is / so the
# postgres user is not left in a directory it cannot read.
_upkeep_as_pg() {
    if _upkeep_is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# Prints the directory for the project-local Postgres: .dev/pg, unless the postgres user
# cannot reach it (a checkout under /root, say), then a directory under /var/tmp named
# after the checkout.
_upkeep_pg_local_dir() {
    local sum
    if ! _upkeep_is_root || runuser -u postgres -- test -x "$_upkeep_root/.dev" 2>/dev/null; then
        printf '%s/.dev/pg\n' "$_upkeep_root"
        return 0
    fi
    sum="$(printf '%s' "$_upkeep_root" | cksum | cut -d ' ' -f 1)"
    printf '/var/tmp/upkeep-dev-%s/pg\n' "$sum"
}

_upkeep_start_local_pg() {
    local port="${UPKEEP_DEV_PG_PORT:-5532}" dir data socket_dir bindir url
    url="postgres://postgres@127.0.0.1:${port}/upkeep"
    if _upkeep_pg_reachable "$url"; then
        _upkeep_log "reusing the project-local Postgres on 127.0.0.1:${port}"
        _upkeep_pg_ensure_database "$url" || return 1
        _upkeep_database_url="$url"
        return 0
    fi
    bindir="$(_upkeep_pg_bindir)" ||
        _upkeep_fail "initdb/pg_ctl/postgres not found: install the Debian package postgresql (or set UPKEEP_PG_BIN)" || return 1
    command -v psql >/dev/null 2>&1 ||
        _upkeep_fail "psql not found: install the Debian package postgresql-client" || return 1
    if _upkeep_is_root; then
        id postgres >/dev/null 2>&1 ||
            _upkeep_fail "Postgres refuses to run as root and there is no 'postgres' user (the postgresql package creates it)" || return 1
        command -v runuser >/dev/null 2>&1 || _upkeep_fail "runuser not found (package util-linux)" || return 1
    fi
    mkdir -p "$_upkeep_root/.dev" || _upkeep_fail "cannot create $_upkeep_root/.dev" || return 1
    dir="$(_upkeep_pg_local_dir)"
    data="$dir/data"
    socket_dir="$dir/run"
    mkdir -p "$socket_dir" || _upkeep_fail "cannot create $socket_dir" || return 1
    if _upkeep_is_root; then
        chown postgres:postgres "$dir" "$socket_dir" || _upkeep_fail "cannot chown $dir to postgres" || return 1
    fi
    _upkeep_as_pg test -w "$dir" ||
        _upkeep_fail "the postgres user cannot write $dir: make its parent directories traversable (chmod o+x)" || return 1

    if [[ ! -s "$data/PG_VERSION" ]]; then
        _upkeep_log "initialising a project-local Postgres cluster in $data"
        if ! _upkeep_as_pg "$bindir/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-locale \
            >"$dir/initdb.log" 2>&1; then
            tail -n 20 "$dir/initdb.log" >&2
            _upkeep_fail "initdb failed (log: $dir/initdb.log)" || return 1
        fi
        # A unix socket path is limited to about 107 bytes; TCP is what we use anyway.
        if [[ ${#socket_dir} -gt 90 ]]; then socket_dir=""; fi
        {
            printf '\n# Project-local development instance (scripts/dev-services.sh).\n'
            printf "listen_addresses = '127.0.0.1'\n"
            printf "unix_socket_directories = '%s'\n" "$socket_dir"
        } | _upkeep_as_pg tee -a "$data/postgresql.conf" >/dev/null ||
            _upkeep_fail "cannot write $data/postgresql.conf" || return 1
    fi

    if _upkeep_as_pg "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        _upkeep_fail "a project-local Postgres runs from $data but does not answer on 127.0.0.1:${port}; stop it with 'scripts/dev-services.sh stop' (or check UPKEEP_DEV_PG_PORT)" || return 1
    fi
    _upkeep_log "starting the project-local Postgres on 127.0.0.1:${port} (data in $data)"
    if ! _upkeep_as_pg "$bindir/pg_ctl" -D "$data" -l "$dir/postgres.log" -o "-p $port" -w -t 60 start >/dev/null 2>&1; then
        tail -n 20 "$dir/postgres.log" >&2 2>/dev/null
        _upkeep_fail "the project-local Postgres did not start on 127.0.0.1:${port} (log: $dir/postgres.log)" || return 1
    fi
    _upkeep_pg_reachable "$url" ||
        _upkeep_fail "the project-local Postgres started but does not answer on 127.0.0.1:${port} (log: $dir/postgres.log)" || return 1
    _upkeep_pg_ensure_database "$url" || return 1
    _upkeep_database_url="$url"
}

_upkeep_set_root() {
    _upkeep_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" ||
        _upkeep_fail "cannot find the repository root from ${BASH_SOURCE[0]}"
}

# The entry point when sourced or run with `up`.
_upkeep_dev_services_up() {
    local candidate bindir
    _upkeep_set_root || return 1

    if ! _upkeep_ensure_packages; then
        _upkeep_log "warning: some packages are missing; services that are already reachable are still used, but system tests that start private instances will fail"
    fi

    candidate="${REDIS_URL:-redis://127.0.0.1:6379/}"
    if _upkeep_redis_ping "$candidate"; then
        _upkeep_log "using Redis at $candidate"
        _upkeep_redis_url="$candidate"
    else
        _upkeep_log "no Redis answers at $candidate; using a project-local one"
        _upkeep_start_local_redis || return 1
    fi

    candidate="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/upkeep}"
    if _upkeep_pg_reachable "$candidate"; then
        _upkeep_log "using Postgres at $candidate"
        _upkeep_pg_ensure_database "$candidate" || return 1
        _upkeep_database_url="$candidate"
    else
        if ! command -v psql >/dev/null 2>&1; then
            _upkeep_log "psql not found, cannot check $candidate"
        else
            _upkeep_log "no Postgres answers at $candidate; using a project-local one"
        fi
        _upkeep_start_local_pg || return 1
    fi

    export REDIS_URL="$_upkeep_redis_url"
    export DATABASE_URL="$_upkeep_database_url"
    if bindir="$(_upkeep_pg_bindir)"; then
        export UPKEEP_PG_BIN="$bindir"
    fi

    if cargo nextest --version >/dev/null 2>&1; then
        export UPKEEP_NEXTEST=1
    else
        export UPKEEP_NEXTEST=0
        _upkeep_log "cargo-nextest not found: scripts/test.sh falls back to 'cargo test' (to get it: cargo install cargo-nextest --locked)"
    fi

    local tool
    for tool in redis-server redis-cli; do
        command -v "$tool" >/dev/null 2>&1 || _upkeep_log "warning: $tool not found; system tests that start a private Redis will fail"
    done
    [[ -n "${UPKEEP_PG_BIN:-}" ]] || _upkeep_log "warning: initdb/pg_ctl/postgres not found; system tests that start a private Postgres will fail"
    _upkeep_log "REDIS_URL=$REDIS_URL DATABASE_URL=$DATABASE_URL"
}

_upkeep_dev_services_status() {
    local port="${UPKEEP_DEV_REDIS_PORT:-6479}"
    _upkeep_set_root || return 1
    if _upkeep_redis_ping "redis://127.0.0.1:${port}/"; then
        echo "redis: running on 127.0.0.1:${port} (data in $(_upkeep_redis_local_dir))"
    else
        echo "redis: not running on 127.0.0.1:${port}"
    fi
    port="${UPKEEP_DEV_PG_PORT:-5532}"
    if _upkeep_pg_reachable "postgres://postgres@127.0.0.1:${port}/postgres"; then
        echo "postgres: running on 127.0.0.1:${port} (data in $(_upkeep_pg_local_dir)/data)"
    else
        echo "postgres: not running on 127.0.0.1:${port}"
    fi
}

_upkeep_dev_services_stop() {
    local dir bindir pid port="${UPKEEP_DEV_REDIS_PORT:-6479}" status=0
    _upkeep_set_root || return 1
    dir="$(_upkeep_redis_local_dir)"
    if [[ -s "$dir/redis.pid" ]] && pid="$(cat "$dir/redis.pid")" && kill -0 "$pid" 2>/dev/null; then
        _upkeep_log "stopping the project-local Redis (pid $pid)"
        # SIGTERM makes Redis flush its append-only file and exit.
        kill -TERM "$pid" || status=1
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            _upkeep_log "the project-local Redis (pid $pid) did not stop within 10 s"
            status=1
        fi
    else
        _upkeep_log "no project-local Redis is running"
    fi

    dir="$(_upkeep_pg_local_dir)"
    if [[ -s "$dir/data/PG_VERSION" ]] && bindir="$(_upkeep_pg_bindir)" &&
        _upkeep_as_pg "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        _upkeep_log "stopping the project-local Postgres ($dir/data)"
        _upkeep_as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || status=1
    else
        _upkeep_log "no project-local Postgres is running"
    fi
    return "$status"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -uo pipefail
    case "${1:-up}" in
    up)
        _upkeep_dev_services_up || exit 1
        printf 'export REDIS_URL=%q\nexport DATABASE_URL=%q\n' "$REDIS_URL" "$DATABASE_URL"
        [[ -n "${UPKEEP_PG_BIN:-}" ]] && printf 'export UPKEEP_PG_BIN=%q\n' "$UPKEEP_PG_BIN"
        printf 'export UPKEEP_NEXTEST=%q\n' "$UPKEEP_NEXTEST"
        ;;
    status) _upkeep_dev_services_status ;;
    stop) _upkeep_dev_services_stop ;;
    *)
        echo "usage: $0 [up|status|stop]" >&2
        exit 2
        ;;
    esac
else
    # Called in an || list so the caller's `set -e` does not apply inside; every step
    # checks its own result instead.
    _upkeep_dev_services_up || return 1
fi
