#!/usr/bin/env bash
# firstboot tests: a real sshd/ssh/rsync "old LXC host" in a network namespace (iproute2),
# real SQLite files (sqlite3 for inspection), a private dbus-daemon for the D-Bus start test,
# and a PostgreSQL server on the old host for the Immich pg_dumpall migration.
set -euo pipefail
apt-get install -y -qq --no-install-recommends \
  openssh-server openssh-client rsync sqlite3 iproute2 dbus procps postgresql >/dev/null
# sshd refuses to start without its privilege-separation directory.
mkdir -p /run/sshd
chmod 0755 /run/sshd
# An unprivileged account for the user-bus test (a dbus-daemon run as this user refuses
# root, like a real user bus; firstboot must connect as the user). uid 1190 so it does not
# clash with the appliance's mms (1100).
if ! getent passwd mmsfbtest >/dev/null; then
  if getent passwd 1190 >/dev/null; then
    echo "40-firstboot: uid 1190 is taken by $(getent passwd 1190 | cut -d: -f1); the user-bus test needs it" >&2
    exit 1
  fi
  groupadd -g 1190 mmsfbtest 2>/dev/null || true
  useradd -u 1190 -g 1190 -M -d /nonexistent -s /usr/sbin/nologin mmsfbtest
fi
