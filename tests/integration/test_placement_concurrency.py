"""Concurrent creates into one deployment set through the real HTTP API (uvicorn, real
threads): never two members on a host, on SQLite and on PostgreSQL; the database's own
partial unique index refuses a second live member on a host even without the scheduler."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from controller.models import Instance
from tests.controller_factories import add_image, database_url  # noqa: F401  (fixture)
from tests.integration.test_controller_concurrency import served  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

HOSTS = 4
CREATES = 12


def _enrol(base: str, tokens, name: str) -> None:
    enrol = {"Authorization": f"Bearer {tokens.enrolment_token}"}
    reg = httpx.post(base + "/api/v1/agent/register", headers=enrol, json={
        "name": name, "zone": "zone-a", "underlay_address": "192.0.2.11",
        "virt_type": "qemu", "capacity": {"vcpus": 8, "memory_mib": 65536, "disk_gib": 1000}})
    assert reg.status_code == 201, reg.text
    host = reg.json()
    r = httpx.post(base + "/api/v1/agent/report",
                   headers={"Authorization": f"Bearer {host['host_token']}"},
                   json={"host_id": host["host_id"], "generation_applied": -1,
                         "generation_seen": -1})
    assert r.status_code == 204


def test_concurrent_creates_into_one_set_never_share_a_host(served):  # noqa: F811
    base, db, settings, tokens = served
    for i in range(HOSTS):
        _enrol(base, tokens, f"hv-{i:02d}")
    api = httpx.Client(base_url=base + "/api/v1", timeout=120,
                       headers={"Authorization": f"Bearer {tokens.admin_token}"})
    vpc = api.post("/vpcs", json={"name": "v", "cidr_block": "10.0.0.0/16"}).json()
    # Several vSwitches, so the creates do not queue behind one vSwitch row's lock: the
    # deployment set's lock and the index are what must hold.
    vswitches = [api.post("/vswitches", json={
        "name": f"s{k}", "vpc_id": vpc["id"], "zone_id": "zone-a",
        "cidr_block": f"10.0.{k}.0/24"}).json()["id"] for k in range(4)]
    sg = api.post("/security-groups", json={"name": "g", "vpc_id": vpc["id"]}).json()
    image = add_image(db, settings)
    ds = api.post("/deployment-sets", json={"name": "ha"}).json()

    def create(k: int) -> httpx.Response:
        with httpx.Client(base_url=base + "/api/v1", timeout=120, headers={
                "Authorization": f"Bearer {tokens.admin_token}"}) as c:
            return c.post("/instances", json={
                "name": f"m{k}", "instance_type": "ecs.t1.nano", "image_id": image,
                "vswitch_id": vswitches[k % 4], "security_group_ids": [sg["id"]],
                "deployment_set_id": ds["id"], "placement_policy": "pack"})

    with ThreadPoolExecutor(CREATES) as pool:
        answers = list(pool.map(create, range(CREATES)))
    codes = Counter((r.status_code, r.json().get("code") if r.status_code >= 400 else None)
                    for r in answers)
    assert codes == {(202, None): HOSTS,
                     (409, "DeploymentSet.NoAvailableHost"): CREATES - HOSTS}, codes
    placed = [r.json()["host_id"] for r in answers if r.status_code == 202]
    assert len(set(placed)) == HOSTS
    with db.read() as session:
        rows = session.execute(select(Instance.host_id)
                               .where(Instance.deployment_set_id == ds["id"])).all()
    assert sorted(h for (h,) in rows) == sorted(placed)
    assert sorted(api.get(f"/deployment-sets/{ds['id']}").json()["host_ids"]) == sorted(placed)

    # The database's guard, beneath the scheduler: a second live member on a host fails.
    with pytest.raises(IntegrityError), db.write() as session:
        first = session.scalars(select(Instance).where(
            Instance.deployment_set_id == ds["id"])).first()
        other = session.scalars(select(Instance).where(
            Instance.deployment_set_id == ds["id"], Instance.id != first.id)).first()
        other.host_id = first.host_id
        session.flush()
    api.close()
