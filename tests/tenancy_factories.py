"""Tenancy test helpers: projects with member keys, and a world of resources in one project.

Used by tests/unit/test_tenancy.py (TestClient) and tests/integration/test_tenancy_isolation.py
(uvicorn over real HTTP); ``client`` is anything with httpx's ``request`` method whose
base URL is the controller's root.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.models import Image
from tests.controller_factories import FakeAgent, add_image

ADMIN_ROUTES_PREFIX = "/api/v1"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Caller:
    """One key's view of the API."""

    client: object
    key: str
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {**bearer(self.key), **self.extra_headers}

    def call(self, method: str, path: str, json=None, **params):
        return self.client.request(method, ADMIN_ROUTES_PREFIX + path, json=json,
                                   params=params or None, headers=self.headers)

    def ok(self, method: str, path: str, json=None, **params) -> dict:
        r = self.call(method, path, json, **params)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else {}


def make_project(admin: Caller, project_id: str, role: str = "member", **quota) -> Caller:
    """A project with one user holding one key of ``role``; the key's caller."""
    if admin.call("GET", f"/projects/{project_id}").status_code == 404:
        admin.ok("POST", "/projects", {"id": project_id, "quota": quota})
    user = admin.ok("POST", "/users", {"name": f"{project_id}-{role}-user",
                                       "project_id": project_id})
    key = admin.ok("POST", "/api-keys", {"user_id": user["id"], "role": role})
    assert key["key"].startswith("mecsk_") and key["project_id"] == project_id
    return Caller(admin.client, key["key"])


def add_key(admin: Caller, project_id: str, role: str, name: str) -> tuple[Caller, str]:
    user = admin.ok("POST", "/users", {"name": name, "project_id": project_id})
    key = admin.ok("POST", "/api-keys", {"user_id": user["id"], "role": role})
    return Caller(admin.client, key["key"]), key["id"]


def private_image(db, settings, project_id: str, name: str) -> str:
    image_id = add_image(db, settings, name=name)
    with db.write() as session:
        session.get(Image, image_id).project_id = project_id
    return image_id


def report_disks(agent: FakeAgent, disk_ids: list[str]) -> None:
    agent.spec()
    r = agent.client.post("/api/v1/agent/report", headers=agent.headers, json={
        "host_id": agent.host_id, "generation_applied": agent.seen,
        "generation_seen": agent.seen,
        "instances": [{"id": i, "power": p} for i, p in agent.observed.items()],
        "disks": [{"id": d, "size_bytes": 1 << 30} for d in disk_ids]})
    assert r.status_code == 204, r.text


def build_world(member: Caller, agent: FakeAgent, image_id: str) -> dict[str, str]:
    """One of every resource kind in ``member``'s project; kind -> id."""
    w: dict[str, str] = {"image": image_id}
    w["vpc"] = member.ok("POST", "/vpcs", {"name": "v", "cidr_block": "10.0.0.0/16"})["id"]
    w["vswitch"] = member.ok("POST", "/vswitches", {
        "name": "s", "vpc_id": w["vpc"], "zone_id": "zone-a",
        "cidr_block": "10.0.1.0/24"})["id"]
    w["security_group"] = member.ok("POST", "/security-groups",
                                    {"name": "g", "vpc_id": w["vpc"]})["id"]
    w["rule"] = member.ok("POST", f"/security-groups/{w['security_group']}/rules", {
        "direction": "ingress", "protocol": "tcp", "port_range": "22/22"})["id"]
    w["key_pair"] = member.ok("POST", "/key-pairs", {
        "name": f"kp-{image_id[-6:]}",
        "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0rMVnHL8YXy1c0kaGZ4UdTyq7kfEqP"
                      "yeUq5J7mJ0a test"})["id"]
    w["deployment_set"] = member.ok("POST", "/deployment-sets", {"name": "ha"})["id"]
    w["instance"] = member.ok("POST", "/instances", {
        "name": "web", "instance_type": "ecs.t1.nano", "image_id": image_id,
        "vswitch_id": w["vswitch"], "security_group_ids": [w["security_group"]],
        "key_pair_id": w["key_pair"]})["id"]
    agent.converge()
    w["disk"] = member.ok("POST", "/disks", {"size_gib": 1, "zone_id": "zone-a"})["id"]
    report_disks(agent, [w["disk"]])
    w["snapshot"] = member.ok("POST", "/snapshots", {"disk_id": w["disk"]})["id"]
    eip = member.call("POST", "/eips", {})
    if eip.status_code != 409:  # 409: this region has no EIP pool
        w["eip"] = eip.json()["id"]
    w["snapshot_policy"] = member.ok("POST", "/snapshot-policies", {
        "name": f"p-{image_id[-6:]}", "hours": [2], "weekdays": [1]})["id"]
    w["operation"] = member.ok("POST", f"/instances/{w['instance']}/reboot")["id"]
    return w


def missing_like(resource_id: str) -> str:
    """An id of the same kind and length that names nothing."""
    prefix, _, rest = resource_id.partition("-")
    return f"{prefix}-{'z' * len(rest)}"


def same_answer(r_other, r_missing, other_id: str, missing_id: str) -> None:
    """The answer about another project's id is the answer about a missing one."""
    assert r_other.status_code == r_missing.status_code, (r_other.text, r_missing.text)
    assert r_other.status_code in (400, 404), r_other.text  # a bad reference may be a 400
    a, b = r_other.json(), r_missing.json()
    assert a["code"].endswith("NotFound"), a
    assert a["code"] == b["code"] and a["field"] == b["field"], (a, b)
    assert a["message"].replace(other_id, missing_id) == b["message"], (a, b)
