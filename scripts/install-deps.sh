#!/bin/sh
# Install everything miniecs needs on a Debian 12 machine, as root. Idempotent:
# a second run with everything present costs a second.
set -eu
cd "$(dirname "$0")/.."

APT_PACKAGES="
libvirt-daemon-system libvirt-clients libvirt-dev pkg-config gcc python3-dev python3-venv
qemu-system-x86 qemu-utils
iproute2 iptables ipset bridge-utils conntrack iputils-ping dnsmasq-base
libnftables1
xorriso busybox-static dropbear-bin linux-image-cloud-amd64 extlinux syslinux-common
dosfstools e2fsprogs fdisk kmod cpio xz-utils zstd
virtinst postgresql openssh-client libxml2-utils
systemd openssh-server debootstrap vagrant vagrant-libvirt
"

missing=""
for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "==> apt: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "==> virtualenv .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.miniecs-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "==> pip: miniecs and its test dependencies"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch "$stamp"
fi
