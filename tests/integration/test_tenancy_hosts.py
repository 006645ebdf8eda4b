"""What a tenant sees of the region's hosts, on SQLite and on PostgreSQL.

An admin sees host ids, names and loads. A member or read-only key sees, wherever a host
id appears (instances, disks, snapshots, deployment sets, migrations, a dry run), an
opaque id of that host within its project, like Nova's ``hostId``: the same for all of
the project's resources on one host, different for another project on the same host,
never a real host id. A tenant filters its instances by that opaque id. A dry run
answers it without the host's name or the placement explanation, and "no host" errors
and Unknown statuses name no host: hosts' names and loads are the operator's.
"""

from __future__ import annotations

import re

import pytest

from controller.models import Host
from tests.controller_factories import database_url, region_any_db  # noqa: F401 - fixtures
from tests.tenancy_factories import Caller, add_key, make_project, private_image, report_disks

pytestmark = pytest.mark.integration

OPAQUE = re.compile(r"^hh-[0-9a-f]{20}$")


def _network(caller: Caller) -> dict:
    vpc = caller.ok("POST", "/vpcs", {"name": "v", "cidr_block": "10.0.0.0/16"})["id"]
    vsw = caller.ok("POST", "/vswitches", {"name": "s", "vpc_id": vpc, "zone_id": "zone-a",
                                           "cidr_block": "10.0.1.0/24"})["id"]
    sg = caller.ok("POST", "/security-groups", {"name": "g", "vpc_id": vpc})["id"]
    return {"vswitch_id": vsw, "security_group_ids": [sg]}


def _create(caller: Caller, net: dict, image: str, name: str, **extra):
    return caller.call("POST", "/instances", {"name": name, "instance_type": "ecs.t1.nano",
                                              "image_id": image, **net, **extra})


@pytest.fixture
def world(region_any_db):  # noqa: F811
    """Two hosts; project A with a member on each (a deployment set), a data disk and a
    snapshot beside its first; project B with one instance."""
    r = region_any_db
    admin = Caller(r.client, r.tokens.admin_token)
    a, b = make_project(admin, "proj-a"), make_project(admin, "proj-b")
    reader, _ = add_key(admin, "proj-a", "read-only", "reader-a")
    h1 = r.register_host("hv-one", underlay="192.0.2.11")
    h2 = r.register_host("hv-two", underlay="192.0.2.12")
    image = private_image(r.db, r.settings, None, "pub")
    net_a, net_b = _network(a), _network(b)
    ds = a.ok("POST", "/deployment-sets", {"name": "ha"})["id"]
    a1 = _create(a, net_a, image, "a1", deployment_set_id=ds).json()
    a2 = _create(a, net_a, image, "a2", deployment_set_id=ds).json()
    b1 = _create(b, net_b, image, "b1").json()
    for agent in (h1, h2):
        agent.converge()
    real = {i["id"]: admin.ok("GET", f"/instances/{i['id']}")["host_id"] for i in (a1, a2, b1)}
    assert real[a1["id"]] != real[a2["id"]]
    on_a1 = h1 if real[a1["id"]] == h1.host_id else h2
    disk = a.ok("POST", "/disks", {"size_gib": 1, "instance_id": a1["id"]})
    report_disks(on_a1, [disk["id"]])
    snap = a.ok("POST", "/snapshots", {"disk_id": disk["id"]})
    return {"r": r, "admin": admin, "a": a, "b": b, "reader": reader, "hosts": (h1, h2),
            "image": image, "net_a": net_a, "ds": ds, "a1": a1, "a2": a2, "b1": b1,
            "real": real, "disk": disk, "snap": snap}


def test_a_tenant_sees_opaque_host_ids_per_project(world):
    w = world
    a, b, reader, admin, real = w["a"], w["b"], w["reader"], w["admin"], w["real"]
    real_ids = {h.host_id for h in w["hosts"]}
    seen_a = {i["id"]: i["host_id"] for i in a.ok("GET", "/instances")["items"]}
    assert set(seen_a) == {w["a1"]["id"], w["a2"]["id"]}
    assert all(OPAQUE.match(h) for h in seen_a.values()), seen_a
    assert len(set(seen_a.values())) == 2  # the set's spread shows: two hosts
    assert not set(seen_a.values()) & real_ids
    # the same value everywhere the project meets that host, for every key of it
    a1_ref = seen_a[w["a1"]["id"]]
    assert a.ok("GET", f"/instances/{w['a1']['id']}")["host_id"] == a1_ref
    assert reader.ok("GET", f"/instances/{w['a1']['id']}")["host_id"] == a1_ref
    assert a.ok("GET", f"/disks/{w['disk']['id']}")["host_id"] == a1_ref
    assert a.ok("GET", f"/snapshots/{w['snap']['id']}")["host_id"] == a1_ref
    assert sorted(a.ok("GET", f"/deployment-sets/{w['ds']}")["host_ids"]) == \
        sorted(seen_a.values())
    # another project on the same host sees another value: no co-residency oracle
    [b1] = b.ok("GET", "/instances")["items"]
    assert OPAQUE.match(b1["host_id"]) and b1["host_id"] not in seen_a.values()
    # the admin sees the real ids
    assert {i["id"]: i["host_id"] for i in admin.ok("GET", "/instances")["items"]} == real
    assert admin.ok("GET", f"/disks/{w['disk']['id']}")["host_id"] == real[w["a1"]["id"]]

    # filtering by host: a tenant by its opaque id; a real id finds nothing (no oracle)
    assert [i["id"] for i in a.ok("GET", "/instances", host_id=a1_ref)["items"]] == \
        [w["a1"]["id"]]
    assert a.ok("GET", "/instances", host_id=real[w["a1"]["id"]])["items"] == []
    assert a.ok("GET", "/instances", host_id=b1["host_id"])["items"] == []
    assert {i["id"] for i in admin.ok("GET", "/instances", host_id=real[w["a1"]["id"]])
            ["items"]} == {i for i, h in real.items() if h == real[w["a1"]["id"]]}

    # migrations: the tenant reads its instance's move by opaque ids
    moved = admin.ok("POST", f"/instances/{w['b1']['id']}/migrate",
                     {"host_id": next(h for h in real_ids if h != real[w["b1"]["id"]])})
    [mig] = b.ok("GET", "/migrations")["items"]
    assert mig["id"] == moved["id"]
    assert OPAQUE.match(mig["source_host_id"]) and OPAQUE.match(mig["target_host_id"])
    assert mig["source_host_id"] == b1["host_id"]
    assert admin.ok("GET", f"/migrations/{moved['id']}")["source_host_id"] == \
        real[w["b1"]["id"]]


def test_dry_runs_and_refusals_name_no_host_to_a_tenant(world):
    w = world
    a, admin, r = w["a"], w["admin"], w["r"]
    names = ["hv-one", "hv-two"]
    dry = a.ok("POST", "/instances", {"name": "t", "instance_type": "ecs.t1.nano",
                                      "image_id": w["image"], **w["net_a"], "dry_run": True})
    assert dry["code"] == "DryRunOperation" and OPAQUE.match(dry["host_id"])
    assert dry["host_name"] is None and dry["placement"] is None
    as_admin = admin.ok("POST", "/instances", {
        "name": "t", "instance_type": "ecs.t1.nano", "image_id": w["image"], **w["net_a"],
        "dry_run": True})
    assert as_admin["host_name"] in names and len(as_admin["placement"]["hosts"]) == 2

    # a third member of the two-host set: refused, naming no host to the member
    refused = _create(a, w["net_a"], w["image"], "a3", deployment_set_id=w["ds"])
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["code"] == "DeploymentSet.NoAvailableHost" and \
        body["field"] == "deployment_set_id"
    assert not any(n in body["message"] for n in names), body["message"]
    for h in w["hosts"]:
        assert h.host_id not in body["message"]
    # the operator, in the same project, is told each host's reasons
    scoped = Caller(admin.client, admin.key, {"X-Miniecs-Project": "proj-a"})
    by_admin = _create(scoped, w["net_a"], w["image"], "a3", deployment_set_id=w["ds"])
    assert by_admin.status_code == 409 and all(n in by_admin.json()["message"] for n in names)

    # a host goes Down: the member's instance is Unknown, with no host named
    with r.db.write() as session:
        session.get(Host, w["real"][w["a1"]["id"]]).state = "down"
    shown = a.ok("GET", f"/instances/{w['a1']['id']}")
    assert shown["status"] == "Unknown" and "Down" in shown["status_reason"]
    assert not any(n in shown["status_reason"] for n in names), shown["status_reason"]
    admin_view = admin.ok("GET", f"/instances/{w['a1']['id']}")
    assert any(n in admin_view["status_reason"] for n in names)
