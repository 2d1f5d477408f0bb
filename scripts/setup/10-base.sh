#!/usr/bin/env bash
# Base tools used across the test suite: Go age (+ age-keygen), zstd, tar, sqlite3,
# systemd-analyze (calendar expressions).
set -euo pipefail
apt-get install -y -qq --no-install-recommends age zstd tar sqlite3 systemd ca-certificates >/dev/null
