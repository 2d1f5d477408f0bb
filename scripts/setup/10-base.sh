#!/usr/bin/env bash
# Base tools used across the test suite: Go age, zstd, tar, sqlite3.
set -euo pipefail
apt-get install -y -qq --no-install-recommends age zstd tar sqlite3 ca-certificates >/dev/null
