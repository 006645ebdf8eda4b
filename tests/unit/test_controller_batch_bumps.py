"""A batch create bumps each host and VPC once, and every member's port reaches every host.

Each member used to bump its own host and all of its VPC's hosts again: a batch of 20
in one VPC was 40 UPDATEs of host generations and 20 reads of the VPC's hosts.
"""

from __future__ import annotations

from tests.controller_factories import region  # noqa: F401 - fixture
from tests.controller_factories import sql_statements


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
