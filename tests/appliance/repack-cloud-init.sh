#!/usr/bin/env bash
# Downloads trixie's cloud-init .deb and rebuilds it without "Conflicts: firewalld"
# (Debian bug #1025618; the ordering cycle behind it is broken in build-image.sh).
#   usage: repack-cloud-init.sh APT_STATE_DIR MIRROR OUT_DIR
# APT_STATE_DIR is a private apt state (lists, cache) for trixie; the host's apt is not touched.
set -euo pipefail
state=$1 mirror=$2 out=$3
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$out"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" > "$state/trixie.list"
cat > "$state/apt.conf" <<CONF
Dir::Etc::sourcelist "$state/trixie.list";
Dir::Etc::sourceparts "-";
Dir::State::Lists "$state/lists";
Dir::Cache "$state/cache";
Dir::State::status "/dev/null";
Acquire::Languages "none";
CONF
export APT_CONFIG=$state/apt.conf
apt-get -qq update
work=$(mktemp -d "$out/repack.XXXXXX")   # not /tmp: shared, cleaned by other jobs
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get -qq download cloud-init)
deb=$(ls "$work"/cloud-init_*_all.deb)
dpkg-deb -R "$deb" "$work/x"
grep -q '^Conflicts:.*firewalld' "$work/x/DEBIAN/control" || echo "note: cloud-init no longer conflicts with firewalld"
sed -i -e '/^Conflicts:/s/, *firewalld//' -e '/^Conflicts:/s/firewalld, *//' -e '/^Conflicts: *firewalld *$/d' \
  -e '/^Version:/s/$/+mms1/' "$work/x/DEBIAN/control"
if grep -q '^Conflicts:.*firewalld' "$work/x/DEBIAN/control"; then
  echo "repack-cloud-init: could not remove firewalld from Conflicts" >&2
  exit 1
fi
version=$(sed -n 's/^Version: //p' "$work/x/DEBIAN/control")
dpkg-deb -b -Zxz "$work/x" "$out/cloud-init_${version}_all.deb"
grep -E '^(Version|Conflicts):' "$work/x/DEBIAN/control"
