#!/usr/bin/env bash
# Start a one-host Slurm cluster for development and tests, on 127.0.0.1 only.
#
#   deploy/dev/slurm/up.sh STATE_DIR [CTLD_PORT SLURMD_PORT]
#
# Writes STATE_DIR/slurm.conf and gres.conf (one node with 4 CPUs, 4000 MB and 4
# fake GPUs; partitions `cpu` (default) and `gpu`), starts munged if none runs,
# then slurmctld and slurmd as root, waits for the node to be idle and prints the
# line to export SLURM_CONF. See README.md next to this script.
set -euo pipefail

usage() {
    echo "usage: $0 STATE_DIR [CTLD_PORT SLURMD_PORT]" >&2
    exit 2
}
[ $# -eq 1 ] || [ $# -eq 3 ] || usage

for cmd in slurmctld slurmd sinfo munged; do
    if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1; then
        echo "error: $cmd not found: install Slurm and MUNGE first:" >&2
        echo "  apt-get install slurm-wlm munge" >&2
        exit 1
    fi
done
export PATH="$PATH:/usr/sbin:/sbin"
if [ "$(id -u)" -ne 0 ]; then
    echo "error: run as root: slurmd must start jobs as their users and munged as munge" >&2
    exit 1
fi

mkdir -p "$1"
STATE=$(cd "$1" && pwd -P)
case "$STATE" in
*[[:space:]%\"\'\\]*)
    echo "error: STATE_DIR $STATE holds spaces, quotes, % or \\; Slurm cannot use it" >&2
    exit 1
    ;;
esac

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
if [ $# -eq 3 ]; then
    CTLD_PORT=$2
    SLURMD_PORT=$3
else
    CTLD_PORT=$(free_port)
    SLURMD_PORT=$(free_port)
    while [ "$SLURMD_PORT" = "$CTLD_PORT" ]; do SLURMD_PORT=$(free_port); done
fi

NODE=$(hostname -s)
CONF=$STATE/slurm.conf
mkdir -p "$STATE/state" "$STATE/spool" "$STATE/log" "$STATE/dev"

# Fake GPUs: slurmd needs a device file per GPU (without File= the node goes INVAL);
# character device 1,3 is /dev/null, so a job that opens one does no harm.
for i in 0 1 2 3; do
    dev=$STATE/dev/nvidia$i
    [ -e "$dev" ] || mknod "$dev" c 1 3 2>/dev/null || touch "$dev"
done

cat >"$STATE/gres.conf" <<EOF
# Four fake GPUs on this host (see up.sh); no autodetection: there is no NVML here.
AutoDetect=off
NodeName=$NODE Name=gpu File=$STATE/dev/nvidia[0-3]
EOF

cat >"$CONF" <<EOF
# A one-host development cluster written by deploy/dev/slurm/up.sh; every file lives in
# $STATE and every socket on 127.0.0.1.
ClusterName=grappe-dev
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
# Bind to the configured addresses (127.0.0.1) rather than to every interface.
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Memory is consumable: a job that asks for none gets 900 MB per CPU, not the whole node.
DefMemPerCPU=900
GresTypes=gpu
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
# Finished jobs stay visible to scontrol for 5 minutes.
MinJobAge=300
# Like most centres: a job asking more than a partition allows is refused at sbatch.
EnforcePartLimits=ALL
MaxJobCount=20000
ReturnToService=2
# Without these the scheduler starts only a couple of jobs every few seconds.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
# Trust the node sizes below rather than the machine's (this host may have fewer cores).
SlurmdParameters=config_overrides
# Time limits end jobs promptly: no grace beyond --time, SIGKILL 2 s after SIGTERM.
OverTimeLimit=0
KillWait=2
InactiveLimit=0
# Commands give up on a stopped controller after a few seconds rather than ten.
MessageTimeout=4
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=4 RealMemory=4000 Gres=gpu:4 State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=1-00:00:00 State=UP
PartitionName=gpu Nodes=$NODE MaxTime=1-00:00:00 State=UP
EOF

# Slurm resolves names with getaddrinfo(AF_INET, AI_ADDRCONFIG), which glibc refuses when the
# only IPv4 address is 127.0.0.1 (a network namespace with just `lo`, as under `unshare -n`).
# A second loopback address satisfies it and still reaches nothing outside this host.
if ! ip -4 -o addr show 2>/dev/null | grep -v ' 127\.0\.0\.1/' | grep -q ' inet '; then
    echo "note: only 127.0.0.1 is configured; adding 127.0.0.2/8 to lo so that Slurm resolves names" >&2
    ip addr add 127.0.0.2/8 dev lo
fi

# MUNGE authenticates every Slurm message; one munged serves every cluster on this host.
if ! pgrep -x munged >/dev/null 2>&1; then
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    su -s /bin/sh munge -c /usr/sbin/munged
fi

export SLURM_CONF=$CONF
# Whether the daemon named $2 runs with the pid in file $1 (not another process that reused it).
pid_running() {
    [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]
}
pid_running "$STATE/slurmctld.pid" slurmctld || slurmctld -f "$CONF"
pid_running "$STATE/slurmd.pid" slurmd || slurmd -f "$CONF" -N "$NODE"

started=$SECONDS
deadline=$((started + 30))
state=""
while [ $SECONDS -lt $deadline ]; do
    state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1 || true)
    case "$state" in
    idle | mixed | allocated) break ;;
    esac
    # A daemon that exited (a fatal configuration error) will not come back: stop waiting.
    if [ $((SECONDS - started)) -gt 2 ] && ! { pid_running "$STATE/slurmctld.pid" slurmctld && pid_running "$STATE/slurmd.pid" slurmd; }; then
        break
    fi
    sleep 0.3
done
case "$state" in
idle | mixed | allocated) ;;
*)
    echo "error: node $NODE did not become idle within 30 s (state: ${state:-none})" >&2
    for log in "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log"; do
        echo "--- $log" >&2
        tail -n 40 "$log" >&2 2>/dev/null || echo "(no log)" >&2
    done
    exit 1
    ;;
esac

echo "export SLURM_CONF=$CONF"
