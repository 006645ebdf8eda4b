"""Snapshots: create (progressing → accomplished when the host has taken it), list, delete.

A snapshot is a qcow2 internal snapshot inside its disk's file on the disk's
host (see ``agent/disks.py``); it outlives the disk. Deleting a snapshot
only removes it from the host spec: the agent deletes the internal snapshot,
and no other snapshot or the disk is touched, whatever the order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from controller import ids
from controller.db import Database
from controller.errors import Conflict
from controller.models import Disk
from controller.models_storage import Snapshot, StorageOperation
from controller.schemas import snapshots as schema
from controller.services.common import get_or_404, paginate
from controller.services.disks import host_of, load_disk
from controller.services.notify import bump_generation
from controller.tenancy import host_ref

MAX_MANUAL_SNAPSHOTS = 256


def to_view(s: Snapshot) -> schema.Snapshot:
    view = schema.Snapshot.model_validate(s)
    view.host_id = host_ref(s.host_id)
    return view


def create_snapshot(db: Database, req: schema.SnapshotCreate, *,
                    policy_id: str | None = None) -> schema.Snapshot:
    with db.write() as session:
        return to_view(take_snapshot(session, req, policy_id=policy_id))


def take_snapshot(session, req: schema.SnapshotCreate, *, policy_id: str | None = None,
                  now: datetime | None = None) -> Snapshot:
    disk = load_disk(session, req.disk_id)
    if disk.status in ("Creating", "Error"):
        raise Conflict("IncorrectDiskStatus", f"disk {disk.id} is {disk.status}", "disk_id")
    inst = disk.instance
    if inst is not None and inst.status not in ("Running", "Stopped"):
        raise Conflict("IncorrectInstanceStatus",
                       f"instance {inst.id} is {inst.status}; snapshots are taken of disks of "
                       "Running or Stopped instances", "disk_id")
    if policy_id is None:
        manual = session.scalar(select(func.count()).select_from(Snapshot).where(
            Snapshot.disk_id == disk.id, Snapshot.policy_id.is_(None))) or 0
        if manual >= MAX_MANUAL_SNAPSHOTS:
            raise Conflict("QuotaExceed.Snapshot",
                           f"disk {disk.id} has {manual} manual snapshots already (at most "
                           f"{MAX_MANUAL_SNAPSHOTS})", "disk_id")
    pending_reset = session.scalar(select(StorageOperation.id).where(
        StorageOperation.disk_id == disk.id, StorageOperation.outcome == "pending"))
    if pending_reset:
        raise Conflict("IncorrectDiskStatus",
                       f"disk {disk.id} has operation {pending_reset} in progress", "disk_id")
    host_id = host_of(disk)
    bump_generation(session, host_id)
    now = now or datetime.now(UTC)
    snap = Snapshot(
        id=ids.new_id("snapshot"), name=req.name, description=req.description, disk_id=disk.id,
        disk_role=disk.role, disk_size_gib=disk.size_gib, image_id=disk.image_id,
        host_id=host_id, zone_id=disk.zone_id or (inst.zone_id if inst else None),
        instance_id=disk.instance_id, policy_id=policy_id, retention_days=req.retention_days,
        expires_at=now + timedelta(days=req.retention_days) if req.retention_days else None,
        status="progressing", created_at=now)
    session.add(snap)
    session.flush()
    return snap


def get_snapshot(db: Database, snapshot_id: str) -> schema.Snapshot:
    with db.read() as session:
        return to_view(get_or_404(session, Snapshot, snapshot_id, "InvalidSnapshotId.NotFound",
                                  "snapshot_id"))


def list_snapshots(db: Database, max_results: int, next_token: str | None, *,
                   disk_id: str | None = None, status: str | None = None,
                   policy_id: str | None = None) -> schema.SnapshotList:
    stmt = select(Snapshot)
    for column, value in ((Snapshot.disk_id, disk_id), (Snapshot.status, status),
                          (Snapshot.policy_id, policy_id)):
        if value:
            stmt = stmt.where(column == value)
    with db.read() as session:
        rows, token = paginate(session, stmt, Snapshot, max_results, next_token)
        return schema.SnapshotList(items=[to_view(s) for s in rows], next_token=token)


def delete_snapshot(db: Database, snapshot_id: str) -> None:
    with db.write() as session:
        snap = get_or_404(session, Snapshot, snapshot_id, "InvalidSnapshotId.NotFound",
                          "snapshot_id")
        drop_snapshot(session, snap)


def drop_snapshot(session, snap: Snapshot) -> None:
    """Refused while a disk is being made from it or an operation uses it."""
    user = session.scalar(select(Disk.id).where(Disk.source_snapshot_id == snap.id,
                                                Disk.status == "Creating"))
    if user:
        raise Conflict("IncorrectSnapshotStatus",
                       f"disk {user} is being created from snapshot {snap.id}", "snapshot_id")
    op = session.scalar(select(StorageOperation.id).where(
        StorageOperation.snapshot_id == snap.id, StorageOperation.outcome == "pending"))
    if op:
        raise Conflict("IncorrectSnapshotStatus",
                       f"operation {op} uses snapshot {snap.id}", "snapshot_id")
    bump_generation(session, snap.host_id)
    session.delete(snap)
