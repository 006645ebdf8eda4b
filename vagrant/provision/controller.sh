#!/bin/sh
# The controller: miniecs from the synced source tree, its systemd unit, a region, and
# every hypervisor added with `miniecs host add` (host keys checked against the keys
# Vagrant generated). Env: CONTROLLER_IP, HYPERVISORS ("hv1=ADDR hv2=ADDR ...").
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# libvirt-dev, gcc, pkg-config, python3-dev: to build the libvirt-python wheel for the hosts
apt-get install -y -q --no-install-recommends \
    python3 python3-venv python3-dev gcc pkg-config libvirt-dev openssh-client rsync

PREFIX=/opt/miniecs
[ -x $PREFIX/venv/bin/python ] || python3 -m venv $PREFIX/venv
$PREFIX/venv/bin/pip install -q --upgrade pip
$PREFIX/venv/bin/pip install -q -e /vagrant  # editable: `host add` builds wheels from the tree
ln -sf $PREFIX/venv/bin/miniecs $PREFIX/venv/bin/miniecs-controller /usr/local/bin/

miniecs-controller install-unit --listen "$CONTROLLER_IP:8080"
install -d -o miniecs -g miniecs -m 0700 /var/lib/miniecs-controller
if [ ! -f /root/miniecs-init.json ]; then
    runuser -u miniecs -- env MINIECS_STATE_DIR=/var/lib/miniecs-controller \
        $PREFIX/venv/bin/miniecs-controller init --json > /root/miniecs-init.json.tmp
    mv /root/miniecs-init.json.tmp /root/miniecs-init.json
    chmod 0600 /root/miniecs-init.json
fi
miniecs-controller install-unit --listen "$CONTROLLER_IP:8080" --now
token=$(python3 -c 'import json; print(json.load(open("/root/miniecs-init.json"))["admin_token"])')
miniecs configure --endpoint "http://$CONTROLLER_IP:8080" --token "$token"
for _ in $(seq 60); do
    miniecs zone list >/dev/null 2>&1 && break
    sleep 1
done

install -d -m 0700 /root/.ssh
install -m 0600 /tmp/miniecs-keys/operator /root/.ssh/miniecs_operator
known=/root/.ssh/miniecs_known_hosts
: > $known
for entry in $HYPERVISORS; do
    name=${entry%%=*}
    addr=${entry#*=}
    printf '%s %s\n' "$addr" "$(cut -d' ' -f1,2 /tmp/miniecs-keys/${name}_host_ed25519_key.pub)" >> $known
done
rm -rf /tmp/miniecs-keys

# the source tree is on this machine: `host add` builds the wheels from it
cd /vagrant
for entry in $HYPERVISORS; do
    name=${entry%%=*}
    addr=${entry#*=}
    $PREFIX/venv/bin/miniecs host add "root@$addr" --name "$name" --zone zone-a \
        --identity /root/.ssh/miniecs_operator --known-hosts $known \
        --controller-url "http://$CONTROLLER_IP:8080"
done
miniecs host list
