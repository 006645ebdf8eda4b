"""Automatic snapshot policies: the controller's periodic pass.

A policy names hours of the day (UTC) and weekdays (1-7, Monday=1) and a retention
in days (None: kept until deleted). ``run_policies`` is called periodically (and
by tests with a fake clock): in an hour slot the policy names, and only once per
slot (``last_run_slot``, epoch hours, so a controller restart or a second pass in
the same hour takes nothing twice), it snapshots every disk the policy is applied
to, with the policy's retention. Every pass also deletes expired snapshots —
automatic ones and manual ones created with ``retention_days`` — unless a disk is
being made from one or an operation uses it (tried again next pass).

A disk that cannot be snapshotted right now (Creating, its instance Starting…) is
skipped for that slot; the others are taken.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from controller import ids
from controller.db import Database
from controller.errors import Conflict, DomainError
from controller.models_storage import DiskSnapshotPolicy, Snapshot, SnapshotPolicy
from controller.schemas import snapshots as schema
from controller.schemas.snapshots import SnapshotCreate
from controller.services.common import get_or_404, paginate
from controller.services.disks import load_disk
from controller.services.snapshots import drop_snapshot, take_snapshot
from controller.tenancy import target_project

log = logging.getLogger(__name__)


def hour_slot(now: datetime) -> int:
    return int(now.timestamp() // 3600)


def parse_numbers(text: str) -> set[int]:
    return {int(x) for x in text.split(",") if x.strip()}


def is_due(policy: SnapshotPolicy, now: datetime) -> bool:
    """The policy names this hour and weekday and has not run in this hour slot."""
    return (policy.enabled and now.hour in parse_numbers(policy.hours)
            and now.isoweekday() in parse_numbers(policy.weekdays)
            and (policy.last_run_slot or -1) < hour_slot(now))


@dataclass
class PolicyPass:
    taken: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # disk id -> why
    expired: list[str] = field(default_factory=list)


def run_policies(db: Database, now: datetime | None = None) -> PolicyPass:
    """One pass: take the snapshots that are due, delete the expired ones."""
    now = now or datetime.now(UTC)
    out = PolicyPass()
    with db.write() as session:
        for policy in session.scalars(select(SnapshotPolicy).order_by(SnapshotPolicy.id)):
            if not is_due(policy, now):
                continue
            policy.last_run_slot = hour_slot(now)
            disks = session.scalars(select(DiskSnapshotPolicy.disk_id).where(
                DiskSnapshotPolicy.policy_id == policy.id).order_by(DiskSnapshotPolicy.disk_id))
            for disk_id in list(disks):
                try:
                    # a savepoint: a disk refused at the flush (its project's snapshot
                    # quota) is skipped without undoing the others
                    with session.begin_nested():
                        snap = take_snapshot(session, SnapshotCreate(
                            disk_id=disk_id, name=f"auto {policy.name} {now:%Y-%m-%dT%H}",
                            retention_days=policy.retention_days), policy_id=policy.id,
                            now=now)
                        session.flush()
                    out.taken.append(snap.id)
                except DomainError as exc:  # checked before anything changes
                    out.skipped[disk_id] = str(exc)
                    log.info("policy %s: disk %s skipped: %s", policy.id, disk_id, exc)
        expired = session.scalars(select(Snapshot).where(
            Snapshot.expires_at.is_not(None), Snapshot.expires_at <= now,
            Snapshot.status != "progressing").order_by(Snapshot.id))
        for snap in list(expired):
            try:
                drop_snapshot(session, snap)
                out.expired.append(snap.id)
            except DomainError as exc:
                log.info("expired snapshot %s kept for now: %s", snap.id, exc)
    if out.taken or out.expired:
        log.info("snapshot policies: %d taken, %d expired deleted", len(out.taken),
                 len(out.expired))
    return out


# ---- CRUD (API) -------------------------------------------------------------------

def _view(session, p: SnapshotPolicy) -> schema.SnapshotPolicy:
    disks = session.scalars(select(DiskSnapshotPolicy.disk_id).where(
        DiskSnapshotPolicy.policy_id == p.id).order_by(DiskSnapshotPolicy.disk_id))
    return schema.SnapshotPolicy(id=p.id, name=p.name, hours=sorted(parse_numbers(p.hours)),
                                 weekdays=sorted(parse_numbers(p.weekdays)),
                                 retention_days=p.retention_days, disk_ids=list(disks),
                                 created_at=p.created_at)


def create_policy(db: Database, req: schema.SnapshotPolicyCreate) -> schema.SnapshotPolicy:
    try:
        with db.write() as session:
            project = target_project()  # names are unique per project, not region-wide
            if session.scalar(select(SnapshotPolicy.id).where(
                    SnapshotPolicy.project_id == project, SnapshotPolicy.name == req.name)):
                raise _duplicate(req.name)
            p = SnapshotPolicy(id=ids.new_id("snapshot_policy"), project_id=project,
                               name=req.name,
                               hours=",".join(map(str, req.hours)),
                               weekdays=",".join(map(str, req.weekdays)),
                               retention_days=req.retention_days, enabled=True)
            session.add(p)
            session.flush()
            return _view(session, p)
    except IntegrityError:
        raise _duplicate(req.name) from None


def _load(session, policy_id: str) -> SnapshotPolicy:
    return get_or_404(session, SnapshotPolicy, policy_id, "InvalidSnapshotPolicyId.NotFound",
                      "policy_id")


def get_policy(db: Database, policy_id: str) -> schema.SnapshotPolicy:
    with db.read() as session:
        return _view(session, _load(session, policy_id))


def list_policies(db: Database, max_results: int, next_token: str | None
                  ) -> schema.SnapshotPolicyList:
    with db.read() as session:
        rows, token = paginate(session, select(SnapshotPolicy), SnapshotPolicy, max_results,
                               next_token)
        return schema.SnapshotPolicyList(items=[_view(session, p) for p in rows],
                                         next_token=token)


def apply_policy(db: Database, policy_id: str, disk_ids: list[str]) -> schema.SnapshotPolicy:
    """A disk has at most one policy: applying moves it from its previous one."""
    with db.write() as session:
        p = _load(session, policy_id)
        for disk_id in disk_ids:
            load_disk(session, disk_id)
        for disk_id in disk_ids:
            link = session.get(DiskSnapshotPolicy, disk_id)
            if link is None:
                session.add(DiskSnapshotPolicy(disk_id=disk_id, policy_id=p.id))
            else:
                link.policy_id = p.id
        session.flush()
        return _view(session, p)


def cancel_policy(db: Database, policy_id: str, disk_ids: list[str]) -> schema.SnapshotPolicy:
    with db.write() as session:
        p = _load(session, policy_id)
        for disk_id in disk_ids:
            link = session.get(DiskSnapshotPolicy, disk_id)
            if link is not None and link.policy_id == p.id:
                session.delete(link)
        session.flush()
        return _view(session, p)


def delete_policy(db: Database, policy_id: str) -> None:
    """Its disks lose the policy; snapshots it took stay (with their expiry)."""
    with db.write() as session:
        p = _load(session, policy_id)
        for link in session.scalars(select(DiskSnapshotPolicy).where(
                DiskSnapshotPolicy.policy_id == p.id)):
            session.delete(link)
        session.delete(p)


def _duplicate(name: str) -> Conflict:
    return Conflict("InvalidSnapshotPolicyName.Duplicated",
                    f"a snapshot policy named {name!r} exists", "name")


async def snapshot_policy_loop(db: Database, period_s: float = 60.0) -> None:
    """The controller's background task: a policy pass every ``period_s`` (slots are hours,
    and each slot runs once, so the period only bounds the delay)."""
    import asyncio

    from fastapi.concurrency import run_in_threadpool

    while True:
        try:
            await run_in_threadpool(run_policies, db)
        except Exception:  # noqa: BLE001 - keep running
            log.exception("snapshot policy pass failed")
        await asyncio.sleep(period_s)
