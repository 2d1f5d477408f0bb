#!/bin/sh
# Runs in the VM from the test disk (mms-test-images.service, after cloud-final, before
# mms-firstboot): imports the stand-in container images into the appliance user's rootless
# podman storage, one image per container of the site (images.list: "REF ROLE" per line).
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
as_user() { runuser -u "$MMS_USER" -- env XDG_RUNTIME_DIR="/run/user/$MMS_UID" DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$MMS_UID/bus" "$@"; }
while read -r ref role; do
  [ -n "$ref" ] || continue
  case "$role" in
    postgres) tar=$d/postgres.tar; cmd='["/usr/local/bin/mms-standin","postgres"]' ;;
    *) tar=$d/standin.tar; cmd="[\"/usr/local/bin/mms-standin\",\"serve\",\"$role\"]" ;;
  esac
  as_user podman import --quiet \
    --change "CMD $cmd" \
    --change "ENV PATH=/usr/lib/postgresql/17/bin:/usr/local/bin:/usr/bin:/bin" \
    --change "STOPSIGNAL SIGTERM" \
    "$tar" "$ref" >/dev/null
  say "imported $ref ($role)"
done < "$d/images.list"
say "IMAGES-LOADED"
