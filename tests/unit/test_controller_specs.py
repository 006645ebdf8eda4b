"""Spec compiler: what a host must realise, and when its generation moves."""

from __future__ import annotations

from agent import spec as contract
from controller.services.specs import compile_host_spec
from tests.controller_factories import region  # noqa: F401 - fixture


def _compile(region, host_id) -> contract.HostSpec:
    with region.db.read() as session:
        return compile_host_spec(session, host_id, region.settings)


def test_compiled_spec_carries_everything(region):
    agent = region.register_host()
    net = region.network()
    other_vsw = region.ok("POST", "/vswitches", {"name": "db", "vpc_id": net["vpc"]["id"],
                                                 "zone_id": "zone-a",
                                                 "cidr_block": "10.0.2.0/24"})
    kp = region.ok("POST", "/key-pairs", {"name": "me"})
    image = region.image(virtual_size_gib=2)
    inst = region.create_instance(net, image, key_pair_id=kp["id"], hostname="web-1",
                                  user_data="#!/bin/sh\necho hi\n", system_disk_size_gib=5)

    spec = _compile(region, agent.host_id)
    assert spec.host_id == agent.host_id and spec.schema_version == contract.SCHEMA_VERSION
    (i,) = spec.instances
    assert (i.id, i.name, i.hostname, i.vcpus, i.memory_mib, i.power) == \
        (inst["id"], "web-1", "web-1", 1, 256, "running")
    assert i.user_data == "#!/bin/sh\necho hi\n"
    assert i.ssh_authorized_keys == [kp["public_key"]]
    (disk,) = i.disks
    assert (disk.role, disk.size_bytes, disk.image_id, disk.device) == \
        ("system", 5 * 1024 ** 3, image, "vda")
    (nic,) = i.nics
    assert (nic.ip, nic.mac, nic.prefix_len, nic.gateway) == \
        (inst["private_ip_address"], inst["mac_address"], 24, "10.0.1.1")
    assert nic.security_group_ids == [net["sg"]["id"]]
    assert nic.tap.startswith(contract.TAP_PREFIX) and len(nic.tap) <= 15

    (network,) = spec.networks
    assert network.vpc_id == net["vpc"]["id"] and network.vni == net["vpc"]["vni"]
    assert network.bridge == nic.bridge and network.bridge.startswith(contract.BRIDGE_PREFIX)
    for name in (network.bridge, network.veth_bridge_side, network.veth_router_side, nic.tap):
        assert len(name) <= 15
    assert network.veth_bridge_side != network.veth_router_side
    assert network.router_ns.startswith(contract.ROUTER_NS_PREFIX)
    assert {(g.vswitch_id, g.gateway_ip) for g in network.gateways} == {
        (net["vswitch"]["id"], "10.0.1.1"), (other_vsw["id"], "10.0.2.1")}

    (img,) = spec.images
    assert (img.id, img.format, img.virtual_size_bytes) == (image, "qcow2", 2 * 1024 ** 3)
    assert img.url == f"/api/v1/agent/images/{image}/data" and len(img.sha256) == 64
    # The HTTP answer is the same document.
    assert contract.HostSpec.model_validate(agent.spec()) == spec


def test_generation_moves_with_every_desired_change(region):
    agent = region.register_host()
    other = region.register_host("hv-02", vcpus=0)  # no room: nothing lands there
    net = region.network()
    image = region.image()

    def gen(host_id=agent.host_id):
        return _compile(region, host_id).generation

    g0 = gen()
    inst = region.create_instance(net, image)
    g1 = gen()
    assert g1 > g0
    region.ok("POST", "/vswitches", {"name": "b", "vpc_id": net["vpc"]["id"],
                                     "zone_id": "zone-a", "cidr_block": "10.0.9.0/24"})
    g2 = gen()
    assert g2 > g1
    region.ok("POST", f"/instances/{inst['id']}/stop")
    g3 = gen()
    assert g3 > g2
    region.ok("POST", f"/instances/{inst['id']}/stop")  # same desired state: no bump
    assert gen() == g3
    region.ok("PATCH", f"/instances/{inst['id']}", {"description": "x"})  # not in the spec
    assert gen() == g3
    agent.report({inst["id"]: "stopped"})  # observed state never bumps
    assert gen() == g3
    region.ok("DELETE", f"/instances/{inst['id']}")
    assert gen() > g3
    assert _compile(region, agent.host_id).instances == []
    assert gen(other.host_id) == _compile(region, other.host_id).generation == 1


def test_spec_only_lists_the_hosts_own_instances(region):
    a = region.register_host("hv-a")
    b = region.register_host("hv-b")
    net = region.network()
    image = region.image()
    made = [region.create_instance(net, image, name=f"n{i}") for i in range(4)]
    by_host = {a.host_id: set(), b.host_id: set()}
    for inst in made:
        by_host[inst["host_id"]].add(inst["id"])
    assert all(by_host.values()), "spread should use both hosts"
    for host_id, expected in by_host.items():
        assert {i.id for i in _compile(region, host_id).instances} == expected


def test_a_hosts_rare_rows_are_read_only_when_it_has_them(region):
    """A host's own part asks in one statement whether the host has migrations, data disks,
    snapshots, storage or instance operations and EIPs, and reads each kind only then; a
    host that has them all gets them all in its spec."""
    from sqlalchemy import update

    from controller.models import Disk
    from tests.controller_factories import sql_statements

    region.settings.eip_pool = "203.0.113.0/29"
    agent = region.register_host()
    net = region.network()
    inst = region.create_instance(net, region.image())

    def read_tables(statements) -> set[str]:
        """Tables read by a statement of their own (not the one probe, which names all)."""
        rare = ("migrations", "disks", "snapshots", "storage_operations", "operations",
                "eips")
        return {t for s in statements if "EXISTS" not in s for t in rare
                if f"FROM {t} " in f"{s} " or f"FROM {t}\n" in s}

    with sql_statements(region.db) as bare:
        spec = _compile(region, agent.host_id)
    assert sum("EXISTS" in s for s in bare) == 1
    assert read_tables(bare) == {"disks"}  # the instances' own disks, by instance
    assert (spec.snapshots, spec.storage_operations, spec.migrations) == ([], [], [])

    disk = region.ok("POST", "/disks", {"name": "data", "size_gib": 1,
                                        "host_id": agent.host_id})
    agent.spec()
    r = region.client.post("/api/v1/agent/report", headers=agent.headers, json={
        "host_id": agent.host_id, "generation_applied": agent.seen,
        "generation_seen": agent.seen, "disks": [{"id": disk["id"], "size_bytes": 1 << 30}]})
    assert r.status_code == 204, r.text
    snap = region.ok("POST", "/snapshots", {"disk_id": disk["id"]})
    reset_of = region.ok("POST", "/snapshots", {"disk_id": disk["id"]})
    with region.db.write() as session:  # as if the agent had reported it taken
        from controller.models_storage import Snapshot
        session.execute(update(Snapshot).where(Snapshot.id == reset_of["id"])
                        .values(status="accomplished"))
        assert session.get(Disk, disk["id"]).status == "Available"
    reset = region.ok("POST", f"/disks/{disk['id']}/reset", {"snapshot_id": reset_of["id"]})
    eip = region.ok("POST", "/eips", {})
    region.ok("POST", f"/eips/{eip['id']}/associate", {"instance_id": inst["id"]})
    agent.converge()  # Running: it may reboot
    reboot = region.ok("POST", f"/instances/{inst['id']}/reboot")

    with sql_statements(region.db) as full:
        spec = _compile(region, agent.host_id)
    assert read_tables(full) >= {"disks", "snapshots", "storage_operations", "operations",
                                 "eips"}
    assert [d.id for d in spec.disks] == [disk["id"]]
    assert {s.id for s in spec.snapshots} == {snap["id"], reset_of["id"]}
    assert [o.id for o in spec.storage_operations] == [reset["id"]]
    (i,) = spec.instances
    assert [o.kind for o in i.operations] == ["reboot"], reboot
    (network,) = spec.networks
    assert [(e.public_ip, e.private_ip) for e in network.uplink.eips] == \
        [(eip["ip_address"], inst["private_ip_address"])]
