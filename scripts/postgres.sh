#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and trials, listening on a unix socket only.
#
#   scripts/postgres.sh start [DIR]   initdb + start (once; again: the same server), create the
#                                     database "ddsem", print its SQLAlchemy URL
#   scripts/postgres.sh url [DIR]     print the URL of the running server
#   scripts/postgres.sh stop [DIR]    stop the server and remove DIR (nothing running: just remove)
#
# DIR defaults to $DDSEM_PG_DIR, else ${TMPDIR:-/tmp}/ddsem-pg-$(id -u); it holds the data, the
# log and the socket (keep it short: a socket path has a limit of ~100 characters). PostgreSQL
# refuses to run as root, so as root the server runs as the user "postgres" when it exists,
# else "nobody" (the folder is theirs). No TCP port is opened. Durability is off (fsync): this
# server is for tests, not for data you keep.
set -euo pipefail

usage() { echo "usage: $0 start|url|stop [DIR]" >&2; exit 2; }
[ $# -ge 1 ] || usage
cmd=$1
DIR=${2:-${DDSEM_PG_DIR:-${TMPDIR:-/tmp}/ddsem-pg-$(id -u)}}
DB=ddsem
SUPERUSER=ddsem

bindir=""
# pg_ctl on PATH may be a link into the version's folder, which also holds psql
for d in "$(dirname "$(readlink -f "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")")" \
  /usr/lib/postgresql/*/bin; do
  if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && [ -x "$d/psql" ]; then bindir=$d; break; fi
done

if [ "$(id -u)" = 0 ]; then
  if id postgres >/dev/null 2>&1; then RUNAS=postgres; else RUNAS=nobody; fi
  as_user() { setpriv --reuid="$RUNAS" --regid="$(id -g "$RUNAS")" --clear-groups -- "$@"; }
else
  RUNAS=$(id -un)
  as_user() { "$@"; }
fi

url() {
  # psycopg passes host= to libpq: a folder there is the unix socket's folder
  echo "postgresql+psycopg://$SUPERUSER@/$DB?host=$DIR/socket"
}

running() { [ -f "$DIR/data/postmaster.pid" ] && as_user "$bindir/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; }

case "$cmd" in
  start)
    [ -n "$bindir" ] || { echo "postgres.sh: PostgreSQL (initdb, pg_ctl) is not installed" >&2; exit 1; }
    if ! running; then
      if [ ! -f "$DIR/data/PG_VERSION" ]; then
        rm -rf "$DIR"
        mkdir -p "$DIR/socket"
        chmod 755 "$DIR"
        [ "$(id -u)" = 0 ] && chown -R "$RUNAS" "$DIR"
        as_user "$bindir/initdb" -D "$DIR/data" -U "$SUPERUSER" --auth=trust -E UTF8 \
          --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 ||
          as_user "$bindir/initdb" -D "$DIR/data" -U "$SUPERUSER" --auth=trust -E UTF8 \
            --no-locale >"$DIR/initdb.log" 2>&1 ||
          { echo "postgres.sh: initdb failed:" >&2; cat "$DIR/initdb.log" >&2; exit 1; }
      fi
      rm -f "$DIR/data/postmaster.pid"  # stale, from a server killed without a stop
      if ! as_user "$bindir/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
        -o "-c listen_addresses= -c unix_socket_directories=$DIR/socket -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null; then
        echo "postgres.sh: the server did not start (log: $DIR/server.log):" >&2
        tail -n 20 "$DIR/server.log" >&2 || true
        exit 1
      fi
    fi
    psql="$bindir/psql"
    if ! as_user "$psql" -h "$DIR/socket" -U "$SUPERUSER" -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
      as_user "$psql" -q -h "$DIR/socket" -U "$SUPERUSER" -d postgres -c "CREATE DATABASE $DB" \
        >/dev/null
    fi
    url
    ;;
  url)
    running || { echo "postgres.sh: no server running in $DIR" >&2; exit 1; }
    url
    ;;
  stop)
    if [ -n "$bindir" ] && running; then
      as_user "$bindir/pg_ctl" -D "$DIR/data" -m fast -w -t 60 stop >/dev/null
    fi
    rm -rf "$DIR"
    ;;
  *) usage ;;
esac
