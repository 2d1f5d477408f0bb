#!/bin/sh
# Runs in the VM from the test disk (mms-test-early.service, before ssh and mms-firstboot):
# the fake Tailscale CLI and the harness's root SSH key. Test scaffolding only.
set -eu
d=/run/mms-test/disk
install -m 0755 "$d/tailscale" /usr/local/bin/tailscale
install -d -m 0700 /var/lib/mms-test/tailscale
. "$d/test.env"
# MMS_APPLIANCE_BREAK=firstboot: the fake tailnet rejects the auth key, so firstboot must fail.
if [ "${MMS_TEST_BREAK:-}" = firstboot ]; then touch /var/lib/mms-test/tailscale/reject-auth-key; fi
# The harness logs in as root with its throw-away key through a file cloud-init never touches
# (cloud-init's disable_root rewrites /root/.ssh/authorized_keys entries).
install -m 0600 "$d/root_authorized_keys" /etc/ssh/mms-test-root-keys
install -d -m 0755 /etc/ssh/sshd_config.d
printf 'Match User root\n    AuthorizedKeysFile /etc/ssh/mms-test-root-keys\n' > /etc/ssh/sshd_config.d/90-mms-test.conf
echo "mms-test: early setup done"
