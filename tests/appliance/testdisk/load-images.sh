#!/bin/sh
# Runs in the VM from the test disk (mms-test-images.service, after cloud-final, before
# mms-firstboot): loads the stand-in container images (one docker-archive, every image of the
# site) into the appliance user's rootless podman storage.
set -eu
d=/run/mms-test/disk
. "$d/test.env"   # MMS_USER, MMS_UID
say() { echo "mms-test: $*"; echo "mms-test: $*" > /dev/ttyS0 2>/dev/null || true; }
for i in $(seq 600); do [ -S "/run/user/$MMS_UID/bus" ] && break; sleep 1; done
if [ ! -S "/run/user/$MMS_UID/bus" ]; then
  say "/run/user/$MMS_UID/bus never appeared: is linger enabled for $MMS_USER?"
  exit 1
fi
cd /tmp
runuser -u "$MMS_USER" -- env XDG_RUNTIME_DIR="/run/user/$MMS_UID" \
  DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$MMS_UID/bus" \
  podman load --quiet --input "$d/standins.tar"
say "IMAGES-LOADED $(wc -l < "$d/images.list") images"
