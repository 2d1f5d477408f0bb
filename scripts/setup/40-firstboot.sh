#!/usr/bin/env bash
# firstboot tests: a real sshd/ssh/rsync "old LXC host" in a network namespace (iproute2),
# real SQLite files (sqlite3 for inspection), and a private dbus-daemon for the D-Bus start test.
set -euo pipefail
apt-get install -y -qq --no-install-recommends \
  openssh-server openssh-client rsync sqlite3 iproute2 dbus procps >/dev/null
# sshd refuses to start without its privilege-separation directory.
mkdir -p /run/sshd
chmod 0755 /run/sshd
