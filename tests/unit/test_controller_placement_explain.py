"""placement explain and instance create dry runs, against many fake hosts."""

from __future__ import annotations

from controller.models import Host, Instance, Zone
from tests.controller_factories import region  # noqa: F401  (fixture)


def _region_of_eight(region):
    """8 hosts: 4 usable with different loads, 1 too small, 1 Down, 1 in maintenance,
    1 in another zone. Returns (net, image)."""
    with region.db.write() as session:
        session.add(Zone(id="zone-b"))
    for i in range(4):
        region.register_host(f"hv-{i}", vcpus=4, memory_mib=4096)
    region.register_host("hv-small", vcpus=1, memory_mib=128)
    region.register_host("hv-down")
    region.register_host("hv-maint")
    region.register_host("hv-other", zone="zone-b")
    with region.db.write() as session:
        session.query(Host).filter(Host.name == "hv-down").update({"state": "down"})
        session.query(Host).filter(Host.name == "hv-maint").update({"state": "maintenance"})
        # different loads: hv-0 emptiest ... hv-3 fullest
        for i in range(4):
            session.query(Host).filter(Host.name == f"hv-{i}").update(
                {"allocated_memory_mib": 512 * i})
    return region.network(), region.image()


def _by_name(explanation) -> dict[str, dict]:
    return {h["host_name"]: h for h in explanation["hosts"]}


def test_explain_lists_every_host_with_reason_or_score(region):  # noqa: F811
    net, image = _region_of_eight(region)
    body = region.instance_body(net, image)
    spread = region.ok("POST", "/placement/explain", body)
    assert spread["policy"] == "spread" and spread["zone_id"] == "zone-a"
    assert spread["demand"] == {"vcpus": 1, "memory_mib": 256, "disk_gib": 1}
    hosts = _by_name(spread)
    assert len(hosts) == 8
    assert [h["host_name"] for h in spread["hosts"][:4]] == ["hv-0", "hv-1", "hv-2", "hv-3"]
    assert [h["rank"] for h in spread["hosts"][:4]] == [1, 2, 3, 4]
    assert spread["chosen_host_name"] == "hv-0" and hosts["hv-0"]["result"] == "chosen"
    assert hosts["hv-1"]["result"] == "eligible" and hosts["hv-1"]["rejected_by"] == []
    # load after for hv-3: (1536 + 256) / 4096 memory beats 1/16 vCPU
    assert hosts["hv-3"]["load_after"] == round(1792 / 4096, 4)
    assert hosts["hv-3"]["score"] == round(1 - 1792 / 4096, 4)

    def why(name):
        return [(r["filter"], r["reason"]) for r in hosts[name]["rejected_by"]]

    assert why("hv-small") == [("capacity", "not enough memory: 0 MiB allocated + 256 MiB "
                                "requested > 128 MiB (128 MiB x 1 overcommit)")]
    assert why("hv-down")[0][0] == "state" and "host Down" in why("hv-down")[0][1]
    assert why("hv-maint") == [("state", "host in maintenance: no new placements")]
    assert why("hv-other") == [("zone", "zone mismatch: host is in zone-b, the request is for "
                                "zone-a")]
    assert all(hosts[n]["result"] == "filtered" and hosts[n]["rank"] is None
               and hosts[n]["score"] is None for n in ("hv-small", "hv-down", "hv-maint",
                                                       "hv-other"))

    pack = region.ok("POST", "/placement/explain", {**body, "placement_policy": "pack"})
    assert [h["host_name"] for h in pack["hosts"][:4]] == ["hv-3", "hv-2", "hv-1", "hv-0"]
    # explain creates nothing, and a create goes where explain said
    assert region.items("/instances") == []
    assert region.create_instance(net, image)["host_id"] == spread["chosen_host_id"]
    assert region.create_instance(net, image, name="p", placement_policy="pack")["host_id"] \
        == pack["chosen_host_id"]


def test_explain_takes_a_body_without_name_or_groups_and_answers_when_nothing_fits(region):  # noqa: F811,E501
    region.register_host("hv-a", vcpus=1, memory_mib=256)
    net, image = region.network(), region.image()
    body = {"instance_type": "ecs.t1.small", "image_id": image,
            "vswitch_id": net["vswitch"]["id"]}
    answer = region.ok("POST", "/placement/explain", body)
    assert answer["chosen_host_id"] is None
    assert answer["hosts"][0]["result"] == "filtered"
    assert answer["hosts"][0]["rejected_by"][0]["filter"] == "capacity"


def test_explain_bad_input(region):  # noqa: F811
    region.register_host()
    net, image = region.network(), region.image()
    body = region.instance_body(net, image)
    for change, status, code, field in (
            ({"placement_policy": "random"}, 400, "InvalidParameter.PlacementPolicy",
             "placement_policy"),
            ({"deployment_set_id": "ds-nope"}, 404, "InvalidDeploymentSetId.NotFound",
             "deployment_set_id"),
            ({"image_id": "m-nope"}, 404, "InvalidImageId.NotFound", "image_id"),
            ({"instance_type": "ecs.huge"}, 404, "InvalidInstanceType.NotFound",
             "instance_type"),
            ({"vswitch_id": "vsw-nope"}, 404, "InvalidVSwitchId.NotFound", "vswitch_id"),
            ({"system_disk_size_gib": 0}, 400, "InvalidParameter.SystemDiskSizeGib",
             "system_disk_size_gib"),
            ({"bogus": 1}, 400, "InvalidParameter.UnknownBogus", "bogus")):
        r = region.call("POST", "/placement/explain", {**body, **change})
        assert (r.status_code, r.json()["code"], r.json()["field"]) == (status, code, field), \
            (change, r.text)


def test_dry_run_places_without_creating(region):  # noqa: F811
    net, image = _region_of_eight(region)
    with region.db.read() as session:
        before = {h.name: (h.generation, h.allocated_vcpus, h.allocated_memory_mib)
                  for h in session.query(Host)}
    r = region.call("POST", "/instances", region.instance_body(
        net, image, dry_run=True, private_ip_address="10.0.1.50", client_token="dry-1"))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["code"] == "DryRunOperation"
    assert answer["host_name"] == "hv-0" == answer["placement"]["chosen_host_name"]
    assert len(answer["placement"]["hosts"]) == 8
    with region.db.read() as session:
        assert session.query(Instance).count() == 0
        after = {h.name: (h.generation, h.allocated_vcpus, h.allocated_memory_mib)
                 for h in session.query(Host)}
    assert after == before  # no counter moved, no spec generation bumped
    # neither the address nor the client token was taken
    inst = region.create_instance(net, image, private_ip_address="10.0.1.50",
                                  client_token="dry-1")
    assert inst["host_id"] == answer["host_id"] and inst["status"] == "Pending"


def test_dry_run_fails_as_the_create_would(region):  # noqa: F811
    region.register_host("hv-a", vcpus=1, memory_mib=256)
    net, image = region.network(), region.image()
    region.create_instance(net, image, private_ip_address="10.0.1.9")
    ds = region.ok("POST", "/deployment-sets", {"name": "s"})
    cases = (
        ({"instance_type": "ecs.t1.small"}, 409, "OperationDenied.NoStock"),
        ({"private_ip_address": "10.0.1.9"}, 409, "InvalidPrivateIpAddress.Duplicated"),
        ({"security_group_ids": ["sg-nope"]}, 404, "InvalidSecurityGroupId.NotFound"),
        ({"deployment_set_id": "ds-nope"}, 404, "InvalidDeploymentSetId.NotFound"),
        ({"placement_policy": "fill"}, 400, "InvalidParameter.PlacementPolicy"),
    )
    for change, status, code in cases:
        r = region.call("POST", "/instances",
                        region.instance_body(net, image, name="d", dry_run=True, **change))
        assert (r.status_code, r.json()["code"]) == (status, code), (change, r.text)
    # the host is full (256 MiB): a set member dry run fails on capacity, not the set
    r = region.call("POST", "/instances", region.instance_body(
        net, image, name="d", dry_run=True, deployment_set_id=ds["id"]))
    assert (r.status_code, r.json()["code"]) == (409, "OperationDenied.NoStock")
    assert len(region.items("/instances")) == 1
    assert region.ok("GET", f"/deployment-sets/{ds['id']}")["instance_ids"] == []
