"""A batch create's writes: each host and VPC bumped once, the members written together.

Each member used to bump its own host and all of its VPC's hosts again: a batch of 20
in one VPC was 40 UPDATEs of host generations and 20 reads of the VPC's hosts. And each
member was flushed as it was placed (its INSERTs and the project's quota UPDATE): the
members now go in one flush, their addresses and MACs kept by the batch meanwhile, so
what a flush checks (the quota, unique addresses) must still hold for the batch as a whole.
"""

from __future__ import annotations

from tests.controller_factories import database_url, region, region_any_db  # noqa: F401
from tests.controller_factories import sql_statements


def _statements(seen: list[str], prefix: str) -> list[str]:
    return [s for s in seen if s.upper().startswith(prefix)]


def test_batch_bumps_each_host_once_and_every_host_sees_every_port(region):
    agents = [region.register_host(f"hv-{n}", vcpus=8, underlay=f"192.0.2.{11 + n}")
              for n in range(3)]
    net = region.network()
    image = region.image()
    region.create_instance(net, image, name="first")
    before = {a.host_id: a.spec()["generation"] for a in agents}
    with sql_statements(region.db) as seen:
        made = region.ok("POST", "/instances/batch", {
            **region.instance_body(net, image, name="w-[1,3]"), "amount": 6})["items"]
    bumps = [s for s in seen if s.upper().startswith("UPDATE HOSTS") and "generation" in s]
    assert len(made) == 6 and len({i["host_id"] for i in made}) == 3
    # the members' own hosts in one UPDATE, the VPC's hosts in another
    assert len(bumps) == 2, bumps
    ips = {i["private_ip_address"] for i in made}
    for agent in agents:
        spec = agent.spec()
        assert spec["generation"] > before[agent.host_id]
        ports = {p["ip"] for n in spec["networks"] for p in n["ports"]}
        assert ips <= ports, (agent.host_id, ips - ports)


def test_members_are_written_in_one_flush_with_distinct_addresses(region_any_db):  # noqa: F811
    region = region_any_db
    for n in range(2):
        region.register_host(f"hv-{n}", vcpus=8, underlay=f"192.0.2.{11 + n}")
    net, image = region.network(), region.image()
    with sql_statements(region.db) as seen:
        made = region.ok("POST", "/instances/batch", {
            **region.instance_body(net, image, name="w-[1,3]"), "amount": 5})["items"]
    assert len(made) == 5
    # one INSERT of the five instances (an executemany), one of their NICs, one quota charge
    assert len(_statements(seen, "INSERT INTO INSTANCES")) == 1, seen
    assert len(_statements(seen, "INSERT INTO NICS")) == 1
    assert len(_statements(seen, "UPDATE PROJECTS")) == 1
    # the members' MACs drawn and checked at once, their vSwitch read once
    assert len([s for s in seen if "FROM nics" in s and "mac" in s.split("WHERE")[-1]]) == 1
    # (PostgreSQL: the batch locks it before the zone's hosts, then the first member's
    # check reads it again)
    assert len([s for s in seen if "FROM vswitches" in s and "vswitches.id =" in s]) == \
        (1 if region.db.is_sqlite else 2)
    assert len({i["private_ip_address"] for i in made}) == 5
    assert len({i["mac_address"] for i in made}) == 5
    assert region.ok("GET", "/projects/default")["usage"]["instances"] == 5
    # each claim an UPDATE that returns the host's new counters: no host read back after
    # it; on PostgreSQL the zone's host rows locked once, at the start, and nothing after
    claims = _statements(seen, "UPDATE HOSTS SET ALLOCATED_VCPUS")
    assert len(claims) == 5 and all("RETURNING" in s for s in claims), claims
    assert not [s for s in seen if "FROM hosts" in s and "WHERE hosts.id = " in s], seen
    assert len([s for s in seen if "FROM hosts" in s and "FOR UPDATE" in s]) == \
        (0 if region.db.is_sqlite else 1)
    assert sorted(h["allocated"]["vcpus"] for h in region.items("/hosts")) == [2, 3]
    # a retry with the client token answers the members in their order
    body = {**region.instance_body(net, image, name="t-[1,1]"), "amount": 3,
            "client_token": "tok-1"}
    first = region.ok("POST", "/instances/batch", body)["items"]
    again = region.call("POST", "/instances/batch", body).json()
    assert [i["name"] for i in again["items"]] == ["t-1", "t-2", "t-3"]
    assert [i["id"] for i in again["items"]] == [i["id"] for i in first]


def test_a_batch_asking_one_address_twice_or_past_the_quota_creates_nothing(region):  # noqa: F811
    region.register_host(vcpus=8)
    net, image = region.network(), region.image()
    r = region.call("POST", "/instances/batch", {
        **region.instance_body(net, image, name="w-[1,1]", private_ip_address="10.0.1.50"),
        "amount": 2})
    assert (r.status_code, r.json()["code"], r.json()["field"]) == \
        (409, "InvalidPrivateIpAddress.Duplicated", "private_ip_address"), r.text
    region.ok("PUT", "/projects/default/quota", {"instances": 3})
    region.create_instance(net, image, name="one")
    r = region.call("POST", "/instances/batch", {
        **region.instance_body(net, image, name="w-[1,1]"), "amount": 3})
    assert (r.status_code, r.json()["code"]) == (403, "QuotaExceeded.Instances"), r.text
    assert [i["name"] for i in region.items("/instances")] == ["one"]
    assert region.ok("GET", "/projects/default")["usage"]["instances"] == 1
    assert len(region.ok("POST", "/instances/batch", {
        **region.instance_body(net, image, name="w-[1,1]"), "amount": 2})["items"]) == 2


def test_a_batch_in_a_deployment_set_puts_each_member_on_its_own_host(region):  # noqa: F811
    for n in range(3):
        region.register_host(f"hv-{n}", vcpus=8, underlay=f"192.0.2.{11 + n}")
    net, image = region.network(), region.image()
    ds = region.ok("POST", "/deployment-sets", {"name": "web-ha"})
    made = region.ok("POST", "/instances/batch", {
        **region.instance_body(net, image, name="w-[1,1]", deployment_set_id=ds["id"],
                               placement_policy="pack"), "amount": 3})["items"]
    assert len({i["host_id"] for i in made}) == 3
    r = region.call("POST", "/instances/batch", {
        **region.instance_body(net, image, name="x-[1,1]", deployment_set_id=ds["id"]),
        "amount": 1})
    assert (r.status_code, r.json()["code"]) == (409, "DeploymentSet.NoAvailableHost")
    other = region.ok("POST", "/deployment-sets", {"name": "db-ha"})
    r = region.call("POST", "/instances/batch", {
        **region.instance_body(net, image, name="d-[1,1]", deployment_set_id=other["id"]),
        "amount": 4})
    assert (r.status_code, r.json()["code"]) == (409, "DeploymentSet.NoAvailableHost")
    assert len(region.items("/instances")) == 3
