"""Snapshot policies run by the controller: due hours and weekdays, once per hour slot,
retention and deletion of expired snapshots — with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.models_storage import DiskSnapshotPolicy, Snapshot, SnapshotPolicy
from controller.services.snapshot_policies import run_policies
from tests.controller_factories import region  # noqa: F401 - fixture

MONDAY_2AM = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # a Monday


def disk_on_host(region) -> str:  # noqa: F811
    agent = region.register_host()
    disk = region.ok("POST", "/disks", {"size_gib": 1, "zone_id": "zone-a"})
    agent.spec()
    r = region.client.post("/api/v1/agent/report", headers=agent.headers, json={
        "host_id": agent.host_id, "generation_applied": agent.seen, "generation_seen": agent.seen,
        "disks": [{"id": disk["id"], "size_bytes": 1 << 30}]})
    assert r.status_code == 204
    assert region.ok("GET", f"/disks/{disk['id']}")["status"] == "Available"
    return disk["id"]


def add_policy(region, disk_id: str, hours="2,14", weekdays="1,3", retention=2) -> str:  # noqa: F811
    with region.db.write() as session:
        session.add(SnapshotPolicy(id="sp-test", name="nightly", hours=hours, weekdays=weekdays,
                                   retention_days=retention, enabled=True))
        session.flush()
        session.add(DiskSnapshotPolicy(disk_id=disk_id, policy_id="sp-test"))
    return "sp-test"


def snapshots(region) -> list[Snapshot]:  # noqa: F811
    with region.db.read() as session:
        return list(session.query(Snapshot).order_by(Snapshot.created_at))


def test_due_slots_run_once_and_expired_snapshots_go(region):  # noqa: F811
    disk_id = disk_on_host(region)
    add_policy(region, disk_id)
    # not due: wrong hour, wrong weekday
    assert run_policies(region.db, MONDAY_2AM - timedelta(hours=1)).taken == []
    assert run_policies(region.db, MONDAY_2AM + timedelta(days=1)).taken == []
    # due: one snapshot, and only one however often the pass runs in that hour
    first = run_policies(region.db, MONDAY_2AM)
    assert len(first.taken) == 1
    assert run_policies(region.db, MONDAY_2AM + timedelta(minutes=30)).taken == []
    snap = snapshots(region)[0]
    assert (snap.policy_id, snap.disk_id, snap.retention_days) == ("sp-test", disk_id, 2)
    assert snap.expires_at == MONDAY_2AM + timedelta(days=2)
    # a manual snapshot with its own retention, one kept forever
    manual = region.ok("POST", "/snapshots", {"disk_id": disk_id, "retention_days": 1})
    forever = region.ok("POST", "/snapshots", {"disk_id": disk_id})
    with region.db.write() as session:  # as if taken at MONDAY_2AM and accomplished
        for s in session.query(Snapshot):
            s.status = "accomplished"
            if s.id == manual["id"]:
                s.expires_at = MONDAY_2AM + timedelta(days=1)
    # Monday 14:00 is due again
    assert len(run_policies(region.db, MONDAY_2AM + timedelta(hours=12)).taken) == 1
    # Tuesday 03:00: the manual one expired; Wednesday 02:00: a new one, the first expired
    assert run_policies(region.db, MONDAY_2AM + timedelta(days=1, hours=1)).expired \
        == [manual["id"]]
    wed = run_policies(region.db, MONDAY_2AM + timedelta(days=2))
    assert len(wed.taken) == 1 and wed.expired == [first.taken[0]]
    left = {s.id for s in snapshots(region)}
    assert forever["id"] in left and manual["id"] not in left and first.taken[0] not in left


def test_disk_that_cannot_be_snapshotted_is_skipped(region):  # noqa: F811
    disk_id = disk_on_host(region)
    add_policy(region, disk_id)
    with region.db.write() as session:
        from controller.models import Disk
        session.get(Disk, disk_id).status = "Error"
    out = run_policies(region.db, MONDAY_2AM)
    assert out.taken == [] and disk_id in out.skipped
    with region.db.read() as session:
        assert session.get(SnapshotPolicy, "sp-test").last_run_slot is not None


def test_policy_api_create_apply_cancel_delete(region):  # noqa: F811
    disk_id = disk_on_host(region)
    p = region.call("POST", "/snapshot-policies", {"name": "n", "hours": [14, 2, 2],
                                                   "weekdays": [3, 1], "retention_days": 7})
    assert p.status_code == 201, p.text
    p = p.json()
    assert (p["hours"], p["weekdays"], p["disk_ids"]) == ([2, 14], [1, 3], [])
    bad = region.call("POST", "/snapshot-policies", {"name": "x", "hours": [24], "weekdays": [1]})
    assert bad.status_code == 400
    dup = region.call("POST", "/snapshot-policies", {"name": "n", "hours": [1], "weekdays": [1]})
    assert (dup.status_code, dup.json()["code"]) == (409, "InvalidSnapshotPolicyName.Duplicated")
    missing = region.call("POST", f"/snapshot-policies/{p['id']}/apply", {"disk_ids": ["d-x"]})
    assert (missing.status_code, missing.json()["code"]) == (404, "InvalidDiskId.NotFound")
    assert region.ok("POST", f"/snapshot-policies/{p['id']}/apply",
                     {"disk_ids": [disk_id]})["disk_ids"] == [disk_id]
    assert region.ok("GET", f"/disks/{disk_id}")["policy_id"] == p["id"]
    assert len(run_policies(region.db, MONDAY_2AM).taken) == 1
    assert region.ok("POST", f"/snapshot-policies/{p['id']}/cancel",
                     {"disk_ids": [disk_id]})["disk_ids"] == []
    assert run_policies(region.db, MONDAY_2AM + timedelta(hours=12)).taken == []
    assert [x["id"] for x in region.items("/snapshot-policies")] == [p["id"]]
    assert region.call("DELETE", f"/snapshot-policies/{p['id']}").status_code == 204
    assert region.items("/snapshot-policies") == []
    assert len(region.items("/snapshots")) == 1  # the snapshots it took stay
