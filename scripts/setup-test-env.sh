#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (run as root).
# Each area keeps its own idempotent step in scripts/setup/NN-*.sh; this runs them in order.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" -ne 0 ]; then
  echo "setup-test-env: run as root (it installs Debian packages)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# One apt-get update for all steps; steps that add suites update their own lists.
apt-get update -qq
for step in "$here"/setup/[0-9][0-9]-*.sh; do
  echo "== setup: $(basename "$step")"
  bash "$step"
done
echo "== setup: done"
