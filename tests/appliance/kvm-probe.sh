#!/usr/bin/env bash
# Does KVM really boot the test image's kernel here? (reference/appliance-vm/README.md §6: the
# /dev/kvm of these CI machines is a PVM hypervisor that fails in its instruction emulator.)
# Boots the kernel with KVM until the root file system is mounted; exit 0 only if that happens
# within 90 s without a "KVM internal error".
#   usage: kvm-probe.sh IMAGE_DIR WORK_DIR
set -euo pipefail
img=$1 work=$2
[ -w /dev/kvm ] || { echo "kvm-probe: /dev/kvm not usable" >&2; exit 1; }
mkdir -p "$work"
log=$work/kvm-probe.log
rm -f "$log"
timeout --kill-after=5 90 qemu-system-x86_64 -machine q35 -accel kvm -cpu host -m 1024 -smp 1 \
  -nographic -monitor none -serial file:"$log" -no-reboot \
  -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
  -append "console=ttyS0 panic=-1 rdinit=/bin/true" </dev/null >"$work/kvm-probe.out" 2>&1 &
pid=$!
for _ in $(seq 180); do
  if grep -aq "KVM internal error" "$work/kvm-probe.out" 2>/dev/null; then kill "$pid" 2>/dev/null; break; fi
  if grep -aqE "Run /bin/true as init|Kernel panic" "$log" 2>/dev/null; then
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    grep -aq "Run /bin/true as init" "$log" && { echo "kvm-probe: KVM boots the kernel" >&2; exit 0; }
    break
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.5
done
kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
echo "kvm-probe: KVM cannot boot the kernel here; using TCG ($(grep -a -m1 'KVM internal error' "$work/kvm-probe.out" 2>/dev/null || echo 'no kernel start seen'))" >&2
exit 1
