#!/usr/bin/env bash
# Start a throwaway OpenSSH server on 127.0.0.1:PORT, for developing and testing Grappe's
# SSH access path (a stand-in for an HPC centre's login node).
#   usage: up.sh STATE_DIR PORT
# Writes STATE_DIR/{ssh_host_ed25519_key,sshd_config,sshd.pid,sshd.log,known_hosts}.
# Key-only logins, no root, no forwarding. Works in a network namespace that has only `lo`.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 STATE_DIR PORT" >&2
    exit 2
fi
STATE=$1
PORT=$2
SSHD=/usr/sbin/sshd

if [ ! -x "$SSHD" ]; then
    echo "openssh-server is not installed: apt-get install -y openssh-server" >&2
    exit 1
fi

mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
PIDFILE=$STATE/sshd.pid

if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "sshd already running (pid $(cat "$PIDFILE")) for $STATE"
    exit 0
fi

# Keep the host key across restarts so known_hosts stays valid.
if [ ! -f "$STATE/ssh_host_ed25519_key" ]; then
    ssh-keygen -q -t ed25519 -N '' -C "grappe-dev-sshd" -f "$STATE/ssh_host_ed25519_key"
fi
chmod 600 "$STATE/ssh_host_ed25519_key"

cat > "$STATE/sshd_config" <<CONF
# Grappe dev sshd (deploy/dev/ssh/up.sh): key-only, loopback only.
ListenAddress 127.0.0.1
Port $PORT
HostKey $STATE/ssh_host_ed25519_key
PidFile $PIDFILE
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
X11Forwarding no
AllowAgentForwarding no
AllowTcpForwarding no
PermitTunnel no
PrintMotd no
UseDNS no
LogLevel VERBOSE
Subsystem sftp internal-sftp
CONF

mkdir -p /run/sshd 2>/dev/null || true
chmod 755 /run/sshd 2>/dev/null || true

"$SSHD" -t -f "$STATE/sshd_config"
: > "$STATE/sshd.log"
"$SSHD" -f "$STATE/sshd_config" -E "$STATE/sshd.log"

# Wait until the port accepts connections.
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "sshd did not start listening on 127.0.0.1:$PORT; its log:" >&2
    cat "$STATE/sshd.log" >&2
    exit 1
fi

# The host key line, as an ssh client names a non-default port.
printf '[127.0.0.1]:%s %s\n' "$PORT" "$(cut -d' ' -f1,2 "$STATE/ssh_host_ed25519_key.pub")" \
    > "$STATE/known_hosts"

echo "sshd listening on 127.0.0.1:$PORT (pid $(cat "$PIDFILE")); known_hosts: $STATE/known_hosts"
