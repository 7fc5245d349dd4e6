#!/usr/bin/env bash
# Stop or start the controller (slurmctld) of a cluster made by up.sh, leaving slurmd and
# the jobs running: the "controller goes away and comes back" case.
#
#   deploy/dev/slurm/ctld.sh STATE_DIR stop|start
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

if [ $# -ne 2 ]; then
    echo "usage: $0 STATE_DIR stop|start" >&2
    exit 2
fi
STATE=$(cd "$1" && pwd -P)
CONF=$STATE/slurm.conf
PIDFILE=$STATE/slurmctld.pid
[ -f "$CONF" ] || { echo "error: no $CONF: run up.sh $1 first" >&2; exit 1; }

running() {
    [ -s "$PIDFILE" ] && [ "$(cat "/proc/$(cat "$PIDFILE")/comm" 2>/dev/null)" = slurmctld ]
}

case "$2" in
stop)
    if running; then
        pid=$(cat "$PIDFILE")
        kill "$pid"
        # slurmctld saves its state before it exits; wait so that a start sees it.
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "error: slurmctld ($pid) did not stop within 10 s" >&2
            exit 1
        fi
    fi
    ;;
start)
    if ! running; then
        SLURM_CONF=$CONF slurmctld -f "$CONF"
        # Wait until it answers, so that the caller can use it at once.
        for _ in $(seq 100); do
            SLURM_CONF=$CONF scontrol ping 2>/dev/null | grep -q UP && exit 0
            sleep 0.1
        done
        echo "error: slurmctld did not answer within 10 s; see $STATE/log/slurmctld.log" >&2
        tail -n 20 "$STATE/log/slurmctld.log" >&2 || true
        exit 1
    fi
    ;;
*)
    echo "usage: $0 STATE_DIR stop|start" >&2
    exit 2
    ;;
esac
