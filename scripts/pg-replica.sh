#!/usr/bin/env bash
# A PostgreSQL primary with a streaming synchronous hot standby, on this machine, for Strata's
# failover and read-scaling tests. It never touches any other cluster (such as the one on 5432):
# both live under one directory and are stopped by their data directories.
#
#   scripts/pg-replica.sh start         create (or re-create) the pair unless it is healthy
#   scripts/pg-replica.sh stop          stop both and delete the directory
#   scripts/pg-replica.sh status        exit 0 when the primary streams synchronously to the standby
#   scripts/pg-replica.sh kill-primary  stop the primary at once (pg_ctl stop -m immediate)
#   scripts/pg-replica.sh promote       promote the standby and wait until it accepts writes
#   scripts/pg-replica.sh url           print the multi-host URL Strata connects with
#
# Environment: STRATA_REPLICA_DIR (default /tmp/strata-pg-replica), STRATA_REPLICA_PRIMARY_PORT
# (5442), STRATA_REPLICA_STANDBY_PORT (5443), PG_BIN (the newest /usr/lib/postgresql/*/bin).
# Run as root (the servers then run as the `postgres` user) or as the user owning the binaries.
set -euo pipefail

DIR="${STRATA_REPLICA_DIR:-/tmp/strata-pg-replica}"
PRIMARY_PORT="${STRATA_REPLICA_PRIMARY_PORT:-5442}"
STANDBY_PORT="${STRATA_REPLICA_STANDBY_PORT:-5443}"
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
STANDBY_NAME="strata_standby"
PRIMARY="$DIR/primary"
STANDBY="$DIR/standby"

if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/pg_ctl" ]; then
  echo "pg-replica: no PostgreSQL binaries found (set PG_BIN)" >&2
  exit 2
fi

# Runs a PostgreSQL binary as the `postgres` user when we are root (initdb refuses root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

psql_at() {
  local port=$1
  shift
  as_pg "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"
}

running() {
  [ -f "$1/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$1" status >/dev/null 2>&1
}

healthy() {
  running "$PRIMARY" && running "$STANDBY" || return 1
  [ "$(psql_at "$PRIMARY_PORT" -c "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] || return 1
  [ "$(psql_at "$STANDBY_PORT" -c "SELECT pg_is_in_recovery()" 2>/dev/null)" = t ] || return 1
  [ "$(psql_at "$PRIMARY_PORT" -c "SELECT sync_state FROM pg_stat_replication
        WHERE application_name = '$STANDBY_NAME' AND state = 'streaming'" 2>/dev/null)" = sync ]
}

stop_one() {
  if running "$1"; then
    as_pg "$PG_BIN/pg_ctl" -D "$1" -m immediate -w stop >/dev/null
  fi
}

stop_all() {
  stop_one "$STANDBY"
  stop_one "$PRIMARY"
  rm -rf "$DIR"
}

start() {
  if healthy; then
    echo "pg-replica: already running (primary 127.0.0.1:$PRIMARY_PORT, standby 127.0.0.1:$STANDBY_PORT)"
    return 0
  fi
  stop_all
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
  as_pg "$PG_BIN/initdb" -D "$PRIMARY" -U postgres --auth=trust --no-sync >"$DIR/initdb.log"
  # The primary commits only once the standby has flushed the commit record, so an
  # acknowledged append is on both servers.
  cat >>"$PRIMARY/postgresql.conf" <<EOF
port = $PRIMARY_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
wal_level = replica
max_wal_senders = 4
hot_standby = on
synchronous_commit = on
synchronous_standby_names = '$STANDBY_NAME'
EOF
  as_pg "$PG_BIN/pg_ctl" -D "$PRIMARY" -l "$DIR/primary.log" -w start >/dev/null
  as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$STANDBY" \
    -X stream --no-sync
  touch "$STANDBY/standby.signal"
  [ "$(id -u)" = 0 ] && chown postgres: "$STANDBY/standby.signal"
  # The standby's own settings. Once promoted it has no standby of its own, so it must not
  # wait for one (synchronous_standby_names empty): it accepts writes alone until a new
  # standby joins. hot_standby_feedback keeps the primary's vacuum from removing rows a
  # standby query still reads (which would cancel that query).
  cat >>"$STANDBY/postgresql.auto.conf" <<EOF
port = $STANDBY_PORT
primary_conninfo = 'host=127.0.0.1 port=$PRIMARY_PORT user=postgres application_name=$STANDBY_NAME'
synchronous_standby_names = ''
hot_standby_feedback = on
EOF
  as_pg "$PG_BIN/pg_ctl" -D "$STANDBY" -l "$DIR/standby.log" -w start >/dev/null
  for _ in $(seq 1 300); do
    if healthy; then
      echo "pg-replica: primary 127.0.0.1:$PRIMARY_PORT streams synchronously to standby 127.0.0.1:$STANDBY_PORT"
      return 0
    fi
    sleep 0.1
  done
  echo "pg-replica: the standby did not become a synchronous streaming replica; see $DIR/*.log" >&2
  return 1
}

promote() {
  as_pg "$PG_BIN/pg_ctl" -D "$STANDBY" -w promote >/dev/null
  for _ in $(seq 1 300); do
    [ "$(psql_at "$STANDBY_PORT" -c "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] && return 0
    sleep 0.1
  done
  echo "pg-replica: the standby did not leave recovery" >&2
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop_all ;;
  status) healthy ;;
  kill-primary) as_pg "$PG_BIN/pg_ctl" -D "$PRIMARY" -m immediate -w stop >/dev/null ;;
  promote) promote ;;
  url) echo "postgres://postgres@127.0.0.1:$PRIMARY_PORT,127.0.0.1:$STANDBY_PORT/postgres?target_session_attrs=read-write" ;;
  *)
    echo "usage: $0 start|stop|status|kill-primary|promote|url" >&2
    exit 2
    ;;
esac
