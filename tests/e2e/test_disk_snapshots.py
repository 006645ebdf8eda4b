"""Cloud disks end to end: hot-plug, snapshots, rollback, disk from snapshot, online resize —
proven in a real guest with sha256 checksums of pseudo-random data."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import TINY_IMAGE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

MIB = 1024 * 1024
GIB = 1024 * MIB


@pytest.fixture(scope="module")
def region(cloud):
    image = json.loads(cloud.cli("image", "import", "tiny", "--file", str(TINY_IMAGE),
                                 "--wait", "-o", "json").stdout)
    key_file = cloud.path / "disk-key.pem"
    keypair = cloud.post("/key-pairs", {"name": "disk-key"})
    key_file.write_text(keypair["private_key"])
    key_file.chmod(0o600)
    vpc = cloud.post("/vpcs", {"name": "disk-vpc", "cidr_block": "10.30.0.0/16"})
    vsw = cloud.post("/vswitches", {"name": "disk-vsw", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                    "cidr_block": "10.30.1.0/24"})
    sg = cloud.post("/security-groups", {"name": "disk-sg", "vpc_id": vpc["id"]})
    for direction in ("ingress", "egress"):  # SSH in from the rig (groups drop by default)
        cloud.request("POST", f"/security-groups/{sg['id']}/rules",
                      {"direction": direction, "protocol": "all", "peer_cidr": "0.0.0.0/0"},
                      ok=False)
    return {"image": image, "key_file": key_file, "keypair": keypair, "vswitch": vsw, "sg": sg}


def sh(cloud, region, inst: dict, command: str) -> str:
    proc = cloud.ssh(inst, command, region["key_file"])
    assert proc.returncode == 0, f"ssh {command!r} failed: {proc.stdout}{proc.stderr}"
    return proc.stdout


def wait_until(what: str, check, timeout: float = 60.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def wait_snapshot(cloud, snap: dict) -> dict:
    return cloud.wait_status(f"/snapshots/{snap['id']}", {"accomplished"}, timeout=60)


def wait_operation(cloud, op: dict) -> dict:
    done = wait_until("disk operation", lambda: (o := cloud.get(f"/disk-operations/{op['id']}"))
                      ["is_final"] and o)
    assert done["outcome"] == "succeeded", done
    return done


# 8 MiB of pseudo-random data at the start of /dev/vdX, and its sha256
def write_pattern(cloud, region, inst, dev: str) -> str:
    return sh(cloud, region, inst,
              f"dd if=/dev/urandom of=/dev/{dev} bs=1M count=8 2>/dev/null && sync && "
              f"dd if=/dev/{dev} bs=1M count=8 2>/dev/null | sha256sum").split()[0]


def read_pattern(cloud, region, inst, dev: str) -> str:
    return sh(cloud, region, inst,
              f"dd if=/dev/{dev} bs=1M count=8 2>/dev/null | sha256sum").split()[0]


def write_file(cloud, region, inst) -> str:
    return sh(cloud, region, inst, "dd if=/dev/urandom of=/root/pattern bs=1M count=2 2>/dev/null"
              " && sync && sha256sum /root/pattern").split()[0]


def test_data_disk_hotplug_snapshot_rollback_resize_and_disk_from_snapshot(cloud, region,
                                                                          no_leaks):
    inst = cloud.post("/instances", {
        "name": "disk-1", "instance_type": "ecs.t1.nano", "image_id": region["image"]["id"],
        "vswitch_id": region["vswitch"]["id"], "security_group_ids": [region["sg"]["id"]],
        "key_pair_id": region["keypair"]["id"], "hostname": "disk-one"})
    inst = cloud.wait_status(f"/instances/{inst['id']}", {"Running"}, timeout=120)
    iid = inst["id"]
    host = cloud.host_of(inst)
    sh(cloud, region, inst, "true")  # booted and answering

    # -- hot attach: a new disk created attached to the running instance appears as vdb
    disk = json.loads(cloud.cli("disk", "create", "--size", "1", "--instance", iid, "--name",
                                "data-1", "-o", "json").stdout)
    assert disk["status"] == "Creating" and disk["device"] == "vdb"
    disk = cloud.wait_status(f"/disks/{disk['id']}", {"In_use"}, timeout=60)
    assert disk["chain_depth"] == 1
    wait_until("vdb in the guest", lambda: sh(cloud, region, inst,
                                              "cat /sys/block/vdb/size 2>/dev/null || true").strip())
    assert int(sh(cloud, region, inst, "cat /sys/block/vdb/size")) * 512 == GIB

    # -- snapshots of the data disk and the system disk, with the guest running
    data_sum = write_pattern(cloud, region, inst, "vdb")
    file_sum = write_file(cloud, region, inst)
    system_disk = next(d for d in inst["disks"] if d["role"] == "system")
    t0 = time.monotonic()
    snap = cloud.post("/snapshots", {"disk_id": disk["id"], "name": "first"})
    snap = wait_snapshot(cloud, snap)
    api_to_accomplished = time.monotonic() - t0
    sys_snap = wait_snapshot(cloud, cloud.post("/snapshots", {"disk_id": system_disk["id"]}))
    assert api_to_accomplished < 5, api_to_accomplished
    later = wait_snapshot(cloud, cloud.post("/snapshots", {"disk_id": disk["id"],
                                                           "name": "later"}))

    # -- later writes do not touch the snapshot; rollback needs a stopped instance
    assert write_pattern(cloud, region, inst, "vdb") != data_sum
    assert write_file(cloud, region, inst) != file_sum
    refused = cloud.request("POST", f"/disks/{disk['id']}/reset", {"snapshot_id": snap["id"]},
                            ok=False)
    assert refused["code"] == "IncorrectInstanceStatus"
    refused = cloud.request("POST", f"/disks/{disk['id']}/reset",
                            {"snapshot_id": sys_snap["id"]}, ok=False)
    assert refused["code"] == "InvalidSnapshotId.NotBelongToDisk"
    cloud.post(f"/instances/{iid}/stop")
    cloud.wait_status(f"/instances/{iid}", {"Stopped"}, timeout=90)
    wait_operation(cloud, cloud.post(f"/disks/{disk['id']}/reset", {"snapshot_id": snap["id"]}))
    wait_operation(cloud, cloud.post(f"/disks/{system_disk['id']}/reset",
                                     {"snapshot_id": sys_snap["id"]}))
    cloud.post(f"/instances/{iid}/start")
    inst = cloud.wait_status(f"/instances/{iid}", {"Running"}, timeout=90)
    assert read_pattern(cloud, region, inst, "vdb") == data_sum
    assert sh(cloud, region, inst, "sha256sum /root/pattern").split()[0] == file_sum
    # every other snapshot is intact: the later one still exists and is usable
    assert cloud.get(f"/snapshots/{later['id']}")["status"] == "accomplished"

    # -- delete snapshots in any order: the middle one first, the disk is untouched
    cloud.delete(f"/snapshots/{later['id']}")
    assert read_pattern(cloud, region, inst, "vdb") == data_sum

    # -- online resize: the guest sees 2 GiB without a reboot; shrinking is refused
    boot_id = sh(cloud, region, inst, "cat /proc/sys/kernel/random/boot_id").strip()
    refused = cloud.request("POST", f"/disks/{disk['id']}/resize", {"size_gib": 0}, ok=False)
    assert "size_gib" in json.dumps(refused)
    cloud.post(f"/disks/{disk['id']}/resize", {"size_gib": 2})
    wait_until("the guest to see 2 GiB", lambda: int(sh(cloud, region, inst,
                                                          "cat /sys/block/vdb/size")) * 512
               == 2 * GIB, timeout=60)
    assert sh(cloud, region, inst, "cat /proc/sys/kernel/random/boot_id").strip() == boot_id
    refused = cloud.request("POST", f"/disks/{disk['id']}/resize", {"size_gib": 1}, ok=False)
    assert refused["code"] == "InvalidDiskSize.ShrinkNotSupported"

    # -- a disk made from the snapshot, hot-plugged as vdc, reads the pattern
    copy = cloud.post("/disks", {"snapshot_id": snap["id"], "instance_id": iid,
                                 "delete_with_instance": True})
    copy = cloud.wait_status(f"/disks/{copy['id']}", {"In_use"}, timeout=60)
    assert copy["device"] == "vdc" and copy["chain_depth"] == 1
    wait_until("vdc in the guest", lambda: sh(cloud, region, inst,
                                              "cat /sys/block/vdc/size 2>/dev/null || true").strip())
    assert read_pattern(cloud, region, inst, "vdc") == data_sum

    # -- hot detach: vdb goes away in the guest; deleting an attached disk is refused
    refused = cloud.request("DELETE", f"/disks/{copy['id']}", ok=False)
    assert refused["code"] == "IncorrectDiskStatus"
    cloud.post(f"/disks/{disk['id']}/detach")
    cloud.wait_status(f"/disks/{disk['id']}", {"Available"}, timeout=60)
    wait_until("vdb to leave the guest", lambda: sh(cloud, region, inst,
                                                    "test -e /sys/block/vdb || echo gone").strip())

    # -- clean up: instance (with its delete_with_instance copy), disk, snapshots
    cloud.delete(f"/instances/{iid}", force="true")
    cloud.wait_gone(f"/instances/{iid}")
    wait_until("the copy deleted with its instance",
               lambda: cloud.request("GET", f"/disks/{copy['id']}", ok=False).get("code")
               == "InvalidDiskId.NotFound")
    # snapshots outlive their disks
    cloud.delete(f"/disks/{disk['id']}")
    assert cloud.get(f"/snapshots/{snap['id']}")["status"] == "accomplished"
    state = host.agent_state_dir
    wait_until("the deleted disk kept as its snapshots' holder",
               lambda: (state / "snapshots" / f"{disk['id']}.qcow2").exists())
    assert (state / "snapshots" / f"{system_disk['id']}.qcow2").exists()
    cloud.delete(f"/snapshots/{snap['id']}")
    cloud.delete(f"/snapshots/{sys_snap['id']}")
    wait_until("no disk or snapshot file left",
               lambda: not [p for d in ("disks", "snapshots") if (state / d).exists()
                            for p in (state / d).iterdir()])
