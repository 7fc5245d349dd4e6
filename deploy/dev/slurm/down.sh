#!/usr/bin/env bash
# Stop the slurmd and slurmctld of a cluster made by up.sh (by their pid files).
# Jobs are not cancelled first (cancel them with scancel if you want them gone) and
# munged keeps running: other clusters on this host may use it.
#
#   deploy/dev/slurm/down.sh STATE_DIR
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 STATE_DIR" >&2
    exit 2
fi
STATE=$(cd "$1" && pwd -P)

pids=()
for name in slurmd slurmctld; do
    pidfile=$STATE/$name.pid
    if [ -s "$pidfile" ]; then
        pid=$(cat "$pidfile")
        # Only a process that is that daemon: the pid may have been reused since.
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
            kill "$pid"
            pids+=("$pid")
        fi
    fi
done
for pid in "${pids[@]}"; do
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "warning: $pid did not stop within 10 s; sending SIGKILL" >&2
        kill -9 "$pid" 2>/dev/null || true
    fi
done
echo "stopped Slurm of $STATE"
