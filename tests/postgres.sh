#!/usr/bin/env bash
# A throw-away PostgreSQL server for the registry's shared mode, on loopback.
#
#   tests/postgres.sh start DIR   initialise (once) and start; prints the URL on its last line
#   tests/postgres.sh stop  DIR
#
# Debian's server binaries run as the `postgres` user (initdb refuses root), so
# DIR must be reachable by that user: not under /root, say.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
action=$1
dir=$(readlink -m "$2")
port=${MULTIHV_TEST_PG_PORT:-55432}
bindir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bindir" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
as_pg() { runuser -u postgres -- "$@"; }

case $action in
start)
    mkdir -p "$dir"
    chown postgres: "$dir"
    runuser -u postgres -- test -w "$dir" || { echo "$dir is not writable by the postgres user" >&2; exit 1; }
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_pg "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    if as_pg "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        echo running
    else
        as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" start >/dev/null
        echo started
    fi
    as_pg "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'multihv'" | grep -q 1 \
        || as_pg "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres multihv
    echo "postgresql://postgres@127.0.0.1:$port/multihv"
    ;;
stop)
    if [ -f "$dir/data/PG_VERSION" ] && as_pg "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
        echo stopped
    else
        echo down
    fi
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
