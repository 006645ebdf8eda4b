"""A disk from a snapshot held on another host: the snapshot's host exports it into the
store as a hidden transfer image, the target host downloads it (only that host may) and
makes the disk; then the transfer is removed. A failed export puts the disk in Error with
the reason; deleting the disk first cancels the transfer."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from tests.controller_factories import region  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img missing")


def report(region, agent, **fields) -> None:  # noqa: F811
    r = region.client.post("/api/v1/agent/report", headers=agent.headers, json={
        "host_id": agent.host_id, "generation_applied": agent.seen,
        "generation_seen": agent.seen, **fields})
    assert r.status_code == 204, r.text


@pytest.fixture
def two_hosts(region, tmp_path):  # noqa: F811
    a, b = region.register_host("hv-a"), region.register_host("hv-b")
    disk = region.ok("POST", "/disks", {"size_gib": 1, "host_id": a.host_id})
    a.spec()
    report(region, a, disks=[{"id": disk["id"], "size_bytes": 1 << 30}])
    snap = region.ok("POST", "/snapshots", {"disk_id": disk["id"]})
    a.spec()
    report(region, a, snapshots=[{"id": snap["id"], "state": "accomplished"}])
    qcow2 = tmp_path / "flat.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), "1G"], check=True)
    return a, b, snap, qcow2.read_bytes()


def upload(region, agent, url: str, data: bytes):  # noqa: F811
    return region.client.put(url, content=data, headers={
        **agent.headers, "X-Content-SHA256": hashlib.sha256(data).hexdigest()})


def test_disk_from_a_snapshot_on_another_host(region, two_hosts):  # noqa: F811
    a, b, snap, data = two_hosts
    disk = region.ok("POST", "/disks", {"snapshot_id": snap["id"], "host_id": b.host_id,
                                        "size_gib": 2})
    assert (disk["status"], disk["host_id"]) == ("Creating", b.host_id)
    [op] = a.spec()["storage_operations"]
    assert (op["kind"], op["snapshot_id"]) == ("export_snapshot", snap["id"])
    image_id = op["upload_url"].split("/")[-2]
    assert region.items("/images") == []  # the transfer image is internal
    assert region.call("GET", f"/images/{image_id}").status_code == 404
    assert region.call("DELETE", f"/images/{image_id}").status_code == 404
    [spec_disk] = b.spec()["disks"]
    assert spec_disk["source_snapshot_id"] == snap["id"] and spec_disk["source_image"] is None
    assert region.client.get(f"/api/v1/agent/images/{image_id}/data",
                             headers=b.headers).status_code == 404  # not in the store yet

    assert upload(region, a, op["upload_url"], data).status_code == 200
    assert a.spec()["storage_operations"] == []
    [spec_disk] = b.spec()["disks"]
    src = spec_disk["source_image"]
    assert src["sha256"] == hashlib.sha256(data).hexdigest() and src["id"] == image_id
    got = region.client.get(src["url"], headers=b.headers)
    assert got.status_code == 200 and got.content == data
    # only the target host may fetch it
    assert region.client.get(src["url"], headers=a.headers).status_code == 404

    report(region, b, disks=[{"id": disk["id"], "size_bytes": 2 << 30}])
    assert region.ok("GET", f"/disks/{disk['id']}")["status"] == "Available"
    assert region.call("GET", f"/images/{image_id}").status_code == 404
    assert [p for p in region.settings.effective_image_store_dir.iterdir()] == []
    assert b.spec()["disks"][0]["source_image"] is None


def test_failed_export_puts_the_disk_in_error_and_delete_cancels(region, two_hosts):  # noqa: F811
    a, b, snap, _ = two_hosts
    disk = region.ok("POST", "/disks", {"snapshot_id": snap["id"], "host_id": b.host_id})
    [op] = a.spec()["storage_operations"]
    report(region, a, storage_operations=[{"id": op["id"], "ok": False,
                                           "message": "qemu-img convert: No space left on device"}])
    got = region.ok("GET", f"/disks/{disk['id']}")
    assert got["status"] == "Error"
    assert got["status_reason"] == (f"copying snapshot {snap['id']} from its host failed: "
                                    "InvalidImage.ExportFailed: qemu-img convert: No space left "
                                    "on device")
    assert region.call("GET", f"/images/{op['upload_url'].split('/')[-2]}").status_code == 404

    # deleted before the copy arrives: the export leaves the snapshot host's spec
    other = region.ok("POST", "/disks", {"snapshot_id": snap["id"], "host_id": b.host_id})
    [op] = a.spec()["storage_operations"]
    assert region.call("DELETE", f"/disks/{other['id']}").status_code in (200, 202, 204)
    assert a.spec()["storage_operations"] == []
    assert region.call("GET", f"/images/{op['upload_url'].split('/')[-2]}").status_code == 404
    assert region.client.put(op["upload_url"], content=b"x", headers={
        **a.headers, "X-Content-SHA256": "0" * 64}).status_code == 404
