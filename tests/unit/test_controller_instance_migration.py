"""Migration phases through the API with fake agents (the protocol of docs/agent-api.md)."""

from __future__ import annotations

import hashlib

from tests.controller_factories import database_url, region, region_any_db  # noqa: F401  (fixtures)


def _report(region, agent, *, instances=None, migrations=(), seen=None) -> None:
    agent.observed = dict(instances if instances is not None else agent.observed)
    body = {"host_id": agent.host_id, "generation_applied": agent.seen,
            "generation_seen": agent.seen if seen is None else seen,
            "instances": [{"id": i, "power": p} for i, p in agent.observed.items()],
            "migrations": list(migrations)}
    r = region.client.post("/api/v1/agent/report", json=body, headers=agent.headers)
    assert r.status_code == 204, r.text


def _setup(region):
    h1 = region.register_host("hv-01")
    image = region.image()
    net = region.network()
    inst = region.create_instance(net, image)
    h2 = region.register_host("hv-02")
    h1.converge()
    return h1, h2, inst, net


def _host(region, agent) -> dict:
    return region.ok("GET", f"/hosts/{agent.host_id}")


def test_live_migration_phases_and_flip(region_any_db):
    region = region_any_db
    h1, h2, inst, _ = _setup(region)
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Running"
    alloc1 = _host(region, h1)["allocated"]
    m = region.ok("POST", f"/instances/{inst['id']}/migrate", {"host_id": h2.host_id})
    assert (m["kind"], m["state"], m["is_final"]) == ("live", "freezing", False)
    # the target reserves at once, so it counts on both hosts while it moves
    assert _host(region, h2)["allocated"] == alloc1
    # source: the instance stays, held still by its migration (role source)
    s1 = h1.spec()
    assert [i["id"] for i in s1["instances"]] == [inst["id"]]
    assert [(x["id"], x["role"], x["kind"]) for x in s1["migrations"]] == \
        [(m["id"], "source", "live")]
    # target: prepares the instance, does not run the migration before the source holds still
    s2 = h2.spec()
    assert [i["id"] for i in s2["instances"]] == [inst["id"]]
    assert [(x["role"], x["run"]) for x in s2["migrations"]] == [("target", False)]
    assert [im["id"] for im in s2["images"]] == [s2["instances"][0]["disks"][0]["image_id"]]
    # a report of an older generation does not count as the source holding still
    _report(region, h1, seen=s1["generation"] - 1)
    assert region.ok("GET", f"/migrations/{m['id']}")["state"] == "freezing"
    _report(region, h1, instances={inst["id"]: "running"})
    assert region.ok("GET", f"/migrations/{m['id']}")["state"] == "migrating"
    assert [x["run"] for x in h2.spec()["migrations"]] == [True]
    # the target's observations of a moving instance are not its status
    _report(region, h2, instances={inst["id"]: "missing"})
    _report(region, h1, instances={inst["id"]: "missing"})
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Running"
    # done: the instance flips to the target, capacity leaves the source
    _report(region, h2, instances={inst["id"]: "running"},
            migrations=[{"id": m["id"], "ok": True, "message": "live migration took 3.0s"}])
    done = region.ok("GET", f"/migrations/{m['id']}")
    assert (done["state"], done["is_final"]) == ("completed", True)
    assert done["duration_s"] is not None
    assert region.ok("GET", f"/instances/{inst['id']}")["host_id"] == h2.host_id
    assert _host(region, h1)["allocated"] == {"vcpus": 0, "memory_mib": 0, "disk_gib": 0}
    assert _host(region, h2)["allocated"] == alloc1
    s1, s2 = h1.spec(), h2.spec()
    assert s1["instances"] == [] and s1["migrations"] == []
    assert [i["id"] for i in s2["instances"]] == [inst["id"]] and s2["migrations"] == []
    port = [p for p in s2["networks"][0]["ports"] if p["mac"] == s2["instances"][0]["nics"][0]["mac"]]
    assert port[0]["vtep"] is None  # local on the target now


def test_failed_live_migration_leaves_the_instance_where_it_was(region_any_db):
    region = region_any_db
    h1, h2, inst, _ = _setup(region)
    m = region.ok("POST", f"/instances/{inst['id']}/migrate", {})
    assert m["target_host_id"] == h2.host_id  # the scheduler's choice: the only other host
    h1.spec()
    _report(region, h1)
    h2.spec()
    _report(region, h2, migrations=[{"id": m["id"], "ok": False, "message": "boom"}])
    failed = region.ok("GET", f"/migrations/{m['id']}")
    assert (failed["state"], failed["message"]) == ("failed", "boom")
    assert region.ok("GET", f"/instances/{inst['id']}")["host_id"] == h1.host_id
    assert _host(region, h2)["allocated"] == {"vcpus": 0, "memory_mib": 0, "disk_gib": 0}
    assert h2.spec()["instances"] == [] and h1.spec()["migrations"] == []
    # and it may be tried again
    assert region.ok("POST", f"/instances/{inst['id']}/migrate", {})["state"] == "freezing"


def test_cold_migration_through_the_store(region_any_db):
    region = region_any_db
    h1, h2, inst, _ = _setup(region)
    region.ok("POST", f"/instances/{inst['id']}/stop", {"force": True})
    h1.converge()
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Stopped"
    m = region.ok("POST", f"/instances/{inst['id']}/migrate", {"host_id": h2.host_id})
    assert (m["kind"], m["state"]) == ("cold", "exporting")
    src = h1.spec()["migrations"][0]
    assert src["role"] == "source" and len(src["disks"]) == 1
    assert h2.spec()["migrations"] == []  # nothing for the target until the files are in
    url = src["disks"][0]["url"]
    data = b"qcow2-bytes" * 200_000  # over the 1 MiB API body limit: disk uploads stream
    good = hashlib.sha256(data).hexdigest()
    # a wrong digest is refused; only the source may upload, only the target download
    r = region.client.put(url, content=data, headers={**h1.headers, "X-Content-SHA256": "0" * 64})
    assert (r.status_code, r.json()["code"]) == (400, "InvalidDisk.ChecksumMismatch")
    r = region.client.put(url, content=data, headers={**h2.headers, "X-Content-SHA256": good})
    assert r.status_code == 404
    r = region.client.put(url, content=data, headers={**h1.headers, "X-Content-SHA256": good})
    assert r.status_code == 200 and r.json()["sha256"] == good
    _report(region, h1, migrations=[{"id": m["id"], "ok": True, "message": "uploaded"}])
    assert region.ok("GET", f"/migrations/{m['id']}")["state"] == "importing"
    tgt = h2.spec()["migrations"][0]
    assert tgt["role"] == "target" and tgt["disks"][0]["sha256"] == good
    assert region.client.get(url, headers=h1.headers).status_code == 404
    got = region.client.get(url, headers=h2.headers)
    assert got.status_code == 200 and got.content == data
    _report(region, h2, migrations=[{"id": m["id"], "ok": True, "message": "received"}])
    assert region.ok("GET", f"/migrations/{m['id']}")["state"] == "completed"
    view = region.ok("GET", f"/instances/{inst['id']}")
    assert view["host_id"] == h2.host_id and view["status"] == "Stopped"
    assert region.client.get(url, headers=h2.headers).status_code == 404  # store cleaned


def test_bad_input_changes_nothing(region_any_db):
    region = region_any_db
    h1, h2, inst, _ = _setup(region)
    path = f"/instances/{inst['id']}/migrate"
    cases = [({"host_id": h1.host_id}, 400, "InvalidHostId.SameAsSource"),
             ({"host_id": "h-nope"}, 404, "InvalidHostId.NotFound")]
    region.ok("POST", f"/hosts/{h2.host_id}/maintenance", on="true")
    cases += [({"host_id": h2.host_id}, 409, "IncorrectHostStatus.Maintenance"),
              ({}, 409, "OperationDenied.NoStock")]
    for body, status, code in cases:
        r = region.call("POST", path, body)
        assert (r.status_code, r.json()["code"]) == (status, code), body
    r = region.call("POST", "/instances/i-nope/migrate", {})
    assert (r.status_code, r.json()["code"]) == (404, "InvalidInstanceId.NotFound")
    region.ok("POST", f"/hosts/{h2.host_id}/maintenance", on="false")
    region.ok("POST", f"/instances/{inst['id']}/stop", {})  # Stopping: neither live nor cold
    r = region.call("POST", path, {"host_id": h2.host_id})
    assert (r.status_code, r.json()["code"]) == (409, "IncorrectInstanceStatus")
    assert region.items("/migrations") == []
    assert _host(region, h2)["allocated"] == {"vcpus": 0, "memory_mib": 0, "disk_gib": 0}
    assert h1.spec()["migrations"] == [] and h2.spec()["instances"] == []


def test_maintenance_flag_and_drain(region_any_db):
    region = region_any_db
    h1, h2, inst, net = _setup(region)
    host = region.ok("POST", f"/hosts/{h2.host_id}/maintenance", on="true")
    assert host["state"] == "maintenance" and host["maintenance"] is True
    # placement skips it, and it stays in maintenance across reports
    other = region.create_instance(net, region.image(name="tiny2"), name="web-2")
    assert other["host_id"] == h1.host_id
    _report(region, h2, instances={})
    assert _host(region, h2)["maintenance"] is True
    region.ok("POST", f"/hosts/{h2.host_id}/maintenance", on="false")
    h1.converge()
    status = region.ok("POST", f"/hosts/{h1.host_id}/drain")
    assert status["maintenance"] and not status["done"]
    assert sorted(m["instance_id"] for m in status["migrations"]) == sorted([inst["id"], other["id"]])
    assert {m["kind"] for m in status["migrations"]} == {"live"}
    # a second drain starts nothing new
    again = region.ok("POST", f"/hosts/{h1.host_id}/drain")
    assert len(again["migrations"]) == 2
    h1.spec()
    _report(region, h1)
    h2.spec()
    _report(region, h2, migrations=[{"id": m["id"], "ok": True} for m in status["migrations"]])
    final = region.ok("GET", f"/hosts/{h1.host_id}/drain")
    assert final["done"] and final["instances_left"] == []
    assert all(m["state"] == "completed" for m in final["migrations"])


def test_a_stalled_freeze_fails_on_the_next_report(region_any_db):
    region = region_any_db
    h1, h2, inst, _ = _setup(region)
    region.settings.migration_stall_timeout_s = 0.01
    m = region.ok("POST", f"/instances/{inst['id']}/migrate", {"host_id": h2.host_id})
    import time
    time.sleep(0.05)
    h2.spec()
    _report(region, h2)  # the source never reported: the target's report ends it
    failed = region.ok("GET", f"/migrations/{m['id']}")
    assert failed["state"] == "failed" and "no progress" in failed["message"]
    assert region.ok("GET", f"/instances/{inst['id']}")["host_id"] == h1.host_id


def test_a_delete_wins_over_a_migration(region_any_db):
    region = region_any_db
    h1, h2, inst, _ = _setup(region)
    m = region.ok("POST", f"/instances/{inst['id']}/migrate", {"host_id": h2.host_id})
    region.ok("DELETE", f"/instances/{inst['id']}", force="true")
    assert h1.spec()["migrations"] == [] and h2.spec()["instances"] == []
    _report(region, h1, instances={})
    gone = region.ok("GET", f"/migrations/{m['id']}")
    assert gone["state"] == "failed" and "deleted" in gone["message"]
    assert _host(region, h2)["allocated"] == {"vcpus": 0, "memory_mib": 0, "disk_gib": 0}


def test_migration_keeps_deployment_set_anti_affinity(region_any_db):
    """A member never moves onto a host holding another member of its set."""
    region = region_any_db
    h1, h2 = region.register_host("hv-01"), region.register_host("hv-02")
    image, net = region.image(), region.network()
    ds = region.ok("POST", "/deployment-sets", {"name": "pair"})
    a = region.create_instance(net, image, name="a", deployment_set_id=ds["id"])
    b = region.create_instance(net, image, name="b", deployment_set_id=ds["id"])
    assert {a["host_id"], b["host_id"]} == {h1.host_id, h2.host_id}
    h1.converge()
    h2.converge()
    other = h2.host_id if a["host_id"] == h1.host_id else h1.host_id
    r = region.call("POST", f"/instances/{a['id']}/migrate", {"host_id": other})
    assert (r.status_code, r.json()["code"]) == (409, "DeploymentSet.NoAvailableHost")
    r = region.call("POST", f"/instances/{a['id']}/migrate", {})
    assert r.status_code == 409, r.text  # the only other host holds b
    assert region.items("/migrations") == []


def test_placement_skips_a_host_flagged_for_maintenance(region):  # noqa: F811
    h1, h2 = region.register_host("hv-01"), region.register_host("hv-02")
    region.ok("POST", f"/hosts/{h2.host_id}/maintenance", on="true")
    image, net = region.image(), region.network()
    placed = {region.create_instance(net, image, name=f"m{i}")["host_id"] for i in range(3)}
    assert placed == {h1.host_id}
    region.ok("POST", f"/hosts/{h2.host_id}/maintenance", on="false")
    h2.converge()
    assert region.create_instance(net, image, name="after")["host_id"] == h2.host_id
