"""Names belong to the project (migration 0007_projnames), on SQLite and on PostgreSQL.

* key-pair, snapshot-policy and image names and instance client tokens are unique per
  project: two projects may use the same one (both 2xx), the same project twice is a 409
  naming the field, and neither project's listing shows the other's;
* a create's name is checked in the project it goes to (an admin's without
  ``X-Miniecs-Project``: ``default``), never against another project's names;
* placing a disk on a chosen host (``host_id``) is an operator's decision: 403 for a
  member, before the host is even looked up;
* the migration goes down and up again with a populated database and keeps every row
  of every table (on SQLite its table copies must not cascade into child tables), and
  the models match the migrated schema on PostgreSQL too.
"""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from controller.db import alembic_config, migration_connection, upgrade_to_head
from controller.models import Base, Image, Instance, KeyPair
from controller.models_storage import DiskSnapshotPolicy, SnapshotPolicy
from tests.controller_factories import database_url, region_any_db  # noqa: F401 - fixtures
from tests.tenancy_factories import (
    Caller, add_key, build_world, make_project, private_image, report_disks,
)

pytestmark = pytest.mark.integration

PUBLIC_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0rMVnHL8YXy1c0kaGZ4UdTyq7kfEqPyeUq5J7mJ0a "
              "test")
# loopback, nothing listens: the import fails later (status Error), the row is what counts
NOWHERE = "http://127.0.0.1:1/x.qcow2"


def _projects(region):
    admin = Caller(region.client, region.tokens.admin_token)
    return admin, make_project(admin, "proj-a"), make_project(admin, "proj-b")


def _ids(caller: Caller, path: str) -> set[str]:
    return {x["id"] for x in caller.ok("GET", path, max_results=100)["items"]}


def _refused(r, code: str) -> None:
    assert r.status_code == 409, r.text
    body = r.json()
    assert (body["code"], body["field"]) == (code, "name"), body


@pytest.mark.parametrize("path,body,code", [
    ("/key-pairs", {"name": "deploy", "public_key": PUBLIC_KEY}, "InvalidKeyPairName.Duplicate"),
    ("/key-pairs", {"name": "deploy"}, "InvalidKeyPairName.Duplicate"),  # generated pair
    ("/snapshot-policies", {"name": "nightly", "hours": [2], "weekdays": [1]},
     "InvalidSnapshotPolicyName.Duplicated"),
], ids=["key-pair-imported", "key-pair-generated", "snapshot-policy"])
def test_names_belong_to_the_project(region_any_db, path, body, code):  # noqa: F811
    region = region_any_db
    admin, a, b = _projects(region)
    in_a = a.call("POST", path, body)
    in_b = b.call("POST", path, body)  # was a 409 telling b that a has one
    assert in_a.status_code == 201, in_a.text
    assert in_b.status_code == 201, in_b.text
    id_a, id_b = in_a.json()["id"], in_b.json()["id"]
    assert id_a != id_b
    _refused(a.call("POST", path, body), code)
    _refused(b.call("POST", path, body), code)
    # each project lists its own only; the admin sees both
    assert _ids(a, path) == {id_a} and _ids(b, path) == {id_b}
    assert {id_a, id_b} <= _ids(admin, path)
    # the admin's create goes to "default" (no header): checked there, not against a's or b's
    by_admin = admin.call("POST", path, body)
    assert by_admin.status_code == 201, by_admin.text
    _refused(admin.call("POST", path, body), code)
    # an admin confined to proj-a is refused as proj-a's member is
    _refused(Caller(admin.client, admin.key, {"X-Miniecs-Project": "proj-a"}).call(
        "POST", path, body), code)
    model = KeyPair if path == "/key-pairs" else SnapshotPolicy
    with region.db.read() as session:
        rows = session.execute(select(model.id, model.project_id).where(
            model.name == body["name"])).all()
    assert dict(rows) == {id_a: "proj-a", id_b: "proj-b",
                          by_admin.json()["id"]: "default"}
    # b deletes its own; a's is untouched and b may take the name again
    assert b.call("DELETE", f"{path}/{id_b}").status_code in (200, 204)
    assert a.call("GET", f"{path}/{id_a}").status_code == 200
    assert b.call("POST", path, body).status_code == 201


def test_image_names_per_project_and_among_public_images(region_any_db):  # noqa: F811
    region = region_any_db
    admin, a, b = _projects(region)

    def image(caller: Caller, name: str):
        return caller.call("POST", "/images", {"name": name, "source_url": NOWHERE})

    public = image(admin, "base")  # an admin's image is public
    assert public.status_code in (201, 202), public.text
    _refused(image(admin, "base"), "InvalidImageName.Duplicated")
    # a public image is in every project's listing: a project may not shadow its name
    _refused(image(a, "base"), "InvalidImageName.Duplicated")
    in_a, in_b = image(a, "tools"), image(b, "tools")
    assert in_a.status_code in (201, 202) and in_b.status_code in (201, 202), in_b.text
    _refused(image(a, "tools"), "InvalidImageName.Duplicated")
    id_a, id_b = in_a.json()["id"], in_b.json()["id"]
    assert id_a in _ids(a, "/images") and id_a not in _ids(b, "/images")
    assert id_b in _ids(b, "/images") and id_b not in _ids(a, "/images")
    # an admin's public name is checked among public images only
    assert image(admin, "tools").status_code in (201, 202)
    with region.db.read() as session:
        owners = sorted(str(p) for p in session.scalars(
            select(Image.project_id).where(Image.name == "tools")))
    assert owners == ["None", "proj-a", "proj-b"]
    # the database guards public names too (the service's check aside)
    with pytest.raises(IntegrityError), region.db.write() as session:
        session.add(Image(id="m-dup", name="base", format="qcow2", source="x",
                          status="Creating", project_id=None))


def test_client_tokens_belong_to_the_project(region_any_db):  # noqa: F811
    region = region_any_db
    admin, a, b = _projects(region)
    region.register_host(vcpus=16, memory_mib=65536)
    image = private_image(region.db, region.settings, None, "pub")

    def net(caller: Caller) -> tuple[str, str]:
        vpc = caller.ok("POST", "/vpcs", {"name": "v", "cidr_block": "10.0.0.0/16"})["id"]
        vsw = caller.ok("POST", "/vswitches", {"name": "s", "vpc_id": vpc, "zone_id": "zone-a",
                                               "cidr_block": "10.0.1.0/24"})["id"]
        return vsw, caller.ok("POST", "/security-groups", {"name": "g", "vpc_id": vpc})["id"]

    def create(caller: Caller, where: tuple[str, str]):
        return caller.call("POST", "/instances", {
            "name": "web", "instance_type": "ecs.t1.nano", "image_id": image,
            "vswitch_id": where[0], "security_group_ids": [where[1]],
            "client_token": "deploy-2026-11-26"})

    net_a, net_b = net(a), net(b)
    first_a, first_b = create(a, net_a), create(b, net_b)
    assert first_a.status_code == 202 and first_b.status_code == 202, first_b.text
    assert first_a.json()["id"] != first_b.json()["id"]
    again = create(a, net_a)  # a retry in a: the same instance, nothing new
    assert again.status_code == 200 and again.json()["id"] == first_a.json()["id"]
    # the admin (no header) retrying on a's vSwitch is a's retry too
    by_admin = create(admin, net_a)
    assert by_admin.status_code == 200 and by_admin.json()["id"] == first_a.json()["id"]
    with region.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 2


def test_disk_host_hint_is_for_admins(region_any_db):  # noqa: F811
    region = region_any_db
    admin, a, _ = _projects(region)
    reader, _ = add_key(admin, "proj-a", "read-only", "reader-a")
    agent = region.register_host()
    body = {"size_gib": 1, "zone_id": "zone-a", "host_id": agent.host_id}
    for host in (agent.host_id, "h-zzzzzzzzzzzzzzzzzzzz"):  # no oracle of which hosts exist
        r = a.call("POST", "/disks", {**body, "host_id": host})
        assert r.status_code == 403, r.text
        assert (r.json()["code"], r.json()["field"]) == ("Forbidden.AdminOnly", "host_id")
        assert "host_id" in r.json()["message"]
    r = reader.call("POST", "/disks", body)
    assert (r.status_code, r.json()["code"]) == (403, "Forbidden.ReadOnly")
    assert a.ok("GET", "/disks")["items"] == []  # nothing made
    # without the hint the member's disk is placed by the scheduler (shown to the member
    # by the host's opaque id in its project: tests/integration/test_tenancy_hosts.py)
    mine = a.ok("POST", "/disks", {"size_gib": 1, "zone_id": "zone-a"})
    assert admin.ok("GET", f"/disks/{mine['id']}")["host_id"] == agent.host_id
    # the admin keeps it (also confined to a project)
    scoped = Caller(admin.client, admin.key, {"X-Miniecs-Project": "proj-a"})
    placed = scoped.ok("POST", "/disks", body)
    assert placed["host_id"] == agent.host_id
    assert a.call("GET", f"/disks/{placed['id']}").status_code == 200
    r = admin.call("POST", "/disks", {**body, "host_id": "h-zzzzzzzzzzzzzzzzzzzz"})
    assert (r.status_code, r.json()["code"]) == (404, "InvalidHostId.NotFound")
    # an instance's host is no member's choice either: no such field on create, and
    # migrate (which takes one) is admin-only
    net = {"vpc": a.ok("POST", "/vpcs", {"name": "v", "cidr_block": "10.0.0.0/16"})["id"]}
    vsw = a.ok("POST", "/vswitches", {"name": "s", "vpc_id": net["vpc"], "zone_id": "zone-a",
                                      "cidr_block": "10.0.1.0/24"})["id"]
    sg = a.ok("POST", "/security-groups", {"name": "g", "vpc_id": net["vpc"]})["id"]
    image = private_image(region.db, region.settings, None, "pub")
    r = a.call("POST", "/instances", {"name": "x", "instance_type": "ecs.t1.nano",
                                      "image_id": image, "vswitch_id": vsw,
                                      "security_group_ids": [sg], "host_id": agent.host_id})
    assert r.status_code in (400, 422) and "host_id" in r.text, r.text
    inst = a.ok("POST", "/instances", {"name": "x", "instance_type": "ecs.t1.nano",
                                       "image_id": image, "vswitch_id": vsw,
                                       "security_group_ids": [sg]})["id"]
    r = a.call("POST", f"/instances/{inst}/migrate", {"host_id": agent.host_id})
    assert (r.status_code, r.json()["code"]) == (403, "Forbidden.AdminOnly")


# ---- the migration ------------------------------------------------------------------

def _alembic(db, action: str, revision: str) -> None:
    with migration_connection(db) as conn:
        cfg = alembic_config(db.url)
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def _counts(db) -> dict[str, int]:
    with db.engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar()
                for t in Base.metadata.sorted_tables}


def _version(db) -> set[str]:
    with db.engine.connect() as conn:
        return {r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))}


def test_migration_0007_down_and_up_keeps_every_row(region_any_db):  # noqa: F811
    region = region_any_db
    db = region.db
    admin, a, b = _projects(region)
    agent = region.register_host(vcpus=16, memory_mib=65536)
    w = build_world(a, agent, private_image(db, region.settings, "proj-a", "img-a"))
    a.ok("POST", f"/snapshot-policies/{w['snapshot_policy']}/apply", {"disk_ids": [w["disk"]]})
    attached = a.ok("POST", "/disks", {"size_gib": 1, "instance_id": w["instance"]})["id"]
    report_disks(agent, [w["disk"], attached])
    b.ok("POST", "/key-pairs", {"name": "other", "public_key": PUBLIC_KEY})
    before = _counts(db)
    # the tables the SQLite table copies would empty through ON DELETE CASCADE
    assert before["disks"] >= 3 and before["nics"] >= 1 and before["disk_snapshot_policies"] == 1

    _alembic(db, "downgrade", "0006_tenancy")
    assert _version(db) == {"0006_tenancy"}
    assert _counts(db) == before
    with pytest.raises(IntegrityError), db.engine.begin() as conn:  # region-wide again
        conn.execute(text("INSERT INTO key_pairs (id, project_id, name, public_key, fingerprint, "
                          "key_type, created_at) SELECT 'kp-x', 'proj-b', name, public_key, "
                          "fingerprint, key_type, created_at FROM key_pairs WHERE id = :id"),
                     {"id": w["key_pair"]})

    upgrade_to_head(db)
    assert _counts(db) == before
    with db.engine.connect() as conn:  # the models match the migrated schema (both backends)
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)
    assert diff == []
    with db.read() as session:
        assert session.scalar(select(DiskSnapshotPolicy.policy_id)) == w["snapshot_policy"]
    # per project now: b takes a's key-pair name; a downgrade would break it and is refused,
    # leaving the database at head with every row
    name = a.ok("GET", f"/key-pairs/{w['key_pair']}")["name"]
    b.ok("POST", "/key-pairs", {"name": name, "public_key": PUBLIC_KEY})
    after = _counts(db)
    with pytest.raises(IntegrityError):
        _alembic(db, "downgrade", "0006_tenancy")
    assert _version(db) != {"0006_tenancy"} and _counts(db) == after
    assert b.call("POST", "/key-pairs", {"name": name, "public_key": PUBLIC_KEY}).json()[
        "code"] == "InvalidKeyPairName.Duplicate"
