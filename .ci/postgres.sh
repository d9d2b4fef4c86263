#!/usr/bin/env bash
# A throw-away PostgreSQL server on 127.0.0.1 for tests/test_postgres.py; exports LOSSTUNE_TEST_PG_URL.
#
#   source .ci/postgres.sh        # start it (in this shell): LOSSTUNE_TEST_PG_URL is set
#   make test                     # tests/test_postgres.py now runs against it
#   losstune_pg_stop              # stop it and delete its data (done anyway when this shell exits)
#
#   .ci/postgres.sh make test     # or: start, run one command, stop
#
# The server comes from the distribution's packages (`apt-get install postgresql` when missing; needs root).
# It runs from a temporary directory with its own data, socket and log, on a free port, as the `postgres` user
# when started by root (initdb refuses root). Its user `losstune` has a random password and may create
# databases: each test run creates its own databases and drops them afterwards. fsync is off: test data only.

losstune_pg_bindir() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

losstune_pg_as_server_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

losstune_pg_start() {
    local bindir python port password
    if ! bindir=$(losstune_pg_bindir); then
        if [ "$(id -u)" != 0 ]; then
            echo "postgres.sh: PostgreSQL server binaries not found; install the 'postgresql' package" >&2
            return 1
        fi
        echo "postgres.sh: installing the PostgreSQL server (apt-get install postgresql)" >&2
        apt-get update -qq || return 1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null || return 1
        bindir=$(losstune_pg_bindir) || { echo "postgres.sh: no initdb after installing postgresql" >&2; return 1; }
    fi
    python=$(command -v python3 || command -v python) || { echo "postgres.sh: python3 is needed" >&2; return 1; }
    port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # characters that end a password in a naive pattern (/ : @), so that the tests prove the redaction handles them
    password=$("$python" -c 'import secrets; print(secrets.token_hex(8) + "/p:w@" + secrets.token_hex(4))')

    LOSSTUNE_PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/losstune-pg.XXXXXX") || return 1
    export LOSSTUNE_PG_DIR LOSSTUNE_PG_BINDIR="$bindir"
    chmod 755 "$LOSSTUNE_PG_DIR"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$LOSSTUNE_PG_DIR" || return 1
    fi
    losstune_pg_as_server_user "$bindir/initdb" -D "$LOSSTUNE_PG_DIR/data" -U postgres -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >"$LOSSTUNE_PG_DIR/initdb.log" 2>&1 \
        || { cat "$LOSSTUNE_PG_DIR/initdb.log" >&2; return 1; }
    losstune_pg_as_server_user "$bindir/pg_ctl" -D "$LOSSTUNE_PG_DIR/data" -l "$LOSSTUNE_PG_DIR/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $LOSSTUNE_PG_DIR -c fsync=off -c max_connections=200" \
        start >/dev/null || { cat "$LOSSTUNE_PG_DIR/server.log" >&2; return 1; }
    export LOSSTUNE_PG_PORT="$port"
    "$bindir/psql" -q -h "$LOSSTUNE_PG_DIR" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE losstune LOGIN CREATEDB PASSWORD '$password'" \
        -c "CREATE DATABASE losstune OWNER losstune" >/dev/null || return 1
    # '/' and ':' stay raw in the URL (SQLAlchemy reads them so), '@' is percent-encoded
    export LOSSTUNE_TEST_PG_URL="postgresql+psycopg2://losstune:$("$python" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe="/:"))' "$password")@127.0.0.1:$port/losstune"
    echo "postgres.sh: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" \
        "(data in $LOSSTUNE_PG_DIR); LOSSTUNE_TEST_PG_URL is set; stop it with losstune_pg_stop" >&2
}

losstune_pg_stop() {
    if [ -n "${LOSSTUNE_PG_DIR:-}" ] && [ -d "$LOSSTUNE_PG_DIR" ]; then
        losstune_pg_as_server_user "$LOSSTUNE_PG_BINDIR/pg_ctl" -D "$LOSSTUNE_PG_DIR/data" -m fast -w stop \
            >/dev/null 2>&1 || true
        rm -rf "$LOSSTUNE_PG_DIR"
    fi
    unset LOSSTUNE_PG_DIR LOSSTUNE_PG_PORT LOSSTUNE_TEST_PG_URL
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # sourced: start, and stop when the shell that sourced this exits
    losstune_pg_start && trap losstune_pg_stop EXIT
else
    # run: start, run the command given (if any), stop
    set -euo pipefail
    losstune_pg_start
    trap losstune_pg_stop EXIT
    if [ "$#" -gt 0 ]; then
        "$@"
    fi
fi
