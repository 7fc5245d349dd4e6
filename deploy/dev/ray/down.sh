#!/usr/bin/env bash
# Stop the Ray head that up.sh started from STATE_DIR, and every process it left.
#
#   deploy/dev/ray/down.sh STATE_DIR
#
# Ends the head's session (gcs_server, raylet, dashboard, agents, workers) and the
# job processes Ray started in sessions of their own (found by their working
# directory or command line under the head's temp dir), and only those: `ray stop`
# would end every Ray on the machine, other people's included. SIGTERM, then
# SIGKILL after 2 s (a dev head keeps no state worth a longer wait). Exits 1 if a process of this head is still alive after that.
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 STATE_DIR" >&2
  exit 2
fi
state=$(cd "$1" 2>/dev/null && pwd) || { echo "down.sh: no directory $1; nothing to stop" >&2; exit 0; }
temp="$state/r"
sid=$(cat "$state/sid" 2>/dev/null || true)

# The live (not zombie) processes of this head, one pid a line.
head_pids() {
  local pid stat
  {
    if [ -n "$sid" ]; then pgrep -s "$sid"; fi
    pgrep -f -- "$temp/"
    find /proc -mindepth 2 -maxdepth 2 -name cwd -lname "$temp/*" 2>/dev/null | cut -d/ -f3
  } | sort -u | while read -r pid; do
    [ "$pid" = "$$" ] && continue
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    stat=${stat##*) }
    # A zombie is already dead: only its parent's wait is missing.
    [ "${stat%% *}" = Z ] && continue
    echo "$pid"
  done
}

mapfile -t pids < <(head_pids)
[ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null
for _ in $(seq 20); do
  mapfile -t pids < <(head_pids)
  [ ${#pids[@]} -eq 0 ] && break
  sleep 0.1
done
[ ${#pids[@]} -gt 0 ] && kill -KILL "${pids[@]}" 2>/dev/null
sleep 0.3
left=$(head_pids | tr '\n' ' ')
rm -f "$state/sid"
if [ -n "${left// /}" ]; then
  echo "down.sh: processes of the Ray head in $state survive: $left" >&2
  exit 1
fi
