#!/bin/sh
# Install the Debian packages the test suite runs for real, if any is missing:
# PostgreSQL, Slurm with munge, an SSH server (the login-node path), iproute2,
# Chromium (the console's browser tests) and the small tools the tests and dev scripts
# call (pgrep, ps, hostname).
# Services are not started by the packages (policy-rc.d): the tests start their own
# daemons on loopback, inside their own network namespace.
set -eu
missing=""
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
command -v slurmctld >/dev/null 2>&1 || missing="$missing slurm-wlm"
[ -x /usr/sbin/munged ] || missing="$missing munge"
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v unshare >/dev/null 2>&1 || missing="$missing util-linux"
# pgrep and ps (the tests and dev scripts find and stop processes), hostname (slurm.conf).
command -v pgrep >/dev/null 2>&1 || missing="$missing procps"
command -v hostname >/dev/null 2>&1 || missing="$missing hostname"
# The console's browser tests drive Debian's Chromium through Playwright (no browser download).
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -n "$missing" ] || exit 0

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
echo "installing Debian packages:$missing"
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    made_policy=yes
fi
cleanup() { [ -z "$made_policy" ] || $SUDO rm -f "$policy"; }
trap cleanup EXIT
$SUDO apt-get update -qq
# shellcheck disable=SC2086  # the package list is meant to split
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
