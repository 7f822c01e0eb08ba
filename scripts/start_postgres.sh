#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster on 127.0.0.1 (a free port, data in a temp dir) for tests and benches.
# Prints ONE line on stdout, the SQLAlchemy URL:  export KD_TEST_POSTGRES_URL=$(scripts/start_postgres.sh)
# Everything else goes to stderr, including the command that stops the cluster and removes its files.
# Needs Debian's postgresql (apt-get install postgresql); run as root it runs the server as user `postgres`.
set -euo pipefail

PG_BIN=${PG_BIN:-}
if [[ -z "$PG_BIN" ]]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [[ -z "$PG_BIN" || ! -x "$PG_BIN/initdb" ]]; then
    echo "error: PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BIN)" >&2
    exit 1
fi
DB_NAME=${KD_PG_DBNAME:-kdstudio_test}
PORT=${KD_PG_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
WORK=${KD_PG_WORKDIR:-$(mktemp -d "${TMPDIR:-/tmp}/kd-postgres.XXXXXX")}
mkdir -p "$WORK"
chmod 755 "$WORK"

# initdb refuses to run as root: use the `postgres` account (Debian creates it) when we are root.
if [[ $(id -u) -eq 0 ]]; then
    chown postgres "$WORK"
    as_server_user() { su postgres -s /bin/bash -c "$*"; }
else
    as_server_user() { bash -c "$*"; }
fi

as_server_user "'$PG_BIN/initdb' -D '$WORK/data' -U postgres -A trust --no-sync -E UTF8 >'$WORK/initdb.log' 2>&1" \
    || { cat "$WORK/initdb.log" >&2; exit 1; }
# fsync off: a test cluster trades durability for speed. Socket dir in WORK so nothing needs /var/run.
as_server_user "'$PG_BIN/pg_ctl' -D '$WORK/data' -l '$WORK/server.log' -w -t 60 \
    -o \"-c listen_addresses=127.0.0.1 -p $PORT -k '$WORK' -c fsync=off -c synchronous_commit=off -c max_connections=200\" \
    start >/dev/null" || { cat "$WORK/server.log" >&2; exit 1; }
as_server_user "'$PG_BIN/createdb' -h 127.0.0.1 -p $PORT -U postgres '$DB_NAME'"

echo "PostgreSQL running on 127.0.0.1:$PORT (data in $WORK). Stop it with:" >&2
if [[ $(id -u) -eq 0 ]]; then
    echo "  su postgres -s /bin/bash -c \"'$PG_BIN/pg_ctl' -D '$WORK/data' -m fast stop\" && rm -rf '$WORK'" >&2
else
    echo "  '$PG_BIN/pg_ctl' -D '$WORK/data' -m fast stop && rm -rf '$WORK'" >&2
fi
echo "postgresql+psycopg2://postgres@127.0.0.1:$PORT/$DB_NAME"
