#!/usr/bin/env bash
# Appliance VM test (tests/appliance, issue 7): QEMU (TCG), mmdebstrap, ISO tools, ssh client.
# Idempotent. qemu-system-x86, qemu-utils and mmdebstrap come from bookworm-backports: a host
# that already has qemu-utils 10 from backports cannot install bookworm's qemu-system-x86 7.2
# (it Breaks the newer qemu-utils), and mmdebstrap 1.5 builds trixie cleanly. The backports
# suite is read from a private source list on the same mirror this machine's apt already
# uses; nothing is added to /etc/apt.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt_install() { apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }

# The Debian mirror this machine already reaches (deb822 or one-line format).
mirror=""
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources | awk '!/security/ {print $1; exit}')
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

need_bpo=0
command -v qemu-system-x86_64 >/dev/null || need_bpo=1
command -v qemu-img >/dev/null || need_bpo=1
command -v mmdebstrap >/dev/null || need_bpo=1
if [ "$need_bpo" = 1 ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm-backports main" > "$work/bpo.list"
  apt-get -qq -o Dir::Etc::sourcelist="$work/bpo.list" update >/dev/null
  apt-get install -y -qq --no-install-recommends -o Dir::Etc::sourcelist="$work/bpo.list" \
    -t bookworm-backports qemu-system-x86 qemu-utils mmdebstrap >/dev/null
fi

# ISO tools, ext4 image from a directory, compression, ssh client for the assertions,
# Go age for decrypting backups outside the VM, the keyring mmdebstrap checks trixie with,
# binutils (strip: the appliance programs go into the seed ISO without debug info).
apt_install genisoimage xorriso e2fsprogs debian-archive-keyring ca-certificates zstd tar \
  openssh-client age cpio binutils
qemu-system-x86_64 --version | head -1
mmdebstrap --version
