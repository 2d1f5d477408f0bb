#!/usr/bin/env bash
# Builds the test disk of the appliance VM test: an ISO 9660 image labelled MMSTEST that the
# test image's mms-test-early/-images units mount (see image/etc/systemd/system/). It holds
#   standins.tar    a docker-archive with one image per line of IMAGES_LIST ("REF ROLE"):
#                   layer 1 mms-standin (+ curl, redis-cli, valkey-cli, immich-healthcheck as
#                   links to it), busybox, the libraries; layer 2 (postgres role only)
#                   PostgreSQL 17 from the base image build. CMD per role.
#   test.env        MMS_USER, MMS_UID: whose podman storage gets the images;
#                   MMS_TEST_BREAK (env of this script): 'firstboot' makes tailscale up fail
#   tailscale       the fake Tailscale CLI
#   root_authorized_keys, early.sh, load-images.sh
#
#   usage: make-test-disk.sh IMAGE_DIR STANDIN_BIN IMAGES_LIST PUBKEY_FILE USER UID OUT.iso
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 7 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
img=$1 standin=$2 images=$3 pubkey=$4 user=$5 uid=$6 out=$7
for f in "$img/busybox" "$img/postgres-rootfs.tar" "$standin" "$images" "$pubkey"; do
  [ -e "$f" ] || { echo "make-test-disk: $f missing" >&2; exit 1; }
done
command -v genisoimage >/dev/null || { echo "make-test-disk: genisoimage missing; run scripts/setup-test-env.sh" >&2; exit 1; }
work=$(mktemp -d "$(dirname "$(realpath -m "$out")")/test-disk.XXXXXX")   # not /tmp: shared and cleaned by other jobs
trap 'rm -rf "$work"' EXIT
r=$work/rootfs disk=$work/disk
mkdir -p "$r"/usr/{bin,lib,lib64,sbin} "$r"/usr/local/bin "$r"/etc "$r"/config "$r"/data "$r"/var/lib/postgresql "$disk"
for d in bin lib lib64 sbin; do ln -s "usr/$d" "$r/$d"; done
install -d -m 1777 "$r/tmp"
cp "$standin" "$r/usr/local/bin/mms-standin"
strip "$r/usr/local/bin/mms-standin" 2>/dev/null || true
for tool in curl redis-cli valkey-cli immich-healthcheck; do ln -s mms-standin "$r/usr/local/bin/$tool"; done
cp "$img/busybox" "$r/usr/bin/busybox"
for a in sh ash wget ls cat ps sleep echo mkdir rm cp mv chmod chown id env test grep sed head tail true false nc du df find; do
  ln -s busybox "$r/usr/bin/$a"
done
# the shared libraries mms-standin needs, from this host (glibc >= 2.36 runs it; the postgres
# image overrides them with trixie's newer ones, which run it too)
for lib in $(ldd "$standin" | awk '/=> \// {print $3} /^\t\/lib|^\t\/usr/ {print $1}'); do
  real=$(readlink -f "$lib")
  dest=$r/usr${real#/usr}
  mkdir -p "$(dirname "$dest")"; cp "$real" "$dest"
  base=$(basename "$lib")
  [ -e "$(dirname "$dest")/$base" ] || ln -s "$(basename "$real")" "$(dirname "$dest")/$base"
  case "$lib" in /lib64/*) [ -e "$r/usr/lib64/$base" ] || ln -s "$real" "$r/usr/lib64/$base" ;; esac
done
cat > "$r/etc/passwd" <<PW
root:x:0:0:root:/root:/bin/sh
postgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh
abc:x:911:911:linuxserver app user:/config:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PW
cat > "$r/etc/group" <<GR
root:x:0:
postgres:x:999:
abc:x:911:
nogroup:x:65534:
GR
# Two layers: the stand-in rootfs, and PostgreSQL on top of it (trixie's libraries replace
# this host's, which run mms-standin too). The postgres image's own dirs belong to uid 999 like
# in the official image.
chown -R 0:0 "$r"
layers=$work/layers
mkdir -p "$layers"
tar --numeric-owner -C "$r" -cf "$layers/base.tar" .
pg=$work/pg
mkdir -p "$pg"
tar -C "$pg" -xf "$img/postgres-rootfs.tar"
install -d -o 999 -g 999 -m 0755 "$pg/var/lib/postgresql"
install -d -o 999 -g 999 -m 0700 "$pg/var/lib/postgresql/data"
install -d -o 999 -g 999 -m 3777 "$pg/var/run/postgresql"
tar --numeric-owner -C "$pg" -cf "$layers/postgres.tar" .
# One docker-archive holding every image (podman load reads it in one go; the layers are
# stored once): manifest.json + one config per image + the layer tarballs.
arch=$work/archive
mkdir -p "$arch/base" "$arch/postgres"
mv "$layers/base.tar" "$arch/base/layer.tar"
mv "$layers/postgres.tar" "$arch/postgres/layer.tar"
base_id=sha256:$(sha256sum "$arch/base/layer.tar" | cut -d' ' -f1)
pg_id=sha256:$(sha256sum "$arch/postgres/layer.tar" | cut -d' ' -f1)
path_env='"PATH=/usr/lib/postgresql/17/bin:/usr/local/bin:/usr/bin:/bin"'
manifest="["
sep=""
while read -r ref role; do
  [ -n "$ref" ] || continue
  case "$role" in
    postgres) cmd='["/usr/local/bin/mms-standin","postgres"]'; ids="\"$base_id\",\"$pg_id\""; files='"base/layer.tar","postgres/layer.tar"' ;;
    *) cmd="[\"/usr/local/bin/mms-standin\",\"serve\",\"$role\"]"; ids="\"$base_id\""; files='"base/layer.tar"' ;;
  esac
  config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":$cmd,\"Env\":[$path_env],\"StopSignal\":\"SIGTERM\",\"Labels\":{\"org.opencontainers.image.title\":\"mms-standin $role\"}},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$ids]},\"history\":[{\"created_by\":\"tests/appliance/make-test-disk.sh ($role)\"}]}"
  cid=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
  printf '%s' "$config" > "$arch/$cid.json"
  manifest="$manifest$sep{\"Config\":\"$cid.json\",\"RepoTags\":[\"$ref\"],\"Layers\":[$files]}"
  sep=","
done < "$images"
printf '%s]' "$manifest" > "$arch/manifest.json"
tar --numeric-owner -C "$arch" -cf "$disk/standins.tar" .
cp "$images" "$disk/images.list"   # for the evidence only
printf 'MMS_USER=%s\nMMS_UID=%s\nMMS_TEST_BREAK=%s\n' "$user" "$uid" "${MMS_TEST_BREAK:-}" > "$disk/test.env"
cp "$pubkey" "$disk/root_authorized_keys"
cp "$here/testdisk/early.sh" "$here/testdisk/load-images.sh" "$here/testdisk/tailscale" "$disk/"
genisoimage -quiet -output "$out" -volid MMSTEST -joliet -rock "$disk"
ls -la "$out" >&2
