"""The migration part of a host spec (see ``services/migrations.py`` for the phases).

Kept apart from the migration service so the spec compiler imports no service
that imports it back.
"""

from __future__ import annotations

import json

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.orm import Session

from agent import spec
from controller.models import Host, Instance
from controller.models_migration import ACTIVE_STATES, Migration


def upload_url(m: Migration, disk_id: str) -> str:
    return f"/api/v1/agent/migrations/{m.id}/disks/{disk_id}"


def active_involving(host):
    """The clause of a migration still running from or to ``host`` (an id or a bound
    parameter)."""
    return and_(Migration.state.in_(ACTIVE_STATES),
                or_(Migration.source_host_id == host, Migration.target_host_id == host))


def active_on_host(session: Session, host_id: str) -> list[Migration]:
    return list(session.scalars(_ACTIVE_ON_HOST, {"host_id": host_id}))


# built once: every compile of a host's own part runs it
_ACTIVE_ON_HOST = select(Migration).where(active_involving(bindparam("host_id"))) \
    .order_by(Migration.created_at, Migration.id)


def spec_extras(session: Session, host_id: str, present: bool = True) -> dict:
    """What the host's migrations add to its spec (``present``: False when the host is
    known to have no active migration, nothing read then).

    ``instance_ids``: instances to include although placed elsewhere (target of a
    live migration); ``data_disks``: their data disks; ``image_ids``: images a
    cold target needs for the system disks it receives; ``migrations``: the
    ``MigrationSpec`` list.
    """
    out: dict = {"instance_ids": [], "data_disks": [], "image_ids": [], "migrations": []}
    for m in active_on_host(session, host_id) if present else ():
        inst = session.get(Instance, m.instance_id)
        if inst is None or inst.delete_requested_at is not None:
            continue  # a delete wins: both hosts just remove it
        role = "source" if m.source_host_id == host_id else "target"
        peer = session.get(Host, m.target_host_id if role == "source" else m.source_host_id)
        disks: list[spec.MigrationDiskSpec] = []
        if m.kind == "cold" and (role == "source" or m.state == "importing"):
            digests = json.loads(m.disks or "{}")
            disks = [spec.MigrationDiskSpec(
                id=d.id, role=d.role, image_id=d.image_id, url=upload_url(m, d.id),
                sha256=(digests.get(d.id) or {}).get("sha256") if role == "target" else None)
                for d in inst.disks]
            if role == "target":
                out["image_ids"] += [d.image_id for d in inst.disks if d.image_id]
        if m.kind == "live" and role == "target":
            out["instance_ids"].append(inst.id)
            out["data_disks"] += [spec.HostDiskSpec(id=d.id, size_bytes=d.size_gib * 1024 ** 3)
                                  for d in inst.disks if d.role == "data"]
        if m.kind == "cold" and role == "target" and m.state != "importing":
            continue  # nothing to do yet: the source is still uploading
        out["migrations"].append(spec.MigrationSpec(
            id=m.id, instance_id=inst.id, kind=m.kind, role=role,
            peer_address=peer.underlay_address if peer else "", disks=disks,
            run=not (m.kind == "live" and m.state == "freezing"),
            cancel=m.state == "cancelling" and role == "target"))
    return out


def migrating_instance_ids(session: Session, host_id: str) -> set[str]:
    """Instances moving from or to ``host_id``: their observations there are not their status."""
    return {m.instance_id for m in active_on_host(session, host_id)}
