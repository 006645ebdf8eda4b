"""Deployment sets through the API with fake agents: one member per host, clear failures."""

from __future__ import annotations

from controller.models import Host
from tests.controller_factories import region  # noqa: F401  (fixture)


def _allocated(region) -> dict[str, dict]:
    return {h["name"]: h["allocated"] for h in region.items("/hosts")}


def test_crud_and_bad_input(region):  # noqa: F811
    ds = region.ok("POST", "/deployment-sets", {"name": "web-ha"})
    assert ds["id"].startswith("ds-") and ds["strategy"] == "Availability"
    assert ds["instance_ids"] == [] and ds["host_ids"] == []
    assert [d["id"] for d in region.items("/deployment-sets")] == [ds["id"]]
    assert [d["id"] for d in region.items("/deployment-sets", name="web-ha")] == [ds["id"]]
    assert region.items("/deployment-sets", name="other") == []
    r = region.call("POST", "/deployment-sets", {"name": "x", "strategy": "Affinity"})
    assert (r.status_code, r.json()["code"], r.json()["field"]) == \
        (400, "InvalidParameter.Strategy", "strategy")
    r = region.call("POST", "/deployment-sets", {"name": "bad name; rm -rf"})
    assert (r.status_code, r.json()["field"]) == (400, "name")
    r = region.call("GET", "/deployment-sets/ds-nope")
    assert (r.status_code, r.json()["code"]) == (404, "InvalidDeploymentSetId.NotFound")
    assert region.call("DELETE", f"/deployment-sets/{ds['id']}").status_code == 204
    assert region.call("DELETE", f"/deployment-sets/{ds['id']}").status_code == 404
    assert region.items("/deployment-sets") == []


def test_members_land_on_distinct_hosts_and_a_fourth_fails_clearly(region):  # noqa: F811
    agents = [region.register_host(f"hv-{i}") for i in range(3)]
    net, image = region.network(), region.image()
    ds = region.ok("POST", "/deployment-sets", {"name": "web-ha"})
    # pack would put them all on one host: the set overrides the policy's preference
    members = [region.create_instance(net, image, name=f"web-{i}", deployment_set_id=ds["id"],
                                      placement_policy="pack") for i in range(3)]
    assert len({m["host_id"] for m in members}) == 3
    assert all(m["deployment_set_id"] == ds["id"] for m in members)
    shown = region.ok("GET", f"/deployment-sets/{ds['id']}")
    assert shown["instance_ids"] == [m["id"] for m in members]
    assert sorted(shown["host_ids"]) == sorted(a.host_id for a in agents)

    before = _allocated(region)
    r = region.call("POST", "/instances",
                    region.instance_body(net, image, name="web-3", deployment_set_id=ds["id"]))
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["code"] == "DeploymentSet.NoAvailableHost"
    assert body["field"] == "deployment_set_id"
    assert "deployment set conflict" in body["message"] and "hv-2" in body["message"]
    assert len(region.items("/instances")) == 3
    assert _allocated(region) == before
    # Outside the set, the same request fits.
    region.create_instance(net, image, name="free")

    # Delete refused while it has members; a Deleting member still holds its host.
    r = region.call("DELETE", f"/deployment-sets/{ds['id']}")
    assert (r.status_code, r.json()["code"]) == (409, "DependencyViolation.DeploymentSet.Instances")
    victim = members[0]
    agent = next(a for a in agents if a.host_id == victim["host_id"])
    agent.converge()
    region.ok("DELETE", f"/instances/{victim['id']}", force="true")
    r = region.call("POST", "/instances",
                    region.instance_body(net, image, name="web-4", deployment_set_id=ds["id"]))
    assert r.json()["code"] == "DeploymentSet.NoAvailableHost"
    agent.spec()
    agent.report({})  # the host no longer has it: Deleted, and the host is free again
    assert region.ok("GET", f"/instances/{victim['id']}")["status"] == "Deleted"
    again = region.create_instance(net, image, name="web-4", deployment_set_id=ds["id"])
    assert again["host_id"] == victim["host_id"]


def test_no_stock_is_not_blamed_on_the_set(region):  # noqa: F811
    region.register_host("hv-a", memory_mib=256)  # one nano fills it
    region.register_host("hv-tiny", memory_mib=128)
    net, image = region.network(), region.image()
    ds = region.ok("POST", "/deployment-sets", {"name": "s"})
    region.create_instance(net, image, deployment_set_id=ds["id"])
    r = region.call("POST", "/instances",
                    region.instance_body(net, image, name="w2", deployment_set_id=ds["id"]))
    # hv-a holds a member but is full too, hv-tiny has no room: no host is kept free of
    # this instance by the set alone, so it is a capacity problem
    assert (r.status_code, r.json()["code"]) == (409, "OperationDenied.NoStock")
    assert "hv-tiny: not enough memory" in r.json()["message"]


def test_down_host_and_unknown_set(region):  # noqa: F811
    region.register_host("hv-a")
    region.register_host("hv-b")
    with region.db.write() as session:
        session.query(Host).filter(Host.name == "hv-b").update({"state": "down"})
    net, image = region.network(), region.image()
    ds = region.ok("POST", "/deployment-sets", {"name": "s"})
    region.create_instance(net, image, deployment_set_id=ds["id"])
    r = region.call("POST", "/instances",
                    region.instance_body(net, image, name="w2", deployment_set_id=ds["id"]))
    assert r.json()["code"] == "DeploymentSet.NoAvailableHost"
    assert "hv-b: host Down" in r.json()["message"]
    r = region.call("POST", "/instances",
                    region.instance_body(net, image, name="w3", deployment_set_id="ds-missing"))
    assert (r.status_code, r.json()["code"], r.json()["field"]) == \
        (404, "InvalidDeploymentSetId.NotFound", "deployment_set_id")
    assert len(region.items("/instances")) == 1
