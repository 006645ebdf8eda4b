"""Images made from a system-disk snapshot and from an instance boot new instances that
hold the files the first guest wrote (sha256 checked)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_disk_snapshots import region, sh, wait_snapshot, wait_until, write_file  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def boot(cloud, region, name: str, image_id: str) -> dict:  # noqa: F811
    inst = cloud.post("/instances", {
        "name": name, "instance_type": "ecs.t1.nano", "image_id": image_id,
        "vswitch_id": region["vswitch"]["id"], "security_group_ids": [region["sg"]["id"]],
        "key_pair_id": region["keypair"]["id"], "hostname": name})
    inst = cloud.wait_status(f"/instances/{inst['id']}", {"Running"}, timeout=180)
    sh(cloud, region, inst, "true")
    return inst


def test_image_from_system_disk_snapshot_and_from_instance_boot_with_the_file(
        cloud, region, no_leaks):  # noqa: F811
    first = boot(cloud, region, "img-src", region["image"]["id"])
    file_sum = write_file(cloud, region, first)
    system_disk = next(d for d in first["disks"] if d["role"] == "system")
    snap = wait_snapshot(cloud, cloud.post("/snapshots", {"disk_id": system_disk["id"]}))

    # from the snapshot, through the CLI; the guest keeps running meanwhile
    image = json.loads(cloud.cli("image", "create", "from-snap", "--snapshot", snap["id"],
                                 "--wait", "--timeout", "300", "-o", "json").stdout)
    assert image["status"] == "Available" and image["source"] == f"snapshot:{snap['id']}"
    assert image["min_disk_gib"] >= region["image"]["min_disk_gib"]
    # from the instance: a snapshot of its system disk is taken, kept and exported
    by_inst = cloud.post("/images", {"name": "from-inst", "instance_id": first["id"]})
    by_inst = cloud.wait_status(f"/images/{by_inst['id']}", {"Available"}, timeout=300)
    inst_snap_id = by_inst["source"].removeprefix("snapshot:")
    assert cloud.get(f"/snapshots/{inst_snap_id}")["disk_id"] == system_disk["id"]
    # nothing the export wrote stays on the host
    state = cloud.host_of(first).agent_state_dir
    assert not (state / "exports").exists() or not list((state / "exports").iterdir())

    # the first instance, its disk and snapshot can go: images stand alone (flattened)
    cloud.delete(f"/instances/{first['id']}", force="true")
    cloud.wait_gone(f"/instances/{first['id']}")
    cloud.delete(f"/snapshots/{snap['id']}")
    cloud.delete(f"/snapshots/{inst_snap_id}")

    second = boot(cloud, region, "img-copy", image["id"])
    assert sh(cloud, region, second, "sha256sum /root/pattern").split()[0] == file_sum
    system2 = next(d for d in second["disks"] if d["role"] == "system")
    assert cloud.get(f"/disks/{system2['id']}")["chain_depth"] == 2  # overlay + cached image
    refused = cloud.request("DELETE", f"/images/{image['id']}", ok=False)
    assert refused["code"] == "DependencyViolation.Instance"

    cloud.delete(f"/instances/{second['id']}", force="true")
    cloud.wait_gone(f"/instances/{second['id']}")
    cloud.delete(f"/images/{image['id']}")
    cloud.delete(f"/images/{by_inst['id']}")
    wait_until("no snapshot holder left",
               lambda: not (state / "snapshots").exists()
               or not list((state / "snapshots").iterdir()), timeout=60)
