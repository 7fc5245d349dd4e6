#!/usr/bin/env bash
# Start a single-node Ray head for development and tests: 2 CPUs, 2 fake GPUs, 4 GiB.
#
#   deploy/dev/ray/up.sh STATE_DIR [DASHBOARD_PORT [GCS_PORT]]
#
# Prints the Jobs API address (http://127.0.0.1:DASHBOARD_PORT) on its last line once
# that API answers. Run it inside a network namespace that has only `lo` (see README.md):
# elsewhere Ray also listens on 0.0.0.0 and advertises the machine's address.
# Stop it with deploy/dev/ray/down.sh STATE_DIR.
#
# Environment: GRAPPE_RAY_BIN (the `ray` to run; default: the repository's .venv),
# RAY_NUM_CPUS (2), RAY_NUM_GPUS (2), RAY_MEMORY_BYTES (4 GiB), RAY_UP_TIMEOUT_S (90).
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 3 ]; then
  echo "usage: $0 STATE_DIR [DASHBOARD_PORT [GCS_PORT]]" >&2
  exit 2
fi
state=$1
dashboard_port=${2:-8265}
gcs_port=${3:-6379}
here=$(cd "$(dirname "$0")" && pwd)
ray=${GRAPPE_RAY_BIN:-$here/../../../.venv/bin/ray}
if [ ! -x "$ray" ]; then
  echo "up.sh: no ray at $ray; pip install 'grappe[ray]' or set GRAPPE_RAY_BIN" >&2
  exit 1
fi
bin_dir=$(dirname "$ray")
python=$bin_dir/python
# Jobs inherit the head's PATH: put this Ray's Python first, so `python` in a job can import ray.
export PATH="$bin_dir:$PATH"

mkdir -p "$state"
state=$(cd "$state" && pwd)
temp="$state/r"
# Ray puts unix sockets at TEMP/session_<date>_<pid>/sockets/plasma_store; with a long
# TEMP the path passes the kernel's 107-byte limit and the raylet fails to start.
if [ ${#temp} -gt 44 ]; then
  echo "up.sh: STATE_DIR $state is too long for Ray's socket paths; use a short one under /tmp" >&2
  exit 1
fi
if [ -s "$state/sid" ] && ps -o pid= -s "$(cat "$state/sid")" >/dev/null 2>&1; then
  echo "up.sh: a Ray head from $state still runs; run down.sh $state first" >&2
  exit 1
fi

# setsid gives the head a session of its own; down.sh ends exactly that session
# (`ray stop` would end every Ray on the machine, other people's included).
setsid "$ray" start --head \
  --port "$gcs_port" \
  --num-cpus "${RAY_NUM_CPUS:-2}" --num-gpus "${RAY_NUM_GPUS:-2}" \
  --memory "${RAY_MEMORY_BYTES:-4294967296}" --object-store-memory 100000000 \
  --include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port "$dashboard_port" \
  --node-ip-address 127.0.0.1 --disable-usage-stats \
  --temp-dir "$temp" >"$state/start.log" 2>&1 </dev/null &
starter=$!
echo "$starter" >"$state/sid"
if ! wait "$starter"; then
  echo "up.sh: ray start failed; its output ($state/start.log):" >&2
  tail -n 40 "$state/start.log" >&2
  exit 1
fi

address="http://127.0.0.1:$dashboard_port"
echo "$address" >"$state/address"
deadline=$((SECONDS + ${RAY_UP_TIMEOUT_S:-90}))
# The dashboard answers /api/version before the job agent is ready; /api/jobs/ needs both.
until "$python" - "$address" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/api/jobs/", timeout=5) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
do
  if [ $SECONDS -ge $deadline ]; then
    echo "up.sh: the Jobs API at $address did not answer in time; see $temp/session_latest/logs" >&2
    exit 1
  fi
  sleep 0.5
done
echo "$address"
