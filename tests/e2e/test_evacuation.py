"""Evacuating a dead host end to end, with a real guest on a 2-host rig.

A tiny guest runs on h1 and a file is written in it. Then h1 "dies": its agent stops
and its guest is powered off under it (a power loss; the domain stays defined there).
Once h1 is Down, bad input changes nothing (no data-loss acknowledgement; a live host),
and `miniecs host evacuate h1 --accept-data-loss --wait` rebuilds the guest on h2: it
answers SSH on the same IP with the same hostname, without the file (made again from its
image). A detached data disk on h1, with a snapshot, is made again empty on h2 and
is Available there; its snapshot is lost. When h1's agent starts again, h1 stays in
maintenance and its agent removes the old domain and disk files: nothing of the guest
or the disk is left there.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import TINY_IMAGE
from tests.rig.leaks import snapshot, wait_no_leaks

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

RIG_HOSTS = 2
HEARTBEAT_TIMEOUT_S = 24  # agents report at least every 10 s; slack for a loaded machine
GATEWAY = "10.34.1.1"


@pytest.fixture(scope="module", autouse=True)
def _heartbeat_timeout():
    """A shorter heartbeat timeout for this module's controller (set before it starts)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MINIECS_HEARTBEAT_TIMEOUT_S", str(HEARTBEAT_TIMEOUT_S))
    yield
    mp.undo()


def _ssh(cloud, key_file, inst: dict, command: str, timeout: float = 180.0) -> str:
    proc = cloud.ssh(cloud.get(f"/instances/{inst['id']}"), command, key_file, timeout=timeout)
    assert proc.returncode == 0, f"{command!r}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def _disk_files(host, disk_id: str) -> list[str]:
    """The files of the disk in the host's store (the disk itself, or a snapshot holder)."""
    return sorted(str(p) for sub in ("disks", "snapshots")
                  for p in (host.agent_state_dir / sub).rglob(f"*{disk_id}*"))


def test_a_dead_hosts_guest_is_rebuilt_on_the_other_host(cloud):
    image = json.loads(cloud.cli("image", "import", "tiny", "--file", str(TINY_IMAGE),
                                 "--wait", "-o", "json").stdout)
    key_file = cloud.path / "ev-key.pem"
    keypair = cloud.post("/key-pairs", {"name": "ev-key"})
    key_file.write_text(keypair["private_key"])
    key_file.chmod(0o600)
    vpc = cloud.post("/vpcs", {"name": "ev-vpc", "cidr_block": "10.34.0.0/16"})
    vsw = cloud.post("/vswitches", {"name": "ev-vsw", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                    "cidr_block": "10.34.1.0/24"})
    cloud.post("/security-groups", {"name": "ev-sg", "vpc_id": vpc["id"]})
    cloud.cli("sg", "rule", "add", "ev-sg", "--protocol", "tcp", "--port", "22/22",
              "--peer", f"{GATEWAY}/32", "--description", "ssh from the router")
    baseline = snapshot(cloud.rig)
    h1, h2 = cloud.rig.hosts["h1"], cloud.rig.hosts["h2"]
    cloud.cli("host", "maintenance", "h2", "--on")  # the guest lands on h1
    made = json.loads(cloud.cli(
        "instance", "create", "phoenix", "--type", "ecs.t1.nano", "--image", image["id"],
        "--vswitch", "ev-vsw", "--sg", "ev-sg", "--keypair", "ev-key", "--hostname",
        "phoenix", "--wait", "-o", "json").stdout)
    spare = spare_snap = None
    try:
        assert cloud.host_of(made).name == "h1"
        spare = json.loads(cloud.cli("disk", "create", "--name", "spare", "--size", "1",
                                     "--host", made["host_id"], "--wait", "-o", "json").stdout)
        spare_snap = json.loads(cloud.cli("snapshot", "create", spare["id"], "--wait",
                                          "-o", "json").stdout)
        assert spare_snap["status"] == "accomplished"
        cloud.cli("host", "maintenance", "h2", "--off")
        _ssh(cloud, key_file, made, "echo before > /root/marker && sync")
        assert _ssh(cloud, key_file, made, "cat /root/marker").strip() == "before"

        # h1 dies: its agent stops and its guest loses power (the domain stays defined).
        h1.stop_agent()
        cloud.rig.save()
        h1.virsh("destroy", made["id"])
        h1_id = made["host_id"]
        deadline = time.monotonic() + HEARTBEAT_TIMEOUT_S * 2 + 30
        while cloud.get(f"/hosts/{h1_id}")["state"] != "down":
            assert time.monotonic() < deadline, "h1 was not marked down"
            time.sleep(1)

        # Bad input: nothing changes.
        refused = cloud.cli("host", "evacuate", "h1", check=False)
        assert refused.returncode != 0 and "MissingParameter.AcceptDataLoss" in refused.stderr
        live = cloud.cli("host", "evacuate", "h2", "--accept-data-loss", check=False)
        assert live.returncode != 0 and "IncorrectHostStatus.NotDown" in live.stderr
        assert cloud.get(f"/instances/{made['id']}")["host_id"] == h1_id

        started = time.monotonic()
        out = json.loads(cloud.cli("host", "evacuate", "h1", "--accept-data-loss", "--wait",
                                   "-o", "json").stdout)
        took = time.monotonic() - started
        h2_id = next(h["id"] for h in cloud.get("/hosts")["items"] if h["name"] == "h2")
        assert out["evacuated"] == {made["id"]: h2_id} and out["done"] is True
        assert out["disks_remade"] == {spare["id"]: h2_id}
        assert out["snapshots_lost"] == [spare_snap["id"]]
        remade = cloud.get(f"/disks/{spare['id']}")  # --wait waited for it
        assert (remade["status"], remade["host_id"]) == ("Available", h2_id)
        assert _disk_files(h2, spare["id"])  # made by h2's agent
        assert _disk_files(h1, spare["id"])  # h1's copy stays until its agent returns
        now = cloud.get(f"/instances/{made['id']}")
        assert now["status"] == "Running" and now["host_id"] == h2_id
        assert (now["private_ip_address"], now["mac_address"]) == \
            (made["private_ip_address"], made["mac_address"])
        print(f"evacuation: API call to Running on h2 in {took:.1f} s")
        # Same address and hostname on h2; the file is gone with h1's disk.
        assert _ssh(cloud, key_file, now, "hostname").strip() == "phoenix"
        assert _ssh(cloud, key_file, now, "test -e /root/marker && echo kept || echo gone"
                    ).strip() == "gone"
        assert h2.virsh("domstate", made["id"]).stdout.strip() == "running"

        # h1 comes back: in maintenance, and its agent removes the old copy.
        cloud.start_agent(h1)
        deadline = time.monotonic() + 120
        while (h1_state := cloud.get(f"/hosts/{h1_id}")["state"]) != "maintenance" or \
                h1.virsh("list", "--all", "--name").stdout.split() or \
                _disk_files(h1, spare["id"]):
            assert time.monotonic() < deadline, \
                f"h1 {h1_state}, domains {h1.virsh('list', '--all', '--name').stdout.split()}" \
                f", files {_disk_files(h1, spare['id'])}"
            time.sleep(1)
        assert cloud.get(f"/instances/{made['id']}")["host_id"] == h2_id
    finally:
        if not cloud.agent_alive(h1):
            cloud.start_agent(h1)
        cloud.request("DELETE", f"/instances/{made['id']}", ok=False, force="true")
        cloud.wait_gone(f"/instances/{made['id']}")
        if spare_snap is not None:
            cloud.request("DELETE", f"/snapshots/{spare_snap['id']}", ok=False)
        if spare is not None:
            cloud.request("DELETE", f"/disks/{spare['id']}", ok=False)
            cloud.wait_gone(f"/disks/{spare['id']}")
        for h in cloud.get("/hosts")["items"]:
            cloud.request("POST", f"/hosts/{h['id']}/maintenance", ok=False, on="false")
    wait_no_leaks(cloud.rig, baseline, timeout=90)
