"""Tenancy: the role policy table, the project filter and ``get_owned``, quota accounting,
the migration into ``default``, and tunnels into another project's instance."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import select, text, update
from starlette.websockets import WebSocketDisconnect

from controller.db import Database, alembic_config, upgrade_to_head
from controller.errors import Forbidden, NotFound
from controller.models import Base, Disk
from controller.models_net import Eip
from controller.models_tenancy import Project
from controller.services import events
from controller.services.quotas import QuotaExceeded
from controller import tenancy
from controller.tenancy import ALL_PROJECTS, Principal, check_route, get_owned
from tests.controller_factories import default_db_url, region, sqlite_url  # noqa: F401 - fixture
from tests.tenancy_factories import (
    Caller, add_key, build_world, make_project, missing_like, private_image,
)

ADMIN = Principal("token", "tok-1", "admin", "admin", None)
MEMBER = Principal("apikey", "tok-2", "u/k", "member", "acme", "u-1")
READER = Principal("apikey", "tok-3", "u/r", "read-only", "acme", "u-1")

ALLOW = None
# (method, route) -> expected outcome for (admin, member, read-only)
MATRIX = [
    (("GET", "/api/v1/instances"), (ALLOW, ALLOW, ALLOW)),
    (("POST", "/api/v1/instances"), (ALLOW, ALLOW, "Forbidden.ReadOnly")),
    (("DELETE", "/api/v1/instances/{instance_id}"), (ALLOW, ALLOW, "Forbidden.ReadOnly")),
    (("POST", "/api/v1/instances/{instance_id}/stop"), (ALLOW, ALLOW, "Forbidden.ReadOnly")),
    (("PATCH", "/api/v1/vswitches/{vswitch_id}"), (ALLOW, ALLOW, "Forbidden.ReadOnly")),
    (("POST", "/api/v1/security-group-explain"), (ALLOW, ALLOW, ALLOW)),  # a read by POST
    (("GET", "/api/v1/events"), (ALLOW, ALLOW, ALLOW)),
    (("GET", "/api/v1/zones"), (ALLOW, ALLOW, ALLOW)),
    (("POST", "/api/v1/zones"), (ALLOW, "Forbidden.AdminOnly", "Forbidden.AdminOnly")),
    (("GET", "/api/v1/instance-types"), (ALLOW, ALLOW, ALLOW)),
    (("POST", "/api/v1/instance-types"), (ALLOW, "Forbidden.AdminOnly", "Forbidden.AdminOnly")),
    (("GET", "/api/v1/migrations"), (ALLOW, ALLOW, ALLOW)),
    (("POST", "/api/v1/instances/{instance_id}/migrate"),
     (ALLOW, "Forbidden.AdminOnly", "Forbidden.AdminOnly")),
    (("GET", "/api/v1/hosts"), (ALLOW, "Forbidden.AdminOnly", "Forbidden.AdminOnly")),
    (("POST", "/api/v1/hosts/{host_id}/drain"),
     (ALLOW, "Forbidden.AdminOnly", "Forbidden.AdminOnly")),
    (("POST", "/api/v1/tokens"), (ALLOW, "Forbidden.AdminOnly", "Forbidden.AdminOnly")),
    (("GET", "/api/v1/status"), (ALLOW, "Forbidden.AdminOnly", "Forbidden.AdminOnly")),
    (("POST", "/api/v1/placement/explain"),
     (ALLOW, "Forbidden.AdminOnly", "Forbidden.AdminOnly")),
    (("GET", "/api/v1/projects/{project_id}"), (ALLOW, ALLOW, ALLOW)),
    (("PUT", "/api/v1/projects/{project_id}/quota"),
     (ALLOW, "Forbidden.AdminOnly", "Forbidden.AdminOnly")),
    (("POST", "/api/v1/projects"), (ALLOW, "Forbidden.AdminOnly", "Forbidden.AdminOnly")),
    (("POST", "/api/v1/api-keys"), (ALLOW, "Forbidden.AdminOnly", "Forbidden.AdminOnly")),
    (("GET", "/api/v1/users"), (ALLOW, "Forbidden.AdminOnly", "Forbidden.AdminOnly")),
    (("GET", "/api/v1/some-route-added-later"),
     (ALLOW, "Forbidden.AdminOnly", "Forbidden.AdminOnly")),  # closed until listed
]


@pytest.mark.parametrize("route,expected", MATRIX, ids=lambda v: " ".join(v) if
                         isinstance(v[0], str) and v[0].isupper() else None)
def test_role_policy_matrix(route, expected):
    method, path = route
    for principal, want in zip((ADMIN, MEMBER, READER), expected, strict=True):
        if want is None:
            check_route(principal, method, path)
        else:
            with pytest.raises(Forbidden) as err:
                check_route(principal, method, path)
            assert err.value.code == want and err.value.status == 403


def test_every_table_with_a_project_is_scoped():
    scoped = set(tenancy.OWNED) | set(tenancy.SHARED_WHEN_NULL) | set(tenancy.PRIVATE_WHEN_NULL)
    with_column = {m.class_ for m in Base.registry.mappers
                   if "project_id" in m.local_table.c
                   and m.local_table.name not in ("users", "api_tokens")}
    assert with_column == scoped


@pytest.fixture
def db(default_db_url):
    database = Database(default_db_url)
    upgrade_to_head(database)
    tenancy.install(database)
    with database.write() as session:
        for p in ("acme", "other"):
            session.add(Project(id=p, description="", used_instances=0, used_vcpus=0,
                                used_memory_mib=0, used_disks=0, used_disk_gib=0, used_eips=0,
                                used_snapshots=0, quota_eips=2, quota_disk_gib=10))
    yield database
    database.dispose()


class acting:
    """Run the block as ``principal`` (what the API dependency does per request)."""

    def __init__(self, principal: Principal | None) -> None:
        self.actor = events.Actor(type="test", principal=principal)

    def __enter__(self):
        self.token = events.set_actor(self.actor)

    def __exit__(self, *exc):
        events.reset_actor(self.token)


def test_project_filter_and_get_owned(db):
    with acting(MEMBER), db.write() as session:
        session.add(Eip(id="eip-mine", ip="203.0.113.1"))  # stamped with acme
    with acting(None), db.write() as session:
        session.add(Eip(id="eip-theirs", ip="203.0.113.2", project_id="other"))
    with acting(MEMBER), db.read() as session:
        assert session.get(Eip, "eip-theirs") is None
        assert [e.id for e in session.scalars(select(Eip))] == ["eip-mine"]
        assert session.get(Eip, "eip-mine").project_id == "acme"
        assert len(session.scalars(select(Eip).execution_options(**ALL_PROJECTS)).all()) == 2
        with pytest.raises(NotFound) as theirs:
            get_owned(session, Eip, "eip-theirs", MEMBER, "InvalidEipId.NotFound", "eip_id")
        with pytest.raises(NotFound) as missing:
            get_owned(session, Eip, "eip-nothere", MEMBER, "InvalidEipId.NotFound", "eip_id")
        assert theirs.value.code == missing.value.code
        assert theirs.value.message.replace("theirs", "nothere") == missing.value.message
        assert get_owned(session, Eip, "eip-mine", MEMBER, "X", "eip_id").id == "eip-mine"
    with acting(MEMBER), db.write() as session:  # bulk UPDATE is filtered too
        session.execute(update(Eip).values(name="renamed"))
    with acting(ADMIN), db.read() as session:
        names = {e.id: e.name for e in session.scalars(select(Eip))}
        assert names == {"eip-mine": "renamed", "eip-theirs": ""}
        assert get_owned(session, Eip, "eip-theirs", ADMIN, "X").id == "eip-theirs"
    with acting(None), db.read() as session:  # background duties see everything
        assert len(session.scalars(select(Eip)).all()) == 2


def _usage(db, project: str) -> tuple[int, int, int]:
    with db.read() as session:
        p = session.get(Project, project)
        return p.used_eips, p.used_disks, p.used_disk_gib


def test_quota_charges_and_releases_in_the_flush(db):
    with acting(MEMBER):
        for k in range(2):
            with db.write() as session:
                session.add(Eip(id=f"eip-{k}", ip=f"203.0.113.{k + 1}"))
        with pytest.raises(QuotaExceeded) as err, db.write() as session:
            session.add(Eip(id="eip-2", ip="203.0.113.3"))
        assert err.value.code == "QuotaExceeded.Eips" and err.value.status == 403
        assert _usage(db, "acme")[0] == 2
        with db.write() as session:
            session.delete(session.get(Eip, "eip-0"))
        assert _usage(db, "acme")[0] == 1
        with db.write() as session:
            session.add(Disk(id="d-1", size_gib=4, role="data", status="Available"))
        assert _usage(db, "acme")[1:] == (1, 4)
        with db.write() as session:  # a resize charges the difference
            session.get(Disk, "d-1").size_gib = 10
        assert _usage(db, "acme")[1:] == (1, 10)
        with pytest.raises(QuotaExceeded) as err, db.write() as session:
            session.get(Disk, "d-1").size_gib = 11
        assert err.value.code == "QuotaExceeded.DiskGib"
        with db.write() as session:
            session.delete(session.get(Disk, "d-1"))
    assert _usage(db, "acme") == (1, 0, 0)
    assert _usage(db, "other") == (0, 0, 0)


def test_migration_puts_existing_rows_in_default(tmp_path):
    database = Database(sqlite_url(tmp_path))
    cfg = alembic_config(database.url)
    with database.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
    with database.engine.begin() as conn:
        conn.execute(text("INSERT INTO eips (id, name, ip, created_at) VALUES "
                          "('eip-old', '', '203.0.113.9', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO key_pairs (id, name, public_key, fingerprint, key_type, "
                          "created_at) VALUES ('kp-old', 'k', 'ssh-ed25519 AAAA', 'f', "
                          "'ssh-ed25519', CURRENT_TIMESTAMP)"))
    upgrade_to_head(database)
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT project_id FROM eips")).scalar() == "default"
        assert conn.execute(text("SELECT project_id FROM key_pairs")).scalar() == "default"
        assert conn.execute(text("SELECT used_eips FROM projects WHERE id = 'default'")) \
            .scalar() == 1
    database.dispose()


def _tunnel_close(client, instance_id: str, key: str) -> tuple[int, str]:
    with client.websocket_connect(f"/api/v1/instances/{instance_id}/tunnel",
                                  headers={"Authorization": f"Bearer {key}"}) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_bytes()
    return closed.value.code, closed.value.reason


def test_tunnel_into_another_projects_instance_is_like_a_missing_one(region):  # noqa: F811
    admin = Caller(region.client, region.tokens.admin_token)
    a = make_project(admin, "proj-a")
    b = make_project(admin, "proj-b")
    agent = region.register_host(vcpus=16)
    w = build_world(a, agent, private_image(region.db, region.settings, "proj-a", "img-a"))
    inst = w["instance"]
    code, reason = _tunnel_close(region.client, inst, b.key)
    code_missing, reason_missing = _tunnel_close(region.client, missing_like(inst), b.key)
    assert code == code_missing == 4404
    assert reason.replace(inst, missing_like(inst)) == reason_missing
    reader, _ = add_key(admin, "proj-a", "read-only", "reader")
    assert _tunnel_close(region.client, inst, reader.key)[0] == 4403
    assert _tunnel_close(region.client, inst, "mecsk_not-a-key")[0] == 4401
    # the console of a's instance: b gets the 404 of a missing one
    r1 = b.call("GET", f"/instances/{inst}/console")
    r2 = b.call("GET", f"/instances/{missing_like(inst)}/console")
    assert r1.status_code == r2.status_code == 404
    assert r1.json()["code"] == r2.json()["code"]


def test_a_project_over_its_snapshot_quota_does_not_stop_the_others_policies(region):  # noqa: F811
    from datetime import UTC, datetime

    from controller.models_storage import DiskSnapshotPolicy, SnapshotPolicy
    from controller.services.snapshot_policies import run_policies
    from tests.tenancy_factories import report_disks

    admin = Caller(region.client, region.tokens.admin_token)
    full = make_project(admin, "full", snapshots=0)
    free = make_project(admin, "free")
    agent = region.register_host()
    disks = [c.ok("POST", "/disks", {"size_gib": 1, "zone_id": "zone-a"})["id"]
             for c in (full, free)]
    report_disks(agent, disks)
    with region.db.write() as session:
        session.add(SnapshotPolicy(id="sp-t", name="n", hours="2", weekdays="1",
                                   retention_days=None, enabled=True))
        session.flush()
        session.add_all(DiskSnapshotPolicy(disk_id=d, policy_id="sp-t") for d in disks)
    done = run_policies(region.db, datetime(2026, 11, 23, 2, 0, tzinfo=UTC))  # a Monday
    assert len(done.taken) == 1 and list(done.skipped) == [disks[0]]
    assert "snapshots" in done.skipped[disks[0]]
    assert [s["disk_id"] for s in free.ok("GET", "/snapshots")["items"]] == [disks[1]]
    assert full.ok("GET", "/snapshots")["items"] == []
    assert free.ok("GET", "/projects/free")["usage"]["snapshots"] == 1
    assert full.ok("GET", "/projects/full")["usage"]["snapshots"] == 0
