"""Images from snapshots: the controller side (export operation in the host spec, the
authenticated sha256-verified upload, atomic publish, failure paths)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from tests.controller_factories import region  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img missing")


@pytest.fixture
def exported(region, tmp_path):  # noqa: F811
    """A host with a data disk and an accomplished snapshot of it; a qcow2 to upload."""
    agent = region.register_host()
    disk = region.ok("POST", "/disks", {"size_gib": 1, "zone_id": "zone-a"})
    agent.spec()
    region.client.post("/api/v1/agent/report", headers=agent.headers, json={
        "host_id": agent.host_id, "generation_applied": agent.seen, "generation_seen": agent.seen,
        "disks": [{"id": disk["id"], "size_bytes": 1 << 30}]})
    snap = region.ok("POST", "/snapshots", {"disk_id": disk["id"]})
    agent.spec()
    region.client.post("/api/v1/agent/report", headers=agent.headers, json={
        "host_id": agent.host_id, "generation_applied": agent.seen, "generation_seen": agent.seen,
        "snapshots": [{"id": snap["id"], "state": "accomplished"}]})
    assert region.ok("GET", f"/snapshots/{snap['id']}")["status"] == "accomplished"
    qcow2 = tmp_path / "export.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), "1G"], check=True)
    return agent, disk, snap, qcow2


def upload(region, agent, image_id, data: bytes, sha: str | None = None):  # noqa: F811
    return region.client.put(
        f"/api/v1/agent/images/{image_id}/data", content=data, headers={
            **agent.headers, "X-Content-SHA256": sha or hashlib.sha256(data).hexdigest()})


def report_op(region, agent, op_id: str, ok: bool, message: str = "") -> None:  # noqa: F811
    r = region.client.post("/api/v1/agent/report", headers=agent.headers, json={
        "host_id": agent.host_id, "generation_applied": agent.seen, "generation_seen": agent.seen,
        "storage_operations": [{"id": op_id, "ok": ok, "message": message}]})
    assert r.status_code == 204, r.text


def test_image_from_snapshot_upload_publishes(region, exported):  # noqa: F811
    agent, disk, snap, qcow2 = exported
    image = region.call("POST", "/images", {"name": "from-snap", "snapshot_id": snap["id"]})
    assert image.status_code == 202, image.text
    image = image.json()
    assert (image["status"], image["source"]) == ("Creating", f"snapshot:{snap['id']}")
    ops = agent.spec()["storage_operations"]
    assert [(o["kind"], o["disk_id"], o["snapshot_id"], o["upload_url"]) for o in ops] == [
        ("export_snapshot", disk["id"], snap["id"], f"/api/v1/agent/images/{image['id']}/data")]
    data = qcow2.read_bytes()
    # another host may not upload it; a wrong digest is refused and nothing is published
    other = region.register_host("hv-02")
    assert upload(region, other, image["id"], data).status_code == 404
    bad = upload(region, agent, image["id"], data, sha="0" * 64)
    assert (bad.status_code, bad.json()["code"]) == (400, "InvalidImage.ChecksumMismatch")
    assert region.ok("GET", f"/images/{image['id']}")["status"] == "Creating"
    r = upload(region, agent, image["id"], data)
    assert r.status_code == 200, r.text
    # the publish commits the export: the operation leaves the host's spec at once, so an
    # agent killed between its upload and its report never runs it again
    assert agent.spec()["storage_operations"] == []
    op = region.ok("GET", f"/disk-operations/{ops[0]['id']}")
    assert (op["outcome"], op["is_final"]) == ("succeeded", True)
    report_op(region, agent, ops[0]["id"], True, "exported")
    image = region.ok("GET", f"/images/{image['id']}")
    assert image["status"] == "Available", image
    assert image["sha256"] == hashlib.sha256(data).hexdigest()
    assert image["virtual_size_bytes"] == 1 << 30 and image["min_disk_gib"] == 1
    store = region.settings.effective_image_store_dir
    assert (store / f"{image['id']}.qcow2").read_bytes() == data
    assert [p.name for p in store.iterdir() if p.name.startswith(".")] == []
    # once published, the upload route is closed
    assert upload(region, agent, image["id"], data).status_code == 404


def test_upload_with_backing_file_refused(region, exported, tmp_path):  # noqa: F811
    agent, _, snap, qcow2 = exported
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(qcow2),
                    str(overlay)], check=True)
    image = region.ok("POST", "/images", {"name": "x", "snapshot_id": snap["id"]})
    r = upload(region, agent, image["id"], overlay.read_bytes())
    assert (r.status_code, r.json()["code"]) == (400, "InvalidImage.BackingFile")


def test_failed_export_puts_image_in_error(region, exported):  # noqa: F811
    agent, _, snap, _ = exported
    image = region.ok("POST", "/images", {"name": "x", "snapshot_id": snap["id"]})
    op = agent.spec()["storage_operations"][0]
    report_op(region, agent, op["id"], False, "qemu-img convert: No space left on device")
    image = region.ok("GET", f"/images/{image['id']}")
    assert image["status"] == "Error"
    assert image["status_reason"].startswith("InvalidImage.ExportFailed: qemu-img convert")
    assert agent.spec()["storage_operations"] == []


def test_bad_sources_refused(region, exported):  # noqa: F811
    r = region.call("POST", "/images", {"name": "x", "snapshot_id": "s-missing"})
    assert (r.status_code, r.json()["code"]) == (404, "InvalidSnapshotId.NotFound")
    r = region.call("POST", "/images", {"name": "x", "instance_id": "i-missing"})
    assert (r.status_code, r.json()["code"]) == (404, "InvalidInstanceId.NotFound")
    r = region.call("POST", "/images", {"name": "x", "snapshot_id": exported[2]["id"],
                                        "source_url": "http://x/y"})
    assert (r.status_code, r.json()["code"]) == (400, "MissingParameter.Source")
    assert region.items("/images") == []
