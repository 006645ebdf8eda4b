"""A disk the host cannot make (its storage is full) becomes Error with the agent's reason,
leaves the host's spec alone until deleted, and can be deleted; a snapshot that did not fit
becomes failed with the agent's message. An image export whose disk is deleted meanwhile
carries on from the file kept for the snapshot, or fails with a message — never stays
Creating."""

from __future__ import annotations

from tests.controller_factories import region  # noqa: F401 - fixture


def report(region, agent, **fields) -> None:  # noqa: F811
    r = region.client.post("/api/v1/agent/report", headers=agent.headers, json={
        "host_id": agent.host_id, "generation_applied": agent.seen,
        "generation_seen": agent.seen, **fields})
    assert r.status_code == 204, r.text


def test_disk_that_cannot_be_made_becomes_error(region):  # noqa: F811
    agent = region.register_host()
    disk = region.ok("POST", "/disks", {"size_gib": 5, "zone_id": "zone-a"})
    assert [d["id"] for d in agent.spec()["disks"]] == [disk["id"]]
    message = f"disk {disk['id']}: host storage is full: disk needs 1 MiB, 0 MiB free in disks/"
    # a retryable error keeps it Creating, with the reason shown
    report(region, agent, disks=[{"id": disk["id"], "exists": False, "error": "libvirt down"}])
    got = region.ok("GET", f"/disks/{disk['id']}")
    assert (got["status"], got["status_reason"]) == ("Creating", "libvirt down")
    report(region, agent, disks=[{"id": disk["id"], "exists": False, "failed": True,
                                  "error": message}])
    got = region.ok("GET", f"/disks/{disk['id']}")
    assert (got["status"], got["status_reason"]) == ("Error", message)
    # snapshots of it are refused; it can be deleted and leaves the host's spec
    r = region.call("POST", "/snapshots", {"disk_id": disk["id"]})
    assert (r.status_code, r.json()["code"]) == (409, "IncorrectDiskStatus")
    assert region.call("DELETE", f"/disks/{disk['id']}").status_code in (200, 202, 204)
    assert agent.spec()["disks"] == []


def test_snapshot_that_did_not_fit_is_failed(region):  # noqa: F811
    agent = region.register_host()
    disk = region.ok("POST", "/disks", {"size_gib": 1, "zone_id": "zone-a"})
    agent.spec()
    report(region, agent, disks=[{"id": disk["id"], "size_bytes": 1 << 30}])
    snap = region.ok("POST", "/snapshots", {"disk_id": disk["id"]})
    agent.spec()
    message = "host storage is full: qemu-img snapshot: No space left on device"
    report(region, agent, snapshots=[{"id": snap["id"], "state": "failed", "message": message}])
    got = region.ok("GET", f"/snapshots/{snap['id']}")
    assert (got["status"], got["status_reason"]) == ("failed", message)
    assert agent.spec()["snapshots"] == []


def test_export_goes_on_when_its_disk_is_deleted_and_fails_with_a_message(region, tmp_path):  # noqa: F811
    import hashlib
    import shutil
    import subprocess

    import pytest
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img missing")
    agent = region.register_host()
    disk = region.ok("POST", "/disks", {"size_gib": 1, "zone_id": "zone-a"})
    agent.spec()
    report(region, agent, disks=[{"id": disk["id"], "size_bytes": 1 << 30}])
    snap = region.ok("POST", "/snapshots", {"disk_id": disk["id"]})
    agent.spec()
    report(region, agent, snapshots=[{"id": snap["id"], "state": "accomplished"}])
    first = region.ok("POST", "/images", {"name": "kept", "snapshot_id": snap["id"]})
    second = region.ok("POST", "/images", {"name": "lost", "snapshot_id": snap["id"]})
    assert region.call("DELETE", f"/disks/{disk['id']}").status_code in (200, 202, 204)
    # the snapshot outlives its disk, so both exports stay in the host's spec
    ops = {o["upload_url"].split("/")[-2]: o for o in agent.spec()["storage_operations"]}
    assert set(ops) == {first["id"], second["id"]}
    assert all(o["disk_id"] == disk["id"] for o in ops.values())
    # one is uploaded (from the file the host kept) and becomes Available
    qcow2 = tmp_path / "export.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), "1G"], check=True)
    data = qcow2.read_bytes()
    r = region.client.put(f"/api/v1/agent/images/{first['id']}/data", content=data, headers={
        **agent.headers, "X-Content-SHA256": hashlib.sha256(data).hexdigest()})
    assert r.status_code == 200, r.text
    assert region.ok("GET", f"/images/{first['id']}")["status"] == "Available"
    # the other fails on the host: Error with the host's message, never left Creating
    report(region, agent, storage_operations=[
        {"id": ops[second["id"]]["id"], "ok": False,
         "message": f"disk {disk['id']} is not on this host"}])
    got = region.ok("GET", f"/images/{second['id']}")
    assert got["status"] == "Error"
    assert got["status_reason"] == f"InvalidImage.ExportFailed: disk {disk['id']} is not on this host"
    assert agent.spec()["storage_operations"] == []
