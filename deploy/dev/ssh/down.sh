#!/usr/bin/env bash
# Stop the dev sshd started by up.sh (sessions already open end when their client leaves).
#   usage: down.sh STATE_DIR
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 STATE_DIR" >&2
    exit 2
fi
PIDFILE=$1/sshd.pid
if [ ! -s "$PIDFILE" ]; then
    echo "no sshd pid file in $1: nothing to stop"
    exit 0
fi
PID=$(cat "$PIDFILE")
if kill "$PID" 2>/dev/null; then
    for _ in $(seq 50); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$PID" 2>/dev/null && kill -9 "$PID" 2>/dev/null
fi
rm -f "$PIDFILE"
echo "sshd $PID stopped"
