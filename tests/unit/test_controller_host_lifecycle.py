"""Hosts: Down after missed heartbeats (instances shown Unknown, not moved, back when the
agent reports again), and removal refused while the host holds resources."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from controller.models import Host
from controller.models_storage import Snapshot
from tests.controller_factories import Region, make_settings, open_database, region, sqlite_url  # noqa: F401,E501


@pytest.fixture
def quick_region(tmp_path) -> Iterator[Region]:
    """A region whose heartbeat timeout is 1 s (the watchdog looks every second)."""
    from fastapi.testclient import TestClient

    from controller.app import create_app

    settings = make_settings(tmp_path, heartbeat_timeout_s=1.0)
    db, tokens = open_database(sqlite_url(tmp_path))
    with TestClient(create_app(settings, db)) as client:
        yield Region(client, db, settings, tokens)
    db.dispose()


def _state(region, host_id) -> str:
    return region.ok("GET", f"/hosts/{host_id}")["state"]


def test_silent_host_goes_down_instances_unknown_then_back(quick_region):
    r = quick_region
    silent, alive = r.register_host("hv-silent"), r.register_host("hv-alive")
    net, image = r.network(), r.image()
    inst = r.create_instance(net, image, name="on-silent", placement_policy="pack")
    owner = silent if inst["host_id"] == silent.host_id else alive
    other = alive if owner is silent else silent
    owner.converge()
    other.report({})
    assert r.ok("GET", f"/instances/{inst['id']}")["status"] == "Running"

    # The owner stops reporting; the other keeps heartbeating.
    started = time.monotonic()
    while _state(r, owner.host_id) != "down":
        assert time.monotonic() - started < 1.0 + 1.0 + 3.0, "not marked down in time"
        other.report({})
        time.sleep(0.2)
    assert _state(r, other.host_id) == "ready"
    shown = r.ok("GET", f"/instances/{inst['id']}")
    assert shown["status"] == "Unknown"
    assert "is Down (missed heartbeats" in shown["status_reason"]
    assert "last reported status Running" in shown["status_reason"]
    assert shown["host_id"] == owner.host_id  # no evacuation
    assert [i["id"] for i in r.items("/instances", status="Unknown")] == [inst["id"]]
    assert r.items("/instances", status="Running") == []
    # New instances go elsewhere, and explain says why.
    other.report({})
    moved = r.create_instance(net, image, name="elsewhere", placement_policy="pack")
    assert moved["host_id"] == other.host_id
    verdicts = {h["host_id"]: h for h in r.ok("POST", "/placement/explain",
                                               r.instance_body(net, image))["hosts"]}
    assert verdicts[owner.host_id]["rejected_by"][0]["filter"] == "state"

    owner.report()  # it comes back: ready again, the instance Running as it reports
    assert _state(r, owner.host_id) == "ready"
    assert r.ok("GET", f"/instances/{inst['id']}")["status"] == "Running"
    assert r.items("/instances", status="Unknown") == []


def test_host_removal_refused_while_it_holds_resources(region):  # noqa: F811
    agent = region.register_host("hv-a")
    net, image = region.network(), region.image()
    inst = region.create_instance(net, image)
    agent.converge()

    def refused(code: str) -> str:
        r = region.call("DELETE", f"/hosts/{agent.host_id}")
        assert (r.status_code, r.json()["code"], r.json()["field"]) == (409, code, "host_id")
        return r.json()["message"]

    assert inst["id"] in refused("DependencyViolation.Host.Instances")
    region.ok("DELETE", f"/instances/{inst['id']}", force="true")
    refused("DependencyViolation.Host.Instances")  # Deleting: the domain may still run
    agent.spec()
    agent.report({})
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Deleted"

    disk = region.ok("POST", "/disks", {"name": "data", "size_gib": 1, "host_id": agent.host_id})
    refused("DependencyViolation.Host.Disks")
    region.ok("DELETE", f"/disks/{disk['id']}")
    with region.db.write() as session:
        session.add(Snapshot(id="s-held", disk_id="d-x", disk_role="data", disk_size_gib=1,
                             host_id=agent.host_id, status="accomplished",
                             created_at=datetime.now(UTC)))
    assert "s-held" in refused("DependencyViolation.Host.Snapshots")
    with region.db.write() as session:
        session.delete(session.get(Snapshot, "s-held"))

    assert region.call("DELETE", f"/hosts/{agent.host_id}").status_code == 204
    assert region.items("/hosts") == []
    assert region.call("GET", f"/hosts/{agent.host_id}").status_code == 404
    assert region.call("DELETE", f"/hosts/{agent.host_id}").status_code == 404
    # Its token is revoked: the agent's calls are refused.
    r = region.client.get("/api/v1/agent/spec", headers=agent.headers)
    assert r.status_code == 401
    # Its history went with it; the region still works with another host.
    assert region.call("GET", f"/instances/{inst['id']}").status_code == 404
    with region.db.read() as session:
        assert session.query(Host).count() == 0
    region.register_host("hv-b")
    assert region.create_instance(net, image, name="again")["status"] == "Pending"
