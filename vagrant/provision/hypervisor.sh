#!/bin/sh
# A bare Debian 12 machine made ready for `miniecs host add`: the packages the agent
# needs, the controller's key for root, and the SSH host key the controller expects.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
    libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils \
    iproute2 iptables ipset dnsmasq-base conntrack python3 python3-venv
apt-get install -y -q --no-install-recommends libnftables1  # the anti-spoofing table
systemctl enable --now libvirtd

install -d -m 0700 /root/.ssh
install -m 0600 /tmp/miniecs/operator.pub /root/.ssh/authorized_keys
install -m 0600 /tmp/miniecs/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key
install -m 0644 /tmp/miniecs/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ed25519_key.pub
printf 'PermitRootLogin prohibit-password\n' > /etc/ssh/sshd_config.d/miniecs.conf
systemctl restart ssh
rm -rf /tmp/miniecs
