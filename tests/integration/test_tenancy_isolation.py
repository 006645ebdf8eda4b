"""Tenancy over real HTTP (uvicorn in a thread) on SQLite and on PostgreSQL.

* project B's member key cannot see, list, change, delete, attach, snapshot or reference
  (as a source group, vSwitch, image, key pair, instance, disk...) any of project A's
  resources, and every refusal is the 404 of a missing id, byte for byte but the id;
* a read-only key cannot call any mutating route of the OpenAPI document (so a new
  route is covered the day it is added), a member key no admin-only route;
* a revoked key is 401; the key never reaches the controller's log or the audit log;
* quotas: 30 concurrent creates against an instance quota of 10 -> exactly 10, the
  counters equal the rows, and deletes give the units back.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from controller.app import create_app
from controller.models import Instance
from controller.models_events import Event
from controller.models_tenancy import Project
from tests.controller_factories import (
    PG_ENV, FakeAgent, create_pg_database, drop_pg_database, make_settings, open_database,
    sqlite_url,
)
from tests.tenancy_factories import (
    Caller, add_key, build_world, make_project, missing_like, private_image, same_answer,
)

pytestmark = pytest.mark.integration


UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(("httpx", "httpcore")):  # the test's own client
            self.lines.append(self.format(record))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A controller served by uvicorn on 127.0.0.1 (access log on) and its database."""

    def __init__(self, url: str, state_dir) -> None:
        self.settings = make_settings(state_dir, eip_pool="203.0.113.0/27",
                                      heartbeat_timeout_s=3600)
        self.db, self.tokens = open_database(url)
        self.log = LogCapture()
        root = logging.getLogger()
        self._old_level = root.level
        root.setLevel(logging.DEBUG)
        # uvicorn's loggers too: an earlier test's logging set-up may have stopped them
        # propagating to the root or disabled them
        self._loggers = [root] + [logging.getLogger(n) for n in UVICORN_LOGGERS]
        self._old_state = [(lg.disabled, lg.propagate) for lg in self._loggers]
        for lg in self._loggers:
            lg.addHandler(self.log)
            lg.disabled = False
            lg.propagate = False if lg is not root else lg.propagate
        port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(
            create_app(self.settings, self.db), host="127.0.0.1", port=port, log_level="debug",
            access_log=True, log_config=None))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        self.base = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.base, timeout=60)
        self.admin = Caller(self.client, self.tokens.admin_token)

    def agent(self, name: str, vcpus: int = 64) -> FakeAgent:
        r = self.client.post("/api/v1/agent/register", json={
            "name": name, "zone": "zone-a", "underlay_address": "192.0.2.11",
            "virt_type": "qemu",
            "capacity": {"vcpus": vcpus, "memory_mib": 1 << 20, "disk_gib": 100000}},
            headers={"Authorization": f"Bearer {self.tokens.enrolment_token}"})
        assert r.status_code in (200, 201), r.text
        agent = FakeAgent(self.client, r.json()["host_id"], r.json()["host_token"])
        agent.report({})
        return agent

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.client.close()
        for lg, (disabled, propagate) in zip(self._loggers, self._old_state):
            lg.removeHandler(self.log)
            lg.disabled, lg.propagate = disabled, propagate
        logging.getLogger().setLevel(self._old_level)
        self.db.dispose()


def _database(kind: str, tmp_path_factory):
    """(url, cleanup) of a fresh database of ``kind``; skips PostgreSQL without a server."""
    import os

    if kind == "sqlite":
        return sqlite_url(tmp_path_factory.mktemp("db")), lambda: None
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set")
    url = create_pg_database(base)
    return url, lambda: drop_pg_database(url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    """Projects a (with one of every resource) and b (a network of its own), served."""
    url, cleanup = _database(request.param, tmp_path_factory)
    served = Served(url, tmp_path_factory.mktemp("state"))
    try:
        a = make_project(served.admin, "proj-a")
        b = make_project(served.admin, "proj-b")
        agent = served.agent("hv-01")
        image_a = private_image(served.db, served.settings, "proj-a", "img-a")
        w = build_world(a, agent, image_a)
        # b's own pieces, to reference a's from
        bw = {"vpc": b.ok("POST", "/vpcs", {"name": "v", "cidr_block": "10.0.0.0/16"})["id"]}
        bw["vswitch"] = b.ok("POST", "/vswitches", {
            "name": "s", "vpc_id": bw["vpc"], "zone_id": "zone-a",
            "cidr_block": "10.0.1.0/24"})["id"]
        bw["security_group"] = b.ok("POST", "/security-groups",
                                    {"name": "g", "vpc_id": bw["vpc"]})["id"]
        bw["eip"] = b.ok("POST", "/eips", {})["id"]
        bw["disk"] = b.ok("POST", "/disks", {"size_gib": 1, "zone_id": "zone-a"})["id"]
        bw["snapshot_policy"] = b.ok("POST", "/snapshot-policies", {
            "name": "p-b", "hours": [2], "weekdays": [1]})["id"]
        public = private_image(served.db, served.settings, None, "img-public")
        yield {"served": served, "a": a, "b": b, "w": w, "bw": bw, "agent": agent,
               "public_image": public}
    finally:
        served.close()
        cleanup()


# (resource kind, method, path template, body template); {id} is a's resource, {b.x} b's own.
DIRECT = [
    ("vpc", "GET", "/vpcs/{id}", None), ("vpc", "DELETE", "/vpcs/{id}", None),
    ("vswitch", "GET", "/vswitches/{id}", None), ("vswitch", "DELETE", "/vswitches/{id}", None),
    ("vswitch", "PATCH", "/vswitches/{id}", {"nat_enabled": True}),
    ("security_group", "GET", "/security-groups/{id}", None),
    ("security_group", "DELETE", "/security-groups/{id}", None),
    ("security_group", "PATCH", "/security-groups/{id}", {"name": "x"}),
    ("security_group", "GET", "/security-groups/{id}/rules", None),
    ("security_group", "POST", "/security-groups/{id}/rules",
     {"direction": "ingress", "protocol": "tcp", "port_range": "80/80"}),
    ("security_group", "POST", "/security-groups/{id}/rules/revoke",
     {"direction": "ingress", "protocol": "tcp", "port_range": "22/22"}),
    ("key_pair", "GET", "/key-pairs/{id}", None), ("key_pair", "DELETE", "/key-pairs/{id}", None),
    ("image", "GET", "/images/{id}", None), ("image", "DELETE", "/images/{id}", None),
    ("instance", "GET", "/instances/{id}", None),
    ("instance", "PATCH", "/instances/{id}", {"description": "x"}),
    ("instance", "DELETE", "/instances/{id}", None),
    ("instance", "POST", "/instances/{id}/stop", None),
    ("instance", "POST", "/instances/{id}/start", None),
    ("instance", "POST", "/instances/{id}/reboot", None),
    ("instance", "POST", "/instances/{id}/change-type", {"instance_type": "ecs.t1.small"}),
    ("instance", "POST", "/instances/{id}/reinit-system-disk", {}),
    ("instance", "GET", "/instances/{id}/console", None),
    ("instance", "POST", "/security-groups/{b.security_group}/join", {"instance_id": "{id}"}),
    ("disk", "GET", "/disks/{id}", None), ("disk", "DELETE", "/disks/{id}", None),
    ("disk", "POST", "/disks/{id}/resize", {"size_gib": 2}),
    ("disk", "POST", "/disks/{id}/detach", None),
    ("snapshot", "GET", "/snapshots/{id}", None), ("snapshot", "DELETE", "/snapshots/{id}", None),
    ("eip", "GET", "/eips/{id}", None), ("eip", "DELETE", "/eips/{id}", None),
    ("eip", "POST", "/eips/{id}/disassociate", None),
    ("deployment_set", "GET", "/deployment-sets/{id}", None),
    ("deployment_set", "DELETE", "/deployment-sets/{id}", None),
    ("snapshot_policy", "GET", "/snapshot-policies/{id}", None),
    ("snapshot_policy", "DELETE", "/snapshot-policies/{id}", None),
    ("snapshot_policy", "POST", "/snapshot-policies/{id}/cancel", {"disk_ids": ["{b.disk}"]}),
    ("operation", "GET", "/operations/{id}", None),
]
# a's resource referenced from a request about b's own (or new) resources
REFERENCES = [
    ("security_group", "POST", "/security-groups/{b.security_group}/rules",
     {"direction": "ingress", "protocol": "tcp", "port_range": "22/22", "peer_group_id": "{id}"}),
    ("vpc", "POST", "/vswitches", {"name": "s2", "vpc_id": "{id}", "zone_id": "zone-a",
                                   "cidr_block": "10.0.9.0/24"}),
    ("vpc", "POST", "/security-groups", {"name": "g2", "vpc_id": "{id}"}),
    ("vswitch", "POST", "/instances", {"name": "x", "instance_type": "ecs.t1.nano",
                                       "image_id": "{public}", "vswitch_id": "{id}",
                                       "security_group_ids": ["{b.security_group}"]}),
    ("security_group", "POST", "/instances", {
        "name": "x", "instance_type": "ecs.t1.nano", "image_id": "{public}",
        "vswitch_id": "{b.vswitch}", "security_group_ids": ["{id}"]}),
    ("image", "POST", "/instances", {"name": "x", "instance_type": "ecs.t1.nano",
                                     "image_id": "{id}", "vswitch_id": "{b.vswitch}",
                                     "security_group_ids": ["{b.security_group}"]}),
    ("key_pair", "POST", "/instances", {"name": "x", "instance_type": "ecs.t1.nano",
                                        "image_id": "{public}", "vswitch_id": "{b.vswitch}",
                                        "security_group_ids": ["{b.security_group}"],
                                        "key_pair_id": "{id}"}),
    ("deployment_set", "POST", "/instances", {
        "name": "x", "instance_type": "ecs.t1.nano", "image_id": "{public}",
        "vswitch_id": "{b.vswitch}", "security_group_ids": ["{b.security_group}"],
        "deployment_set_id": "{id}"}),
    ("instance", "POST", "/disks/{b.disk}/attach", {"instance_id": "{id}"}),
    ("instance", "POST", "/disks", {"size_gib": 1, "instance_id": "{id}"}),
    ("instance", "POST", "/eips/{b.eip}/associate", {"instance_id": "{id}"}),
    ("disk", "POST", "/snapshots", {"disk_id": "{id}"}),
    ("disk", "POST", "/snapshot-policies/{b.snapshot_policy}/apply", {"disk_ids": ["{id}"]}),
    ("snapshot", "POST", "/disks", {"snapshot_id": "{id}", "zone_id": "zone-a"}),
    ("disk", "POST", "/disks/{id}/attach", {"instance_id": "{id}"}),
]
LISTS = {"vpc": "/vpcs", "vswitch": "/vswitches", "security_group": "/security-groups",
         "key_pair": "/key-pairs", "image": "/images", "instance": "/instances",
         "disk": "/disks", "snapshot": "/snapshots", "eip": "/eips",
         "deployment_set": "/deployment-sets", "snapshot_policy": "/snapshot-policies"}


def _fill(template, world: dict, rid: str):
    if isinstance(template, dict):
        return {k: _fill(v, world, rid) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, world, rid) for v in template]
    if not isinstance(template, str):
        return template
    out = template.replace("{id}", rid).replace("{public}", world["public_image"])
    for kind, value in world["bw"].items():
        out = out.replace("{b.%s}" % kind, value)
    return out


def _case_id(case) -> str:
    kind, method, path, _ = case
    return f"{kind}:{method}:{path}"


@pytest.mark.parametrize("case", DIRECT + REFERENCES, ids=_case_id)
def test_other_projects_resource_is_missing(world, case):
    kind, method, path, body = case
    rid = world["w"][kind]
    missing = missing_like(rid)
    b = world["b"]
    r_other = b.call(method, _fill(path, world, rid), _fill(body, world, rid))
    r_missing = b.call(method, _fill(path, world, missing), _fill(body, world, missing))
    same_answer(r_other, r_missing, rid, missing)
    # and the owner's view is untouched: a still sees it
    if kind in LISTS:
        assert world["a"].call("GET", f"{LISTS[kind]}/{rid}").status_code == 200


@pytest.mark.parametrize("kind", sorted(LISTS))
def test_lists_show_only_the_callers_project(world, kind):
    rid = world["w"][kind]
    seen_b = {x["id"] for x in world["b"].ok("GET", LISTS[kind], max_results=100)["items"]}
    seen_a = {x["id"] for x in world["a"].ok("GET", LISTS[kind], max_results=100)["items"]}
    seen_admin = {x["id"] for x in world["served"].admin.ok(
        "GET", LISTS[kind], max_results=100)["items"]}
    assert rid not in seen_b and rid in seen_a and rid in seen_admin
    if kind == "image":  # the public image is everybody's
        assert world["public_image"] in seen_b and world["public_image"] in seen_a


def test_events_of_a_are_not_bs(world):
    ids_a = set(world["w"].values())
    events_b = world["b"].ok("GET", "/events", limit=500)["items"]
    assert events_b
    for e in events_b:  # b's own calls (even those naming a's ids), b's resources' changes
        assert not e["actor_name"].startswith("proj-a"), e
        assert e["kind"] == "api" or e["resource_id"] not in ids_a, e
    r = world["b"].call("GET", "/events", resource_id=world["w"]["instance"])
    assert r.status_code == 200  # only b's own (refused) calls naming that id
    assert all(e["kind"] == "api" and e["actor_name"].startswith("proj-b")
               for e in r.json()["items"])
    events_a = world["a"].ok("GET", "/events", resource_id=world["w"]["instance"])["items"]
    assert events_a and {e["kind"] for e in events_a} >= {"api"}
    # the audit record names the principal (user/key) and the project
    mine = [e for e in events_a if e["kind"] == "api" and e["method"] == "POST"]
    assert mine and mine[0]["actor_type"] == "apikey" and mine[0]["actor_name"].startswith(
        "proj-a-member-user/")
    assert {e["project_id"] for e in events_a} == {"proj-a"}
    assert {e["project_id"] for e in events_b} == {"proj-b"}


def test_admin_project_header_confines_the_admin(world):
    admin = world["served"].admin
    scoped = Caller(admin.client, admin.key, {"X-Miniecs-Project": "proj-b"})
    assert scoped.call("GET", f"/vpcs/{world['w']['vpc']}").status_code == 404
    vpc = scoped.ok("POST", "/vpcs", {"name": "by-admin", "cidr_block": "10.1.0.0/16"})
    assert world["b"].call("GET", f"/vpcs/{vpc['id']}").status_code == 200
    assert world["a"].call("GET", f"/vpcs/{vpc['id']}").status_code == 404
    nowhere = Caller(admin.client, admin.key, {"X-Miniecs-Project": "no-such"})
    r = nowhere.call("GET", "/vpcs")
    assert (r.status_code, r.json()["code"]) == (404, "InvalidProjectId.NotFound")
    # a member may not name another project
    other = Caller(admin.client, world["b"].key, {"X-Miniecs-Project": "proj-a"})
    assert other.call("GET", "/vpcs").json()["code"] == "InvalidProjectId.NotFound"
    # the admin without the header sees both projects' resources
    assert admin.call("GET", f"/vpcs/{world['w']['vpc']}").status_code == 200
    assert admin.call("GET", f"/vpcs/{vpc['id']}").status_code == 200
    assert admin.ok("DELETE", f"/vpcs/{vpc['id']}") == {}


def _mutating_routes(app_openapi: dict) -> list[tuple[str, str]]:
    out = []
    for path, ops in app_openapi["paths"].items():
        if not path.startswith("/api/v1/") or path.startswith("/api/v1/agent/"):
            continue  # agents authenticate with host tokens
        for method in ops:
            if method.upper() in ("POST", "PUT", "PATCH", "DELETE"):
                out.append((method.upper(), path))
    return out


def _concrete(path: str) -> str:
    import re

    return re.sub(r"\{[^}]+\}", "x-1", path)


def test_read_only_key_changes_nothing_on_any_mutating_route(world):
    served = world["served"]
    reader, _ = add_key(served.admin, "proj-a", "read-only", "reader-a")
    doc = served.client.get("/openapi.json").json()
    routes = _mutating_routes(doc)
    assert len(routes) > 40, routes
    before = world["a"].ok("GET", f"/projects/proj-a")["usage"]
    for method, path in routes:
        url = _concrete(path)
        if "security-group-explain" in path or "placement/explain" in path:
            continue  # reads that take a body
        r = served.client.request(method, url, json={}, headers=reader.headers)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert r.json()["code"] in ("Forbidden.ReadOnly", "Forbidden.AdminOnly"), (method, path)
        # and with a's real ids (a well-formed request): still refused
        real = path
        for kind, rid in world["w"].items():
            real = real.replace("{%s_id}" % kind, rid)
        if real != path and "{" not in real:
            r = served.client.request(method, real, json={}, headers=reader.headers)
            assert r.status_code == 403, (method, real, r.text)
    # reads work, nothing changed
    assert reader.ok("GET", f"/instances/{world['w']['instance']}")["id"] == world["w"]["instance"]
    assert world["a"].ok("GET", f"/projects/proj-a")["usage"] == before


def test_member_key_cannot_call_admin_routes(world):
    served = world["served"]
    b = world["b"]
    for method, path, body in [
            ("GET", "/hosts", None), ("POST", "/zones", {"id": "z", "description": ""}),
            ("POST", "/tokens", {"name": "x"}), ("POST", "/projects", {"id": "evil"}),
            ("PUT", "/projects/proj-b/quota", {"instances": 1000}),
            ("POST", "/users", {"name": "evil", "project_id": "proj-b"}),
            ("GET", "/api-keys", None), ("POST", "/enrolment-tokens", {}),
            ("POST", f"/instances/{world['w']['instance']}/migrate", {})]:
        r = b.call(method, path, body)
        assert (r.status_code, r.json()["code"]) == (403, "Forbidden.AdminOnly"), (path, r.text)
    # but it reads its own project, quota and usage, and nobody else's
    mine = b.ok("GET", "/projects/proj-b")
    assert set(mine["quota"]) == set(mine["usage"]) >= {"instances", "vcpus", "eips"}
    assert [p["id"] for p in b.ok("GET", "/projects")["items"]] == ["proj-b"]
    same_answer(b.call("GET", "/projects/proj-a"), b.call("GET", "/projects/proj-zz"),
                "proj-a", "proj-zz")
    assert served.admin.ok("GET", "/projects/proj-a")["usage"]["instances"] >= 1


def test_revoked_key_is_401_and_keys_never_reach_the_logs(world):
    served = world["served"]
    key, key_id = add_key(served.admin, "proj-b", "member", "short-lived")
    assert key.ok("GET", "/vpcs")["items"] is not None
    key.call("POST", "/vpcs", {"name": "bad body"})  # failures are logged too
    assert served.admin.ok("DELETE", f"/api-keys/{key_id}") == {}
    r = key.call("GET", "/vpcs")
    assert (r.status_code, r.json()["code"]) == (401, "InvalidToken")
    listed = served.admin.ok("GET", "/api-keys", project_id="proj-b")["items"]
    revoked = [k for k in listed if k["id"] == key_id][0]
    assert revoked["revoked_at"] is not None and "key" not in revoked
    text = "\n".join(served.log.lines)
    assert "GET /api/v1/vpcs" in text  # the access log is on and captured
    for secret in (key.key, world["a"].key, world["b"].key, served.tokens.admin_token):
        assert secret not in text
        assert secret[6:] not in text
    with served.db.read() as session:
        stored = " ".join(e.request for e in session.scalars(select(Event)))
    assert key.key not in stored and key.key[6:] not in stored


def _usage(db, project: str) -> dict:
    with db.read() as session:
        p = session.get(Project, project)
        return {q: getattr(p, f"used_{q}") for q in ("instances", "vcpus", "memory_mib",
                                                     "disks", "disk_gib", "eips", "snapshots")}


def test_quota_holds_under_30_concurrent_creates_and_deletes_release(world):
    served = world["served"]
    admin = served.admin
    q = make_project(admin, "proj-q", instances=10)
    net = {"vpc": q.ok("POST", "/vpcs", {"name": "v", "cidr_block": "10.0.0.0/16"})["id"]}
    vsws = [q.ok("POST", "/vswitches", {"name": f"s{k}", "vpc_id": net["vpc"],
                                        "zone_id": "zone-a",
                                        "cidr_block": f"10.0.{k}.0/24"})["id"] for k in range(3)]
    sg = q.ok("POST", "/security-groups", {"name": "g", "vpc_id": net["vpc"]})["id"]

    def create(k: int):
        with httpx.Client(base_url=served.base, timeout=120) as c:
            return c.post("/api/v1/instances", headers=q.headers, json={
                "name": f"q{k}", "instance_type": "ecs.t1.nano",
                "image_id": world["public_image"], "vswitch_id": vsws[k % 3],
                "security_group_ids": [sg]})

    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(create, range(30)))
    accepted = [r for r in answers if r.status_code in (200, 201, 202)]
    refused = [r for r in answers if r.status_code == 403]
    assert len(accepted) == 10 and len(refused) == 20, [r.text for r in answers
                                                        if r.status_code >= 300][:3]
    assert {r.json()["code"] for r in refused} == {"QuotaExceeded.Instances"}
    assert "instances" in refused[0].json()["message"]
    with served.db.read() as session:
        rows = session.scalars(select(Instance).where(Instance.project_id == "proj-q")).all()
        disks = session.scalar(select(func.count()).select_from(Instance).where(
            Instance.project_id == "proj-q"))
    assert len(rows) == 10 == disks
    usage = _usage(served.db, "proj-q")
    assert usage["instances"] == 10
    assert usage["vcpus"] == sum(i.vcpus for i in rows)
    assert usage["memory_mib"] == sum(i.memory_mib for i in rows)
    assert usage["disks"] == 10 and usage["disk_gib"] >= 10
    assert q.ok("GET", "/projects/proj-q")["usage"] == usage
    # full: one more is refused; delete two (the agent confirms), two fit again
    assert q.call("POST", "/instances", {
        "name": "x", "instance_type": "ecs.t1.nano", "image_id": world["public_image"],
        "vswitch_id": vsws[0], "security_group_ids": [sg]}).json()["code"] == \
        "QuotaExceeded.Instances"
    world["agent"].converge()
    for r in accepted[:2]:
        assert q.call("DELETE", f"/instances/{r.json()['id']}", force=True).status_code < 300
    world["agent"].converge()
    world["agent"].converge()
    usage2 = _usage(served.db, "proj-q")
    assert usage2["instances"] == 8 and usage2["disks"] == 8, usage2
    with ThreadPoolExecutor(5) as pool:
        again = list(pool.map(create, range(100, 105)))
    assert sorted(r.status_code for r in again)[:2] != [403, 403]
    assert sum(r.status_code < 300 for r in again) == 2
    assert _usage(served.db, "proj-q")["instances"] == 10


def test_quota_of_eips_disks_and_snapshots(world):
    served = world["served"]
    q = make_project(served.admin, "proj-r", eips=1, disks=1, disk_gib=6, snapshots=0)
    assert q.ok("POST", "/eips", {})["id"]
    r = q.call("POST", "/eips", {})
    assert (r.status_code, r.json()["code"]) == (403, "QuotaExceeded.Eips")
    r = q.call("POST", "/disks", {"size_gib": 7, "zone_id": "zone-a"})
    assert (r.status_code, r.json()["code"]) == (403, "QuotaExceeded.DiskGib")
    d = q.ok("POST", "/disks", {"size_gib": 5, "zone_id": "zone-a"})
    r = q.call("POST", "/disks", {"size_gib": 1, "zone_id": "zone-a"})
    assert r.json()["code"] == "QuotaExceeded.Disks"
    # the admin lifts the disk quota; the usage stays exact through a delete
    served.admin.ok("PUT", "/projects/proj-r/quota", {"disks": None, "disk_gib": None})
    q.ok("POST", "/disks", {"size_gib": 1, "zone_id": "zone-a"})
    assert _usage(served.db, "proj-r")["disks"] == 2
    assert q.call("DELETE", f"/disks/{d['id']}").status_code == 204
    assert _usage(served.db, "proj-r")["disks"] == 1
    assert _usage(served.db, "proj-r")["disk_gib"] == 1
