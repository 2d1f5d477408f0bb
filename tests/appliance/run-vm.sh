#!/usr/bin/env bash
# Boots the appliance test VM once, in the background, and returns at once.
#
#   usage: run-vm.sh IMAGE_DIR SEED_ISO TEST_ISO RUN_DIR SSH_PORT
#   writes RUN_DIR/{overlay.qcow2, serial.log, qemu.out, qemu.pid, accel}
#
# QEMU TCG (software emulation) by default: on these machines /dev/kvm is a PVM hypervisor that
# cannot run a stock Debian kernel (reference/appliance-vm/README.md §6). MMS_APPLIANCE_ACCEL=kvm
# uses KVM only after kvm-probe.sh has shown it boots; MMS_APPLIANCE_ACCEL=tcg forces TCG.
# qemu always runs under `timeout` (a KVM internal error pauses qemu forever) and has a
# throw-away copy-on-write overlay, so the cached base image stays pristine.
# Env: MMS_APPLIANCE_VM_TIMEOUT (s, default 1500), MMS_APPLIANCE_MEM (MiB, 3072), MMS_APPLIANCE_CPUS (2).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 5 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
img=$(cd "$1" && pwd) seed=$(realpath "$2") testdisk=$(realpath "$3") run=$4 port=$5
for t in qemu-system-x86_64 qemu-img timeout; do
  command -v "$t" >/dev/null || { echo "run-vm: $t missing; run scripts/setup-test-env.sh" >&2; exit 1; }
done
mkdir -p "$run"
rm -f "$run/overlay.qcow2" "$run/serial.log" "$run/qemu.out" "$run/qemu.pid"
qemu-img create -q -f qcow2 -b "$img/rootfs.raw" -F raw "$run/overlay.qcow2" 8G

accel=tcg,thread=multi cpu=max
case "${MMS_APPLIANCE_ACCEL:-tcg}" in
  tcg) ;;
  kvm|auto)
    if bash "$here/kvm-probe.sh" "$img" "$run" >&2; then accel=kvm cpu=host
    elif [ "${MMS_APPLIANCE_ACCEL}" = kvm ]; then echo "run-vm: KVM requested but it cannot boot the kernel here" >&2; exit 1
    fi ;;
  *) echo "run-vm: MMS_APPLIANCE_ACCEL must be tcg, kvm or auto" >&2; exit 2 ;;
esac
echo "$accel" > "$run/accel"

setsid timeout --kill-after=10 "${MMS_APPLIANCE_VM_TIMEOUT:-1500}" \
  qemu-system-x86_64 -machine q35 -accel "$accel" -cpu "$cpu" \
  -m "${MMS_APPLIANCE_MEM:-3072}" -smp "${MMS_APPLIANCE_CPUS:-2}" \
  -nographic -monitor none -serial file:"$run/serial.log" -no-reboot \
  -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 systemd.show_status=1 net.ifnames=0" \
  -drive file="$run/overlay.qcow2",if=virtio,format=qcow2,discard=unmap \
  -drive file="$seed",media=cdrom,readonly=on,if=none,id=seed -device ide-cd,drive=seed,bus=ide.0 \
  -drive file="$testdisk",media=cdrom,readonly=on,if=none,id=test -device ide-cd,drive=test,bus=ide.1 \
  -netdev user,id=n0,hostfwd=tcp:127.0.0.1:"$port"-:22 -device virtio-net-pci,netdev=n0 \
  -device virtio-serial -chardev socket,path="$run/qga.sock",server=on,wait=off,id=qga0 \
  -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0 \
  -object rng-random,filename=/dev/urandom,id=rng0 -device virtio-rng-pci,rng=rng0 \
  </dev/null >"$run/qemu.out" 2>&1 &
echo $! > "$run/qemu.pid"
echo "run-vm: qemu ($accel) pid $(cat "$run/qemu.pid"), serial $run/serial.log, ssh 127.0.0.1:$port" >&2
