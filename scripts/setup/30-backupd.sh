#!/usr/bin/env bash
# mms-backupd tests: Go age (+age-keygen), zstd, tar, PostgreSQL (pg_dumpall/psql/initdb),
# dbus-daemon for the private bus, sqlite3, ssh-keygen and sshd for `mms-build backup`
# over SSH, python3 for building hostile archives.
set -euo pipefail
apt-get install -y -qq --no-install-recommends \
  age zstd tar postgresql dbus-daemon sqlite3 openssh-client openssh-server python3 \
  >/dev/null
# The Debian package starts a cluster service; the tests start their own postgres.
