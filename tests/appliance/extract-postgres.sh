#!/usr/bin/env bash
# Packs PostgreSQL 17 from a built trixie rootfs into a tarball that becomes (together with the
# stand-in program) the Immich database stand-in container image: server and client binaries,
# their data files, timezone data and every shared library they load (found with ldd inside
# the rootfs). The JIT provider (llvmjit, ~100 MB of LLVM) is left out; the stand-in runs jit=off.
#   usage: extract-postgres.sh ROOTFS OUT.tar
set -euo pipefail
root=$1 out=$2
pg=/usr/lib/postgresql/17
[ -x "$root$pg/bin/postgres" ] || { echo "extract-postgres: $root$pg/bin/postgres missing" >&2; exit 1; }
stage=$(mktemp -d "$(dirname "$(realpath -m "$out")")/pg-stage.XXXXXX")   # not /tmp: shared, cleaned by other jobs
trap 'rm -rf "$stage"' EXIT
copy() { mkdir -p "$stage$(dirname "$1")"; cp -a "$root$1" "$stage$1"; }
# usrmerge: /lib, /lib64, /bin, /sbin are links into /usr (made first so copies land under /usr)
mkdir -p "$stage/usr"
for d in lib lib64 bin sbin; do [ -L "$root/$d" ] && mkdir -p "$stage/usr/$d" && ln -s "usr/$d" "$stage/$d"; done
elfs=$(cd "$root" && find ".$pg/bin" ".$pg/lib" -type f \( -perm -u+x -o -name '*.so' \) ! -name 'llvmjit*' ! -path '*/bitcode/*' | sed 's|^\.||')
for f in $elfs; do copy "$f"; done
( cd "$root" && find ".$pg/lib" -type f ! -name 'llvmjit*' ! -path '*/bitcode/*' | sed 's|^\.||' ) | while read -r f; do copy "$f"; done
copy /usr/share/postgresql/17
copy /usr/share/zoneinfo
libs=$(for f in $elfs; do chroot "$root" ldd "$f" 2>/dev/null || true; done \
  | awk '/=> \// {print $3} /^\t\/lib|^\t\/usr/ {print $1}' | sort -u)
for l in $libs; do
  real=$(chroot "$root" readlink -f "$l")
  copy "$real"
  [ -e "$stage$l" ] || { mkdir -p "$stage$(dirname "$l")"; ln -s "$real" "$stage$l"; }
done
du -sh "$stage"
tar --numeric-owner --owner=0 --group=0 -C "$stage" -cf "$out" .
ls -la "$out"
