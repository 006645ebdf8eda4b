"""The drift view: what is not yet as asked, per resource, at a glance.

Built from the columns the reports keep (``services/reports.py`` and
``services/disks.py``) and the convergence stamps the event hook sets
(``services/events.py``): a host is converged when it is up and has applied
its current spec generation; an instance when its status is the one its
desired power asks for (``status.is_converged``); disks, snapshots, one-shot
operations and images when they are in a settled state without an error.
Only unsettled rows are read unless every host and instance is asked for, so
the view stays cheap on a large region.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, not_, or_, select
from sqlalchemy.orm import Session

from controller.db import Database
from controller.models import Disk, Host, Image, Instance, Operation
from controller.models_storage import Snapshot, StorageOperation
from controller.schemas import drift as schema
from controller.services import heartbeats
from controller.services.status import CONVERGED_STATUS, is_converged

FAILED_OPERATIONS_SHOWN_FOR = timedelta(hours=24)
UNSETTLED_DISK = ("Creating", "Attaching", "Detaching", "Error")


def _instance_converged_sql():
    return and_(Instance.delete_requested_at.is_(None), or_(*(
        and_(Instance.desired_power == power, Instance.status == status)
        for power, status in CONVERGED_STATUS.items())))


def drift_view(db: Database, *, include_all: bool = False, host_id: str | None = None,
               resource_type: str | None = None, max_results: int = 500) -> schema.DriftView:
    heartbeats.settle(db)  # acknowledgements waiting in the batch are shown too
    with db.read() as session:
        summary = _summary(session)
        items: list[schema.DriftItem] = []
        wanted = (lambda t: resource_type in (None, t))
        if wanted("host"):
            items += _hosts(session, include_all, host_id)
        if wanted("instance"):
            items += _instances(session, include_all, host_id, max_results + 1)
        if wanted("disk"):
            items += _disks(session, host_id)
        if wanted("snapshot"):
            items += _snapshots(session, host_id)
        if wanted("operation") or wanted("storage_operation"):
            items += _operations(session, host_id, resource_type)
        if wanted("image") and host_id is None:
            items += _images(session)
    return schema.DriftView(summary=summary, items=items[:max_results],
                            truncated=len(items) > max_results)


def _summary(session: Session) -> schema.DriftSummary:
    hosts = session.scalar(select(func.count(Host.id))) or 0
    hosts_ok = session.scalar(select(func.count(Host.id)).where(
        Host.state != "down", Host.generation_applied >= Host.generation)) or 0
    live = Instance.deleted_at.is_(None)
    instances = session.scalar(select(func.count(Instance.id)).where(live)) or 0
    instances_ok = session.scalar(select(func.count(Instance.id)).where(
        live, _instance_converged_sql())) or 0
    drifted = (hosts - hosts_ok) + (instances - instances_ok)
    drifted += session.scalar(select(func.count(Disk.id)).where(
        Disk.status.in_(UNSETTLED_DISK))) or 0
    drifted += session.scalar(select(func.count(Snapshot.id)).where(
        Snapshot.status == "progressing")) or 0
    drifted += session.scalar(select(func.count(Operation.id)).where(
        Operation.outcome == "pending")) or 0
    drifted += session.scalar(select(func.count(StorageOperation.id)).where(
        StorageOperation.outcome == "pending")) or 0
    return schema.DriftSummary(hosts=hosts, hosts_converged=hosts_ok, instances=instances,
                               instances_converged=instances_ok, drifted=drifted)


def _hosts(session: Session, include_all: bool, host_id: str | None) -> list[schema.DriftItem]:
    stmt = select(Host).order_by(Host.name)
    if host_id:
        stmt = stmt.where(Host.id == host_id)
    if not include_all:
        stmt = stmt.where(or_(Host.state == "down", Host.generation_applied < Host.generation,
                              Host.last_errors.not_in(("[]", ""))))
    out = []
    for h in session.scalars(stmt):
        errors = json.loads(h.last_errors or "[]")
        converged = h.state != "down" and h.generation_applied >= h.generation
        observed = f"applied {h.generation_applied}, seen {h.generation_seen}"
        if h.state == "down":
            observed += " (down: no heartbeat)"
        out.append(schema.DriftItem(
            resource_type="host", resource_id=h.id, name=h.name, host_id=h.id,
            desired=f"generation {h.generation}", observed=observed, status=h.state,
            converged=converged, last_converged_at=h.converged_at, observed_at=h.last_heartbeat,
            error="; ".join(errors)[:2000], retries=0))
    return out


def _instances(session: Session, include_all: bool, host_id: str | None,
               limit: int) -> list[schema.DriftItem]:
    stmt = select(Instance).where(Instance.deleted_at.is_(None))
    if host_id:
        stmt = stmt.where(Instance.host_id == host_id)
    if not include_all:
        stmt = stmt.where(or_(not_(_instance_converged_sql()), Instance.status_reason != ""))
    out = []
    for i in session.scalars(stmt.order_by(Instance.created_at, Instance.id).limit(limit)):
        deleting = i.delete_requested_at is not None
        out.append(schema.DriftItem(
            resource_type="instance", resource_id=i.id, name=i.name, host_id=i.host_id,
            desired="deleted" if deleting else i.desired_power,
            observed=i.observed_power or "not reported", status=i.status,
            converged=is_converged(desired_power=i.desired_power, deleting=deleting,
                                   status=i.status),
            last_converged_at=i.converged_at, observed_at=i.observed_at,
            error=i.status_reason[:2000], retries=i.reconcile_retries))
    return out


def _disks(session: Session, host_id: str | None) -> list[schema.DriftItem]:
    stmt = select(Disk).where(or_(Disk.status.in_(UNSETTLED_DISK),
                                  and_(Disk.status_reason != "", Disk.role == "data")))
    if host_id:
        stmt = stmt.where(Disk.host_id == host_id)
    return [schema.DriftItem(
        resource_type="disk", resource_id=d.id, name=d.name, host_id=d.host_id,
        desired=f"attached to {d.instance_id}" if d.instance_id else "available",
        observed=f"attached to {d.attached_to}" if d.attached_to else "not attached",
        status=d.status, converged=False, last_converged_at=None, observed_at=None,
        error=d.status_reason[:2000], retries=0) for d in session.scalars(stmt.limit(1000))]


def _snapshots(session: Session, host_id: str | None) -> list[schema.DriftItem]:
    since = datetime.now(UTC) - FAILED_OPERATIONS_SHOWN_FOR
    stmt = select(Snapshot).where(or_(Snapshot.status == "progressing",
                                      and_(Snapshot.status == "failed",
                                           Snapshot.created_at >= since)))
    if host_id:
        stmt = stmt.where(Snapshot.host_id == host_id)
    return [schema.DriftItem(
        resource_type="snapshot", resource_id=s.id, name=s.name, host_id=s.host_id,
        desired="accomplished", observed=s.status, status=s.status, converged=False,
        last_converged_at=None, observed_at=None, error=s.status_reason[:2000], retries=0)
        for s in session.scalars(stmt.limit(1000))]


def _operations(session: Session, host_id: str | None,
                resource_type: str | None) -> list[schema.DriftItem]:
    since = datetime.now(UTC) - FAILED_OPERATIONS_SHOWN_FOR
    out = []
    for model, rtype in ((Operation, "operation"), (StorageOperation, "storage_operation")):
        if resource_type not in (None, rtype):
            continue
        stmt = select(model).where(or_(model.outcome == "pending",
                                       and_(model.outcome == "failed",
                                            model.finished_at >= since)))
        if host_id:
            stmt = stmt.where(model.host_id == host_id)
        for op in session.scalars(stmt.order_by(model.created_at).limit(1000)):
            out.append(schema.DriftItem(
                resource_type=rtype, resource_id=op.id, name=op.kind, host_id=op.host_id,
                desired="done", observed=op.outcome, status=op.outcome, converged=False,
                last_converged_at=None, observed_at=op.finished_at, error=op.message[:2000],
                retries=0))
    return out


def _images(session: Session) -> list[schema.DriftItem]:
    stmt = select(Image).where(Image.status.in_(("Creating", "Error")))
    return [schema.DriftItem(
        resource_type="image", resource_id=m.id, name=m.name, host_id=None,
        desired="Available", observed=m.status, status=m.status, converged=False,
        last_converged_at=None, observed_at=None, error=m.status_reason[:2000], retries=0)
        for m in session.scalars(stmt.limit(1000))]
