"""The whole API lifecycle on each real backend (SQLite file, PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.controller_factories import database_url, region_any_db  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration


def test_lifecycle_on_each_backend(region_any_db):
    region = region_any_db
    agent = region.register_host()
    net = region.network()
    image = region.image()
    kp = region.ok("POST", "/key-pairs", {"name": "k"})
    inst = region.create_instance(net, image, key_pair_id=kp["id"], client_token="ct-1",
                                  user_data="#cloud-config\n" + "x" * 30000)
    assert region.ok("POST", "/instances", region.instance_body(
        net, image, client_token="ct-1"))["id"] == inst["id"]
    spec = agent.spec()
    assert spec["instances"][0]["ssh_authorized_keys"] == [kp["public_key"]]
    agent.report({inst["id"]: "running"})
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Running"

    op = region.ok("POST", f"/instances/{inst['id']}/reboot")
    agent.spec()
    agent.report(operations=[{"id": op["id"], "ok": False, "message": "guest hung"}])
    assert region.ok("GET", f"/operations/{op['id']}")["outcome"] == "failed"

    region.ok("POST", f"/instances/{inst['id']}/stop", {"force": True})
    agent.spec()
    agent.report({inst["id"]: "stopped"})
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Stopped"
    region.ok("DELETE", f"/instances/{inst['id']}")
    agent.spec()
    agent.report({})
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Deleted"
    assert region.items("/hosts")[0]["allocated"] == {"vcpus": 0, "memory_mib": 0,
                                                      "disk_gib": 0}
    for path in (f"/vswitches/{net['vswitch']['id']}", f"/security-groups/{net['sg']['id']}",
                 f"/vpcs/{net['vpc']['id']}", f"/images/{image}", f"/key-pairs/{kp['id']}"):
        region.ok("DELETE", path)
    assert region.items("/vpcs") == [] and region.items("/images") == []


def test_refusals_leave_nothing_on_each_backend(region_any_db):
    region = region_any_db
    region.register_host(vcpus=1, memory_mib=256)
    net = region.network()
    image = region.image()
    region.create_instance(net, image, private_ip_address="10.0.1.5")
    for override, code in (({"private_ip_address": "10.0.1.5"},
                            "InvalidPrivateIpAddress.Duplicated"),
                           ({"private_ip_address": "10.0.1.254"},
                            "InvalidPrivateIpAddress.Reserved"),
                           ({}, "OperationDenied.NoStock")):
        r = region.call("POST", "/instances", region.instance_body(net, image, name="b",
                                                                   **override))
        assert r.json()["code"] == code
    assert len(region.items("/instances")) == 1
    host = region.items("/hosts")[0]
    assert host["allocated"] == {"vcpus": 1, "memory_mib": 256, "disk_gib": 1}
    r = region.call("POST", "/vswitches", {"name": "o", "vpc_id": net["vpc"]["id"],
                                           "zone_id": "zone-a", "cidr_block": "10.0.1.0/25"})
    assert r.json()["code"] == "InvalidVSwitchCidr.Overlapped"
    assert len(region.items("/vswitches")) == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_dead_idle_postgresql_connection_is_replaced_before_use(database_url, monkeypatch):
    """PostgreSQL connections are pinged only after sitting idle (``db.IDLE_PING_S``): one
    whose server process went away meanwhile (a restart of PostgreSQL) is replaced, and
    the caller never sees it. Without the ping the caller gets the dead connection."""
    from sqlalchemy import create_engine, text

    from controller import db as dbmod

    engine = dbmod.create_db_engine(database_url)
    killer = create_engine(database_url, poolclass=None)
    try:
        with engine.connect() as conn:
            victim = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with engine.connect() as conn:  # in steady use: the same pooled connection
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == victim
        with killer.connect() as other:
            assert other.execute(text("SELECT pg_terminate_backend(:pid)"),
                                 {"pid": victim}).scalar()
        monkeypatch.setattr(dbmod, "IDLE_PING_S", 0.0)
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        assert pid != victim
    finally:
        engine.dispose()
        killer.dispose()
