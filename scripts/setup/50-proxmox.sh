#!/usr/bin/env bash
# Proxmox client tests (issue 4): `ssh-keygen` checks that the one-time rebuild
# key the builder generates in memory is a valid OpenSSH private key.
set -euo pipefail
if ! command -v ssh-keygen >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends openssh-client
fi
command -v ssh-keygen >/dev/null
