"""Cancelling a migration before its switch-over, through the API with fake agents."""

from __future__ import annotations

import hashlib

import pytest

from controller.errors import Conflict
from controller.services import migrations as service
from tests.controller_factories import database_url, region, region_any_db  # noqa: F401  (fixtures)
from tests.unit.test_controller_instance_migration import _host, _report, _setup

EMPTY = {"vcpus": 0, "memory_mib": 0, "disk_gib": 0}


def _cancel(region, m: dict, status: int = 202) -> dict:
    r = region.call("POST", f"/migrations/{m['id']}/cancel")
    assert r.status_code == status, r.text
    return r.json()


def test_live_cancel_before_the_copy_ends_at_once(region_any_db):
    region = region_any_db
    h1, h2, inst, _ = _setup(region)
    alloc1 = _host(region, h1)["allocated"]
    m = region.ok("POST", f"/instances/{inst['id']}/migrate", {"host_id": h2.host_id})
    assert m["state"] == "freezing"
    assert [i["id"] for i in h2.spec()["instances"]] == [inst["id"]]
    gone = _cancel(region, m)
    assert (gone["state"], gone["is_final"]) == ("cancelled", True)
    assert "freezing" in gone["message"] and gone["finished_at"]
    # the instance stays, the target's copy and reservation go, the source cares again
    view = region.ok("GET", f"/instances/{inst['id']}")
    assert (view["host_id"], view["status"]) == (h1.host_id, "Running")
    assert _host(region, h1)["allocated"] == alloc1
    assert _host(region, h2)["allocated"] == EMPTY
    assert h2.spec()["instances"] == [] and h2.spec()["migrations"] == []
    assert h1.spec()["migrations"] == []
    # a late report of the source holding still changes nothing
    _report(region, h1, instances={inst["id"]: "running"})
    assert region.ok("GET", f"/migrations/{m['id']}")["state"] == "cancelled"
    # final: a second cancel is refused, and a new migration may start
    err = _cancel(region, m, 409)
    assert (err["code"], err.get("field")) == ("IncorrectMigrationStatus", "migration_id")
    assert region.ok("POST", f"/instances/{inst['id']}/migrate", {})["state"] == "freezing"


def test_live_cancel_while_migrating_waits_for_the_target(region_any_db):
    region = region_any_db
    h1, h2, inst, _ = _setup(region)
    m = region.ok("POST", f"/instances/{inst['id']}/migrate", {"host_id": h2.host_id})
    h1.spec()
    _report(region, h1, instances={inst["id"]: "running"})
    assert region.ok("GET", f"/migrations/{m['id']}")["state"] == "migrating"
    asked = _cancel(region, m)
    assert (asked["state"], asked["is_final"]) == ("cancelling", False)
    assert _cancel(region, m)["state"] == "cancelling"  # asked twice: same answer
    # the target is told to abort; the source keeps holding the domain still meanwhile
    tgt = h2.spec()["migrations"]
    assert [(x["role"], x["cancel"]) for x in tgt] == [("target", True)]
    assert [(x["role"], x["cancel"]) for x in h1.spec()["migrations"]] == [("source", False)]
    assert [i["id"] for i in h2.spec()["instances"]] == [inst["id"]]
    # reports without the outcome change nothing
    _report(region, h1, instances={inst["id"]: "running"})
    assert region.ok("GET", f"/migrations/{m['id']}")["state"] == "cancelling"
    _report(region, h2, migrations=[{"id": m["id"], "ok": False,
                                     "message": "cancelled: the live copy was aborted"}])
    done = region.ok("GET", f"/migrations/{m['id']}")
    assert (done["state"], done["message"]) == ("cancelled", "cancelled: the live copy was aborted")
    assert region.ok("GET", f"/instances/{inst['id']}")["host_id"] == h1.host_id
    assert _host(region, h2)["allocated"] == EMPTY
    assert h2.spec()["instances"] == [] and h1.spec()["migrations"] == []


def test_a_cancel_that_comes_after_the_switch_over_completes(region_any_db):
    region = region_any_db
    h1, h2, inst, _ = _setup(region)
    m = region.ok("POST", f"/instances/{inst['id']}/migrate", {"host_id": h2.host_id})
    h1.spec()
    _report(region, h1, instances={inst["id"]: "running"})
    _cancel(region, m)
    h2.spec()
    _report(region, h2, instances={inst["id"]: "running"},
            migrations=[{"id": m["id"], "ok": True, "message": "live migration took 3.0s"}])
    done = region.ok("GET", f"/migrations/{m['id']}")
    assert done["state"] == "completed" and "too late" in done["message"]
    assert region.ok("GET", f"/instances/{inst['id']}")["host_id"] == h2.host_id
    assert _host(region, h1)["allocated"] == EMPTY
    assert _cancel(region, m, 409)["code"] == "IncorrectMigrationStatus"


@pytest.mark.parametrize("phase", ["exporting", "importing"])
def test_cold_cancel_drops_the_copy(region, phase):  # noqa: F811
    h1, h2, inst, _ = _setup(region)
    region.ok("POST", f"/instances/{inst['id']}/stop", {"force": True})
    h1.converge()
    m = region.ok("POST", f"/instances/{inst['id']}/migrate", {"host_id": h2.host_id})
    url = h1.spec()["migrations"][0]["disks"][0]["url"]
    data = b"disk" * 1000
    digest = hashlib.sha256(data).hexdigest()
    if phase == "importing":
        r = region.client.put(url, content=data, headers={**h1.headers, "X-Content-SHA256": digest})
        assert r.status_code == 200
        _report(region, h1, migrations=[{"id": m["id"], "ok": True, "message": "uploaded"}])
        assert [x["role"] for x in h2.spec()["migrations"]] == ["target"]
    assert region.ok("GET", f"/migrations/{m['id']}")["state"] == phase
    gone = _cancel(region, m)
    assert (gone["state"], gone["is_final"]) == ("cancelled", True)
    # the store is gone: no upload, no download; neither spec carries the migration
    r = region.client.put(url, content=data, headers={**h1.headers, "X-Content-SHA256": digest})
    assert r.status_code == 404
    assert region.client.get(url, headers=h2.headers).status_code == 404
    assert not service.store_dir(region.settings, m["id"]).exists()
    assert h1.spec()["migrations"] == [] and h2.spec()["migrations"] == []
    view = region.ok("GET", f"/instances/{inst['id']}")
    assert (view["host_id"], view["status"]) == (h1.host_id, "Stopped")
    assert _host(region, h2)["allocated"] == EMPTY
    # a report of the source's upload finishing afterwards changes nothing
    _report(region, h1, migrations=[{"id": m["id"], "ok": True, "message": "uploaded"}])
    assert region.ok("GET", f"/migrations/{m['id']}")["state"] == "cancelled"


def test_an_upload_cancelled_under_way_is_not_published(region):  # noqa: F811
    h1, h2, inst, _ = _setup(region)
    region.ok("POST", f"/instances/{inst['id']}/stop", {"force": True})
    h1.converge()
    m = region.ok("POST", f"/instances/{inst['id']}/migrate", {"host_id": h2.host_id})
    disk_id = h1.spec()["migrations"][0]["disks"][0]["id"]
    # the upload has begun (its temporary file exists) when the cancel lands
    tmp = service.upload_target(region.db, region.settings, h1.host_id, m["id"], disk_id)
    tmp.write_bytes(b"partial")
    _cancel(region, m)
    with pytest.raises(Conflict) as exc:
        service.publish_disk(region.db, region.settings, m["id"], disk_id, tmp,
                             hashlib.sha256(b"partial").hexdigest(), 7,
                             hashlib.sha256(b"partial").hexdigest())
    assert exc.value.code == "IncorrectMigrationStatus"
    assert not tmp.exists()
    assert not service.store_dir(region.settings, m["id"]).exists()


def test_cancel_of_unknown_or_finished_migrations(region):  # noqa: F811
    h1, h2, inst, _ = _setup(region)
    r = region.call("POST", "/migrations/mig-nosuchmigration000/cancel")
    assert (r.status_code, r.json()["code"]) == (404, "InvalidMigrationId.NotFound")
    m = region.ok("POST", f"/instances/{inst['id']}/migrate", {})
    h1.spec()
    _report(region, h1)
    h2.spec()
    _report(region, h2, migrations=[{"id": m["id"], "ok": False, "message": "boom"}])
    err = _cancel(region, m, 409)
    assert err["code"] == "IncorrectMigrationStatus" and "failed" in err["message"]
    assert region.ok("GET", f"/migrations/{m['id']}")["state"] == "failed"
