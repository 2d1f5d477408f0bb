#!/usr/bin/env bash
# Builds (or finds in the cache) the Debian 13 (trixie) base image of the appliance VM test.
#
#   usage: build-image.sh [CACHE_ROOT]      (default: <repo>/target/appliance-cache)
#   stdout, last line: the image directory CACHE_ROOT/image-<key>/ holding
#     vmlinuz, initrd.img        boot the VM with -kernel/-initrd (no bootloader, no partitions)
#     rootfs.raw                 ext4, label "root", sparse
#     postgres-rootfs.tar        PostgreSQL 17 binaries + libraries for the Immich DB stand-in image
#     busybox                    static busybox for the stand-in container images
#     packages.txt               dpkg -l of the built image (what was really installed)
#
# The key is the SHA-256 of packages.txt, this script, repack-cloud-init.sh, extract-postgres.sh and
# the files under image/, so the image is rebuilt only when one of them changes (~1-2 min on 2 cores; needs root,
# mmdebstrap and the Debian mirror). Concurrent callers wait on a lock instead of building twice.
#
# Debian's cloud-init declares "Conflicts: firewalld" (Debian bug #1025618). The appliance needs
# both, so this build installs a repacked cloud-init without that Conflicts (repack-cloud-init.sh)
# and breaks the systemd ordering cycle behind it with a full copy of cloud-init-network.service
# that lacks "After=systemd-networkd-wait-online.service" (drop-ins cannot remove After=).
# See tests/appliance/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${1:-$repo/target/appliance-cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

for tool in mmdebstrap mkfs.ext4 dpkg-deb apt-get sha256sum flock; do
  command -v "$tool" >/dev/null || {
    echo "build-image: '$tool' not found; run scripts/setup-test-env.sh (as root) first" >&2
    exit 1
  }
done
if [ "$(id -u)" -ne 0 ]; then
  echo "build-image: must run as root (mmdebstrap --mode=root, chroot)" >&2
  exit 1
fi

key=$(cd "$here" && { cat packages.txt build-image.sh repack-cloud-init.sh extract-postgres.sh
  find image -type f -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-16)
out=$cache/image-$key

exec 9>"$cache/.build.lock"
flock 9
if [ -f "$out/complete" ]; then
  echo "build-image: cached image $out" >&2
  echo "$out"
  exit 0
fi

# The Debian mirrors this machine's apt already reaches.
mirror="" security=""
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources | awk '!/security/ {print $1; exit}')
  security=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources | awk '/security/ {print $1; exit}')
fi
mirror=${mirror:-http://deb.debian.org/debian}
security=${security:-http://deb.debian.org/debian-security}

t0=$(date +%s)
tmp=$cache/build-$key.tmp
rm -rf "$tmp"
mkdir -p "$tmp/debs" "$tmp/tmpdir"
# /tmp on these machines is shared with other jobs that clean it: keep temp files here.
export TMPDIR=$tmp/tmpdir
log=$tmp/build.log
echo "build-image: building $out (log: $out/build.log)" >&2

# 1. cloud-init without "Conflicts: firewalld".
bash "$here/repack-cloud-init.sh" "$cache/apt" "$mirror" "$tmp/debs" >>"$log" 2>&1 || {
  tail -30 "$log" >&2; exit 1; }
cloudinit_deb=$(ls "$tmp"/debs/cloud-init_*+mms1_all.deb)

# 2. The root filesystem.
pkgs=$(grep -v '^[[:space:]]*#' "$here/packages.txt" | awk 'NF {print $1}' | paste -sd, -)
root=$tmp/rootfs
export MMS_IMAGE_FILES=$here/image
if ! mmdebstrap --variant=minbase --mode=root --components=main \
  --include="$pkgs" \
  --include="$cloudinit_deb" \
  --hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='echo "LABEL=root / ext4 rw,errors=remount-ro 0 1" > "$1/etc/fstab"' \
  --customize-hook='echo appliance > "$1/etc/hostname"' \
  --customize-hook='printf "datasource_list: [ NoCloud, None ]\n" > "$1/etc/cloud/cloud.cfg.d/90_mms_test_datasource.cfg"' \
  --customize-hook='cp -a "$MMS_IMAGE_FILES/." "$1/"' \
  --customize-hook='u=$1/usr/lib/systemd/system/cloud-init-network.service; grep -qx "After=systemd-networkd-wait-online.service" "$u" || { echo "cloud-init-network.service no longer has the After= line this override removes: re-check the ordering cycle" >&2; exit 1; }; { echo "# Full override (tests/appliance/build-image.sh): the packaged unit minus"; echo "# After=systemd-networkd-wait-online.service, which closes an ordering cycle with firewalld."; grep -vx "After=systemd-networkd-wait-online.service" "$u"; } > "$1/etc/systemd/system/cloud-init-network.service"' \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd.service nfs-server.service mms-test-early.service mms-test-images.service' \
  --customize-hook='chroot "$1" systemctl mask postgresql.service apt-daily.timer apt-daily-upgrade.timer' \
  --customize-hook='chroot "$1" sh -c "ldconfig && systemd-hwdb update && journalctl --update-catalog" && touch "$1/etc/.updated" "$1/var/.updated"' \
  --customize-hook='mkdir -p "$1"/srv/nfs/data/media "$1"/srv/nfs/data/usenet "$1"/srv/nfs/data/photos "$1"/srv/nfs/data/backups "$1"/srv/nfs/photos "$1"/srv/nfs/backups && chown -R 1100:1100 "$1"/srv/nfs' \
  trixie "$root" \
  "deb $mirror trixie main" "deb $mirror trixie-updates main" "deb $security trixie-security main" \
  >>"$log" 2>&1; then
  echo "build-image: mmdebstrap failed; last lines of $log:" >&2
  tail -40 "$log" >&2
  exit 1
fi
t1=$(date +%s)
echo "build-image: mmdebstrap $((t1 - t0))s" >>"$log"

chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' > "$tmp/packages.txt"
cp -L "$root/vmlinuz" "$tmp/vmlinuz"
cp -L "$root/initrd.img" "$tmp/initrd.img"
cp "$root/usr/bin/busybox" "$tmp/busybox"

# 3. PostgreSQL for the Immich database stand-in container: the server binaries, their data
# files and every shared library they load, taken from the image so versions match (no JIT).
bash "$here/extract-postgres.sh" "$root" "$tmp/postgres-rootfs.tar" >>"$log" 2>&1 || {
  tail -20 "$log" >&2; exit 1; }

# 4. The disk: ext4 made straight from the directory, no partition table.
mkfs.ext4 -q -L root -d "$root" "$tmp/rootfs.raw" 4G
rm -rf "$root" "$tmp/tmpdir"
t2=$(date +%s)
echo "build-image: total $((t2 - t0))s" >>"$log"
touch "$tmp/complete"

# Keep one image: drop the ones built from older inputs.
find "$cache" -maxdepth 1 -name 'image-*' -type d ! -name "image-$key" -exec rm -rf {} +
rm -rf "$out"
mv "$tmp" "$out"
echo "build-image: built $out in $((t2 - t0))s" >&2
echo "$out"
