"""Slow: a Debian 12 guest with real cloud-init, booted under TCG through miniecs.

The image comes from images/build_debian.py (`make image-debian`). The
instance is launched like any other; real cloud-init reads miniecs's NoCloud
seed and must apply the hostname, the key pair (SSH login as Debian's default
user works) and the static network (address, MTU, default route) from it.

    make image-debian
    flock /tmp/miniecs-guests.lock .venv/bin/python -m pytest -m slow \
        tests/e2e/test_debian_cloudinit.py

MINIECS_DEBIAN_IMAGE=path uses another image.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import PROJECT

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

DEBIAN_IMAGE = Path(os.environ.get("MINIECS_DEBIAN_IMAGE",
                                   PROJECT / "images/build/debian-12.qcow2"))
BOOT_TIMEOUT = float(os.environ.get("MINIECS_DEBIAN_BOOT_TIMEOUT", "900"))


@pytest.fixture(scope="module")
def debian(cloud):
    if not DEBIAN_IMAGE.exists():
        pytest.skip(f"{DEBIAN_IMAGE} missing (run `make image-debian`)")
    t0 = time.monotonic()
    image = json.loads(cloud.cli("image", "import", "debian-12", "--file", str(DEBIAN_IMAGE),
                                 "--wait", "-o", "json").stdout)
    assert image["status"] == "Available"
    print(f"image import: {time.monotonic() - t0:.0f}s")
    return image


def test_real_cloud_init_applies_hostname_key_and_static_network(cloud, debian):
    keypair = cloud.post("/key-pairs", {"name": "debian-key"})
    key_file = cloud.path / "debian-key.pem"
    key_file.write_text(keypair["private_key"])
    key_file.chmod(0o600)
    vpc = cloud.post("/vpcs", {"name": "deb-vpc", "cidr_block": "10.40.0.0/16"})
    vsw = cloud.post("/vswitches", {"name": "deb-vsw", "vpc_id": vpc["id"],
                                    "zone_id": "zone-a", "cidr_block": "10.40.1.0/24"})
    sg = cloud.post("/security-groups", {"name": "deb-sg", "vpc_id": vpc["id"]})
    cloud.post(f"/security-groups/{sg['id']}/rules",
               {"direction": "ingress", "protocol": "tcp", "port_range": "22/22",
                "peer_cidr": "10.40.1.1/32"})
    t0 = time.monotonic()
    inst = cloud.post("/instances", {
        "name": "deb-1", "instance_type": "ecs.t1.small", "image_id": debian["id"],
        "vswitch_id": vsw["id"], "security_group_ids": [sg["id"]],
        "key_pair_id": keypair["id"], "hostname": "debian-one"})
    inst = cloud.wait_status(f"/instances/{inst['id']}", {"Running"}, timeout=300)
    # Debian's cloud-init gives the key pair to its default user, `debian`
    # result.json appears when cloud-init's last stage has finished, with or without errors
    command = ("hostname; timeout 900 sh -c 'until [ -e /run/cloud-init/result.json ]; do "
               "sleep 1; done'; cloud-init status; "
               "ip -4 -o addr show eth0; cat /sys/class/net/eth0/mtu; ip -4 route show default; "
               "sudo -n cat /run/cloud-init/result.json")
    proc = cloud_ssh(cloud, inst, key_file, command)
    booted = time.monotonic() - t0
    console = cloud.cli("instance", "console", inst["id"], check=False).stdout
    assert proc.returncode == 0, f"{proc.stderr}\nconsole:\n{console[-4000:]}"
    print(f"boot to SSH with cloud-init done: {booted:.0f}s")
    lines = proc.stdout.splitlines()
    result = json.loads("\n".join(lines[5:]))
    assert result["v1"]["errors"] == [], proc.stdout
    assert lines[0] == "debian-one", proc.stdout
    assert lines[1] == "status: done", proc.stdout
    assert f"inet {inst['private_ip_address']}/24" in lines[2], proc.stdout
    assert lines[3] == "1450", proc.stdout  # the seed's MTU (guest MTU below VXLAN overhead)
    assert lines[4].startswith("default via 10.40.1.1 dev eth0"), proc.stdout
    assert result["v1"]["datasource"].startswith("DataSourceNoCloud")
    cloud.delete(f"/instances/{inst['id']}", force="true")
    cloud.wait_gone(f"/instances/{inst['id']}")


def cloud_ssh(cloud, inst: dict, key_file: Path, command: str):
    import subprocess
    import sys

    ns = cloud.router_netns(inst)
    return subprocess.run(
        ["nsenter", f"--net={ns}", "--", sys.executable, "-m", "tests.rig.ssh",
         "--host", inst["private_ip_address"], "--key", str(key_file), "--user", "debian",
         "--cmd", command, "--timeout", str(BOOT_TIMEOUT)],
        cwd=PROJECT, capture_output=True, text=True, timeout=BOOT_TIMEOUT + 120)
