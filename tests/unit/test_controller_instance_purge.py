"""Deleted instances stay listed for ``deleted_instance_retention_days``, then their rows
(NICs and operations with them) are purged; live instances and younger Deleted ones are
kept, their events too; 0 keeps them for ever."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from controller.models import Instance, Nic, Operation
from controller.services import events
from tests.controller_factories import database_url, region_any_db  # noqa: F401


def test_deleted_instances_are_purged_after_the_retention(region_any_db):
    r = region_any_db
    agent = r.register_host()
    net, image = r.network(), r.image()
    old, young, live = (r.create_instance(net, image, name=n)["id"]
                        for n in ("old", "young", "live"))
    agent.converge()
    r.ok("POST", f"/instances/{old}/reboot")
    for iid in (old, young):
        r.ok("DELETE", f"/instances/{iid}", force="true")
    agent.converge()  # the host no longer reports them: Deleted
    assert {r.ok("GET", f"/instances/{i}")["status"] for i in (old, young)} == {"Deleted"}
    now = datetime.now(UTC)
    with r.db.write() as session:
        session.get(Instance, old).deleted_at = now - timedelta(days=8)
        session.get(Instance, young).deleted_at = now - timedelta(days=6)
        assert session.scalar(select(func.count()).select_from(Operation)
                              .where(Operation.instance_id == old)) == 1

    assert events.purge_deleted_instances(r.db, max_age_days=0) == 0  # 0: kept for ever
    assert events.purge_deleted_instances(r.db, max_age_days=7) == 1
    assert r.call("GET", f"/instances/{old}").status_code == 404
    assert r.ok("GET", f"/instances/{young}")["status"] == "Deleted"
    assert r.ok("GET", f"/instances/{live}")["status"] == "Running"
    assert [i["id"] for i in r.ok("GET", "/instances", status="Deleted")["items"]] == [young]
    with r.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Operation)
                              .where(Operation.instance_id == old)) == 0
        assert session.scalar(select(func.count()).select_from(Nic)
                              .where(Nic.instance_id == old)) == 0
    # its history stays, under the event retention
    assert r.ok("GET", "/events", resource_id=old)["items"]
    assert events.purge_deleted_instances(r.db, max_age_days=7) == 0
