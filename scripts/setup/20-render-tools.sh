#!/usr/bin/env bash
# Real validators for the rendered appliance (issue 3), installed without touching the host's
# own systemd/cloud-init: trixie's cloud-init 25 (schema check), podman 5 (the quadlet generator),
# firewalld 2.3 (offline check) are `apt-get download`ed through a PRIVATE apt state for the
# trixie suite and unpacked with `dpkg -x` into $MMS_TRIXIE_TOOLS (default /opt/mms-tools/trixie).
# From bookworm: the python modules those run on, genisoimage (isoinfo), xorriso, and systemd
# (systemd-analyze 252; trixie's needs glibc >= 2.38 and does not run here).
# Idempotent: a stamp file records the package set; rerunning with the same set does nothing.
# Wrappers land in $MMS_TRIXIE_TOOLS/bin: cloud-init, quadlet, firewall-offline-cmd.
set -euo pipefail
T=${MMS_TRIXIE_TOOLS:-/opt/mms-tools/trixie}
PKGS="cloud-init podman firewalld python3-firewall"
export DEBIAN_FRONTEND=noninteractive

# --- bookworm packages (host)
apt-get install -y -qq --no-install-recommends \
  python3 python3-yaml python3-jsonschema python3-jinja2 python3-configobj python3-requests \
  python3-jsonpatch python3-netifaces python3-gi python3-dbus python3-nftables gir1.2-glib-2.0 \
  genisoimage xorriso systemd util-linux coreutils debian-archive-keyring >/dev/null

stamp="$T/.installed"
if [[ -f $stamp && "$(cat "$stamp")" == "$PKGS" && -x $T/bin/quadlet ]]; then
  echo "render tools: up to date in $T"
  exit 0
fi

# --- trixie packages, unpacked (never installed)
MIRROR=${MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
rm -rf "$T.tmp"
mkdir -p "$T.tmp"/{debs,root,bin,lists/partial,cache/archives/partial}
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR trixie main" >"$T.tmp/trixie.list"
cat >"$T.tmp/apt.conf" <<CONF
Dir::Etc::sourcelist "$T.tmp/trixie.list";
Dir::Etc::sourceparts "-";
Dir::State::Lists "$T.tmp/lists";
Dir::Cache "$T.tmp/cache";
Dir::State::status "/dev/null";
CONF
APT_CONFIG=$T.tmp/apt.conf apt-get -qq update
(cd "$T.tmp/debs" && APT_CONFIG=$T.tmp/apt.conf apt-get -qq download $PKGS)
for d in "$T.tmp"/debs/*.deb; do dpkg -x "$d" "$T.tmp/root"; done
rm -rf "$T.tmp/lists" "$T.tmp/cache" "$T.tmp/debs"

# wrappers: absolute paths to the final location
cat >"$T.tmp/bin/cloud-init" <<W
#!/bin/sh
PYTHONPATH=$T/root/usr/lib/python3/dist-packages exec /usr/bin/python3 $T/root/usr/bin/cloud-init "\$@"
W
cat >"$T.tmp/bin/quadlet" <<W
#!/bin/sh
exec $T/root/usr/libexec/podman/quadlet "\$@"
W
cat >"$T.tmp/bin/firewall-offline-cmd" <<W
#!/bin/sh
PYTHONPATH=$T/root/usr/lib/python3/dist-packages exec /usr/bin/python3 $T/root/usr/bin/firewall-offline-cmd --default-config=$T/root/usr/lib/firewalld "\$@"
W
chmod 0755 "$T.tmp"/bin/*
echo "$PKGS" >"$T.tmp/.installed"
rm -rf "$T"
mkdir -p "$(dirname "$T")"
mv "$T.tmp" "$T"
"$T/bin/quadlet" -version
"$T/bin/cloud-init" --version
echo "render tools: installed in $T"
