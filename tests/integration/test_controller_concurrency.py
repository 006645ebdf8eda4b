"""20 concurrent instance creates through the real HTTP API (uvicorn on 127.0.0.1, real
threads) against a host with room for 8: never overcommitted, distinct IPs and MACs,
counters equal to the sum — on SQLite and on PostgreSQL."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from controller.app import create_app
from controller.models import Host, Instance, Nic
from tests.controller_factories import (  # noqa: F401 - database_url is a fixture
    add_image, database_url, make_settings, open_database,
)

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(database_url, tmp_path):
    """(base URL, Database, Settings, tokens) of a controller served by uvicorn in a thread."""
    settings = make_settings(tmp_path)
    db, tokens = open_database(database_url)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, db), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", db, settings, tokens
    server.should_exit = True
    thread.join(10)
    db.dispose()


def _prepare(base: str, tokens, db, settings) -> tuple[httpx.Client, dict]:
    api = httpx.Client(base_url=base + "/api/v1", timeout=60,
                       headers={"Authorization": f"Bearer {tokens.admin_token}"})
    enrol = {"Authorization": f"Bearer {tokens.enrolment_token}"}
    # 2 vCPUs x cpu ratio 4.0 = 8 one-vCPU instances; memory and disk are plentiful.
    reg = httpx.post(base + "/api/v1/agent/register", headers=enrol, json={
        "name": "hv-01", "zone": "zone-a", "underlay_address": "192.0.2.11",
        "virt_type": "qemu", "capacity": {"vcpus": 2, "memory_mib": 65536, "disk_gib": 1000}})
    assert reg.status_code == 201, reg.text
    host = reg.json()
    r = httpx.post(base + "/api/v1/agent/report",
                   headers={"Authorization": f"Bearer {host['host_token']}"},
                   json={"host_id": host["host_id"], "generation_applied": -1,
                         "generation_seen": -1})
    assert r.status_code == 204
    vpc = api.post("/vpcs", json={"name": "v", "cidr_block": "10.0.0.0/16"}).json()
    # Several vSwitches, so creates do not queue behind one vSwitch row's lock and the
    # host row's accounting is what must hold.
    vswitches = [api.post("/vswitches", json={
        "name": f"s{k}", "vpc_id": vpc["id"], "zone_id": "zone-a",
        "cidr_block": f"10.0.{k}.0/24"}).json()["id"] for k in range(4)]
    sg = api.post("/security-groups", json={"name": "g", "vpc_id": vpc["id"]}).json()
    image = add_image(db, settings)
    body = {"instance_type": "ecs.t1.nano", "image_id": image,
            "security_group_ids": [sg["id"]]}
    return api, body, vswitches


def test_twenty_concurrent_creates_never_overcommit(served):
    base, db, settings, tokens = served
    api, body, vswitches = _prepare(base, tokens, db, settings)
    barrier = threading.Barrier(20)

    def create(n: int) -> httpx.Response:
        with httpx.Client(base_url=base + "/api/v1", timeout=120, headers=api.headers) as c:
            barrier.wait()
            return c.post("/instances", json={**body, "name": f"c{n}",
                                              "vswitch_id": vswitches[n % 4]})

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(create, range(20)))

    codes = Counter(r.status_code for r in answers)
    assert set(codes) <= {202, 409}, [r.text for r in answers if r.status_code not in (202, 409)]
    made = [r.json() for r in answers if r.status_code == 202]
    refused = [r.json() for r in answers if r.status_code == 409]
    assert len(made) == 8, codes
    assert {e["code"] for e in refused} == {"OperationDenied.NoStock"}
    assert all("no host in zone zone-a has room" in e["message"] for e in refused)
    ips = [(i["vswitch_id"], i["private_ip_address"]) for i in made]
    macs = [i["mac_address"] for i in made]
    assert len(set(ips)) == len(ips) == 8
    assert len(set(macs)) == len(macs) == 8

    with db.read() as session:
        host = session.scalars(select(Host)).one()
        live = list(session.scalars(select(Instance).where(Instance.deleted_at.is_(None))))
        assert len(live) == 8
        assert host.allocated_vcpus == sum(i.vcpus for i in live) == 8
        assert host.allocated_memory_mib == sum(i.memory_mib for i in live)
        assert host.allocated_vcpus <= host.capacity_vcpus * settings.cpu_overcommit
        assert session.scalar(select(func.count()).select_from(Nic)) == 8
        pairs = session.execute(select(Nic.vswitch_id, Nic.ip)).all()
        assert len(set(pairs)) == 8
    listed = api.get("/instances", params={"max_results": 100}).json()["items"]
    assert sorted(i["id"] for i in listed) == sorted(i["id"] for i in made)
    api.close()


def test_concurrent_retries_with_one_client_token_make_one_instance(served):
    base, db, settings, tokens = served
    api, body, vswitches = _prepare(base, tokens, db, settings)
    body["vswitch_id"] = vswitches[0]
    barrier = threading.Barrier(8)

    def create(_: int) -> httpx.Response:
        with httpx.Client(base_url=base + "/api/v1", timeout=120, headers=api.headers) as c:
            barrier.wait()
            return c.post("/instances", json={**body, "name": "same",
                                              "client_token": "tok-123"})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(create, range(8)))
    assert all(r.status_code in (200, 202) for r in answers), [r.text for r in answers]
    assert sum(r.status_code == 202 for r in answers) == 1
    assert len({r.json()["id"] for r in answers}) == 1
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 1
        assert session.scalars(select(Host)).one().allocated_vcpus == 1
    api.close()
