#!/usr/bin/env bash
# Create a Unix account NAME that logs into the dev sshd with its own key (needs root).
#   usage: add-user.sh STATE_DIR NAME
# The private key is written to STATE_DIR/keys/NAME (no passphrase); its path is printed last.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 STATE_DIR NAME" >&2
    exit 2
fi
STATE=$1
NAME=$2

if [ "$(id -u)" -ne 0 ]; then
    echo "add-user.sh creates Unix accounts: run it as root" >&2
    exit 1
fi

if ! id "$NAME" >/dev/null 2>&1; then
    # Another run may create it at the same time: then it just exists.
    useradd -m -s /bin/bash "$NAME" 2>/dev/null || id "$NAME" >/dev/null
fi
# A locked account ('!') is refused by sshd without PAM; '*' has no password but is not locked.
usermod -p '*' "$NAME"

mkdir -p "$STATE/keys"
chmod 700 "$STATE/keys"
KEY=$STATE/keys/$NAME
if [ ! -f "$KEY" ]; then
    ssh-keygen -q -t ed25519 -N '' -C "grappe-dev-$NAME" -f "$KEY"
fi
KEY=$(cd "$(dirname "$KEY")" && pwd)/$NAME

HOME_DIR=$(getent passwd "$NAME" | cut -d: -f6)
GROUP=$(id -gn "$NAME")
install -d -m 700 -o "$NAME" -g "$GROUP" "$HOME_DIR/.ssh"
AUTH=$HOME_DIR/.ssh/authorized_keys
touch "$AUTH"
# Append (other dev servers may have installed their own key for the same name).
grep -qxF "$(cat "$KEY.pub")" "$AUTH" || cat "$KEY.pub" >> "$AUTH"
chown "$NAME:$GROUP" "$AUTH"
chmod 600 "$AUTH"
chmod go-w "$HOME_DIR"

echo "$KEY"
