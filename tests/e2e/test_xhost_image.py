"""Across hosts (2-host rig): a snapshot taken on host A reaches host B — an image made from
a system-disk snapshot boots an instance on B that holds the file the first guest wrote,
and a data disk made on B from a data-disk snapshot of A (copied through the controller's
store, sha256 verified) reads the pattern the first guest wrote (sha256)."""

from __future__ import annotations

import pytest

from tests.e2e.test_disk_snapshots import (read_pattern, region, sh, wait_snapshot,  # noqa: F401
                                           wait_until, write_file, write_pattern)
from tests.e2e.test_image_from_snapshot import boot

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

RIG_HOSTS = 2


def wait_dev(cloud, region, inst, dev: str) -> None:  # noqa: F811
    wait_until(f"{dev} in the guest", lambda: sh(
        cloud, region, inst, f"cat /sys/block/{dev}/size 2>/dev/null || true").strip(), timeout=90)


def test_snapshots_of_one_host_reach_the_other(cloud, region, no_leaks):  # noqa: F811
    hosts = sorted(cloud.get("/hosts")["items"], key=lambda h: h["name"])
    a, b = hosts[0]["id"], hosts[1]["id"]
    try:
        cloud.request("PATCH", f"/hosts/{b}", {"state": "maintenance"})
        first = boot(cloud, region, "xh-src", region["image"]["id"])
        assert first["host_id"] == a
        data = cloud.post("/disks", {"size_gib": 1, "instance_id": first["id"]})
        data = cloud.wait_status(f"/disks/{data['id']}", {"In_use"}, timeout=90)
        wait_dev(cloud, region, first, "vdb")
        data_sum = write_pattern(cloud, region, first, "vdb")
        file_sum = write_file(cloud, region, first)
        system_disk = next(d for d in first["disks"] if d["role"] == "system")
        sys_snap = wait_snapshot(cloud, cloud.post("/snapshots", {"disk_id": system_disk["id"]}))
        data_snap = wait_snapshot(cloud, cloud.post("/snapshots", {"disk_id": data["id"]}))
        image = cloud.post("/images", {"name": "xh-image", "snapshot_id": sys_snap["id"]})
        image = cloud.wait_status(f"/images/{image['id']}", {"Available"}, timeout=300)

        cloud.request("PATCH", f"/hosts/{b}", {"state": "ready"})
        cloud.request("PATCH", f"/hosts/{a}", {"state": "maintenance"})
        second = boot(cloud, region, "xh-copy", image["id"])
        assert second["host_id"] == b
        assert sh(cloud, region, second, "sha256sum /root/pattern").split()[0] == file_sum

        # a disk on host B from the data-disk snapshot held on host A
        copy = cloud.post("/disks", {"snapshot_id": data_snap["id"], "instance_id": second["id"],
                                     "delete_with_instance": True})
        assert copy["host_id"] == b
        copy = cloud.wait_status(f"/disks/{copy['id']}", {"In_use"}, timeout=300)
        wait_dev(cloud, region, second, "vdb")
        assert read_pattern(cloud, region, second, "vdb") == data_sum
        # the transfer went through the store and is gone from it
        assert [m["id"] for m in cloud.get("/images")["items"]] == [region["image"]["id"],
                                                                    image["id"]]
        assert sorted(p.name for p in (cloud.state_dir / "images").iterdir()
                      if p.is_file()) == sorted(f"{m}.qcow2" for m in
                                                (region["image"]["id"], image["id"]))
        state_b = cloud.host_of(second).agent_state_dir
        assert not [p for p in (state_b / "disks").iterdir() if p.name.startswith(".")]
    finally:
        for h in (a, b):
            cloud.request("PATCH", f"/hosts/{h}", {"state": "ready"}, ok=False)
    for inst in (first, second):
        cloud.delete(f"/instances/{inst['id']}", force="true")
    for inst in (first, second):
        cloud.wait_gone(f"/instances/{inst['id']}")
    cloud.wait_status(f"/disks/{data['id']}", {"Available"}, timeout=60)
    cloud.delete(f"/disks/{data['id']}")
    for s in (sys_snap, data_snap):
        cloud.delete(f"/snapshots/{s['id']}")
    cloud.delete(f"/images/{image['id']}")
