#!/bin/sh
# Run a command in a network namespace of its own whose only interface is loopback.
# Test clusters (Slurm, sshd, Ray, PostgreSQL) started inside it can talk to nothing
# but 127.0.0.1: Ray in particular binds 0.0.0.0 and advertises the machine's address
# otherwise. Needs root (or CAP_SYS_ADMIN); without it the command runs as it is.
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
    exec unshare -n -- sh -c 'ip link set lo up && exec "$@"' isolated "$@"
fi
echo "isolated.sh: cannot make a network namespace here; running without isolation" >&2
exec "$@"
