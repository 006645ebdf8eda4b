"""Hosts: Down after missed heartbeats (instances shown Unknown, not moved, back when the
agent reports again), and removal refused while the host holds resources."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from controller.models import Host
from controller.models_storage import Snapshot
from tests.controller_factories import Region, default_db_url, make_settings, open_database, region  # noqa: F401,E501


HEARTBEAT_TIMEOUT_S = 3.0


@pytest.fixture
def quick_region(tmp_path, default_db_url) -> Iterator[Region]:
    """A region whose heartbeat timeout is 3 s (the watchdog looks every second)."""
    from fastapi.testclient import TestClient

    from controller.app import create_app

    settings = make_settings(tmp_path, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
    db, tokens = open_database(default_db_url)
    with TestClient(create_app(settings, db)) as client:
        yield Region(client, db, settings, tokens)
    db.dispose()


@contextlib.contextmanager
def heartbeating(agent) -> Iterator[None]:
    """``agent`` reports every 0.1 s on a thread of its own until the block ends: its
    heartbeats stay far inside the timeout however slowly the test's own requests go."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            agent.report({})
            stop.wait(0.1)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def _state(region, host_id) -> str:
    return region.ok("GET", f"/hosts/{host_id}")["state"]


def test_silent_host_goes_down_instances_unknown_then_back(quick_region):
    r = quick_region
    silent, alive = r.register_host("hv-silent"), r.register_host("hv-alive")
    with heartbeating(silent), heartbeating(alive):  # both ready while the instance is placed
        net, image = r.network(), r.image()
        inst = r.create_instance(net, image, name="on-silent", placement_policy="pack")
    owner = silent if inst["host_id"] == silent.host_id else alive
    other = alive if owner is silent else silent
    owner.converge()
    other.report({})
    assert r.ok("GET", f"/instances/{inst['id']}")["status"] == "Running"

    # The owner stops reporting; the other keeps heartbeating. Waited for as a condition
    # with a generous deadline (timeout + watchdog period is the least it takes; a loaded
    # machine can take many times that), not as a fixed sleep.
    with heartbeating(other):
        deadline = time.monotonic() + 60
        while _state(r, owner.host_id) != "down":
            assert time.monotonic() < deadline, "the silent host was not marked down"
            time.sleep(0.2)
        assert _state(r, other.host_id) == "ready"
        _check_down_host(r, net, image, inst, owner, other)

    owner.report()  # it comes back: ready again, the instance Running as it reports
    assert _state(r, owner.host_id) == "ready"
    assert r.ok("GET", f"/instances/{inst['id']}")["status"] == "Running"
    assert r.items("/instances", status="Unknown") == []


def _check_down_host(r, net, image, inst, owner, other) -> None:
    shown = r.ok("GET", f"/instances/{inst['id']}")
    assert shown["status"] == "Unknown"
    assert "is Down (missed heartbeats" in shown["status_reason"]
    assert "last reported status Running" in shown["status_reason"]
    assert shown["host_id"] == owner.host_id  # no evacuation
    assert [i["id"] for i in r.items("/instances", status="Unknown")] == [inst["id"]]
    assert r.items("/instances", status="Running") == []
    # New instances go elsewhere, and explain says why.
    moved = r.create_instance(net, image, name="elsewhere", placement_policy="pack")
    assert moved["host_id"] == other.host_id
    verdicts = {h["host_id"]: h for h in r.ok("POST", "/placement/explain",
                                               r.instance_body(net, image))["hosts"]}
    assert verdicts[owner.host_id]["rejected_by"][0]["filter"] == "state"


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
