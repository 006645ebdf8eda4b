"""Cloud disks: create, attach/detach (hot-plug), resize (grow only), reset, delete.

Placement: a disk is a local qcow2 file, so it lives on one host. A disk
created with ``instance_id`` goes to that instance's host; one made from a
snapshot goes to the snapshot's host unless ``instance_id`` or ``host_id``
names another (then the snapshot is copied through the image store:
``disk_transfers.py``); otherwise ``host_id``, or the zone's ready host with
the most free disk. Attaching to an instance on another host is refused
(``InvalidDisk.HostMismatch``); moving existing disks between hosts is not
done.

Desired columns: ``instance_id`` (attachment), ``size_gib``. Status columns
come from agent reports (``apply_disk_reports``): the host says whether the
file exists and which domain has it; the status is derived from both.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from sqlalchemy import and_, bindparam, exists, func, select, update
from sqlalchemy.orm import Session

from agent import spec
from controller import ids
from controller.config import Settings
from controller.db import Database
from controller.errors import Conflict, InvalidParameter, NotFound
from controller.models import Disk, Host, Instance
from controller.models_storage import DiskSnapshotPolicy, Snapshot, StorageOperation
from controller.schemas import disks as schema
from controller.services import scheduler
from controller.services import disk_transfers
from controller.services.common import get_or_404, paginate
from controller.services.notify import bump_generation
from controller.tenancy import host_ref, require_admin_for

GIB = 1024 ** 3
DATA_DEVICES = [f"vd{chr(c)}" for c in range(ord("b"), ord("z") + 1)]
MAX_DATA_DISKS = 16
FINAL_OUTCOMES = ("succeeded", "failed", "cancelled")


# ---- views ---------------------------------------------------------------------

def host_of(disk: Disk) -> str | None:
    return disk.host_id or (disk.instance.host_id if disk.instance else None)


def to_view(session: Session, d: Disk) -> schema.Disk:
    count = session.scalar(select(func.count()).select_from(Snapshot)
                           .where(Snapshot.disk_id == d.id)) or 0
    policy = session.scalar(select(DiskSnapshotPolicy.policy_id)
                            .where(DiskSnapshotPolicy.disk_id == d.id))
    return schema.Disk(
        id=d.id, name=d.name, description=d.description, role=d.role, size_gib=d.size_gib,
        zone_id=d.zone_id or (d.instance.zone_id if d.instance else None),
        host_id=host_ref(host_of(d)),
        instance_id=d.instance_id, device=d.device if d.instance_id else None,
        image_id=d.image_id, source_snapshot_id=d.source_snapshot_id,
        delete_with_instance=d.delete_with_instance,
        status=d.status if d.status in schema.DiskStatus.__args__ else "In_use",  # type: ignore[attr-defined]
        status_reason=d.status_reason, attached_to=d.attached_to,
        observed_size_bytes=d.observed_size_bytes, chain_depth=d.chain_depth,
        snapshot_count=count, policy_id=policy, created_at=d.created_at)


def load_disk(session: Session, disk_id: str, *, for_update: bool = False) -> Disk:
    return get_or_404(session, Disk, disk_id, "InvalidDiskId.NotFound", "disk_id",
                      for_update=for_update)


def _live_instance(session: Session, instance_id: str) -> Instance:
    inst = session.get(Instance, instance_id)
    if inst is None or inst.deleted_at is not None:
        raise NotFound("InvalidInstanceId.NotFound", f"instance {instance_id!r} does not exist",
                       "instance_id")
    if inst.delete_requested_at is not None:
        raise Conflict("IncorrectInstanceStatus", f"instance {inst.id} is being deleted",
                       "instance_id")
    return inst


def allocate(session: Session, host_id: str, gib: int) -> None:
    session.execute(update(Host).where(Host.id == host_id)
                    .values(allocated_disk_gib=Host.allocated_disk_gib + gib)
                    .execution_options(synchronize_session=False))


def _free_device(inst: Instance) -> str:
    used = {d.device for d in inst.disks}
    if sum(1 for d in inst.disks if d.role == "data") >= MAX_DATA_DISKS:
        raise Conflict("InstanceDiskNumber.LimitExceed",
                       f"instance {inst.id} has {MAX_DATA_DISKS} data disks already", "instance_id")
    return next(dev for dev in DATA_DEVICES if dev not in used)


def choose_host(session: Session, settings: Settings, zone_id: str, gib: int) -> Host:
    """The ready host of the zone with the most free disk, out of maintenance."""
    hosts = [h for h in session.scalars(select(Host).where(Host.zone_id == zone_id,
                                                             Host.state == "ready")
                                        .order_by(Host.id))
             if scheduler.is_alive(h, settings) and not scheduler.in_maintenance(h)]
    if not hosts:
        raise Conflict("OperationDenied.NoStock",
                       f"no ready host out of maintenance in zone {zone_id}", "zone_id")
    loads = {h.id: scheduler.host_load(h, settings) for h in hosts}
    best = max(hosts, key=lambda h: (loads[h.id].cap_disk_gib - loads[h.id].used_disk_gib, h.id))
    if loads[best.id].cap_disk_gib - loads[best.id].used_disk_gib < gib:
        raise Conflict("OperationDenied.NoStock", f"no host in zone {zone_id} has {gib} GiB free",
                       "size_gib")
    return best


# ---- create ----------------------------------------------------------------------

def create_disk(db: Database, settings: Settings, req: schema.DiskCreate) -> schema.Disk:
    if req.host_id is not None:  # before any lookup: a tenant learns nothing of hosts
        require_admin_for("host_id", "placing a disk on a chosen host")
    with db.write() as session:
        inst = _live_instance(session, req.instance_id) if req.instance_id else None
        snap = None
        if req.snapshot_id:
            snap = get_or_404(session, Snapshot, req.snapshot_id, "InvalidSnapshotId.NotFound",
                              "snapshot_id")
            if snap.status != "accomplished":
                raise Conflict("IncorrectSnapshotStatus",
                               f"snapshot {snap.id} is {snap.status}", "snapshot_id")
        size = req.size_gib or (snap.disk_size_gib if snap else None)
        if size is None:
            raise InvalidParameter("MissingParameter.SizeGib", "size_gib",
                                   "size_gib is required unless snapshot_id is given")
        if snap and size < snap.disk_size_gib:
            raise InvalidParameter("InvalidDiskSize.TooSmall", "size_gib",
                                   f"the snapshot needs at least {snap.disk_size_gib} GiB")
        if inst is not None:
            host_id, zone_id = inst.host_id, inst.zone_id
        elif req.host_id:
            host = get_or_404(session, Host, req.host_id, "InvalidHostId.NotFound", "host_id")
            host_id, zone_id = host.id, host.zone_id
        elif snap is not None:
            host_id, zone_id = snap.host_id, snap.zone_id
        else:
            zone_id = req.zone_id or "zone-a"
            host_id = choose_host(session, settings, zone_id, size).id
        if req.zone_id and req.zone_id != zone_id:
            raise InvalidParameter("InvalidZoneId.Mismatch", "zone_id",
                                   f"the disk would live in {zone_id}, not {req.zone_id}")
        bump_generation(session, host_id)
        disk = Disk(id=ids.new_id("disk"), role="data", size_gib=size, name=req.name,
                    description=req.description, zone_id=zone_id, host_id=host_id,
                    delete_with_instance=req.delete_with_instance,
                    source_snapshot_id=snap.id if snap else None, status="Creating")
        if inst is not None:
            disk.device = _free_device(inst)
            inst.disks.append(disk)
        session.add(disk)
        allocate(session, host_id, size)
        if snap is not None and snap.host_id != host_id:
            disk_transfers.start_transfer(session, snap, disk)
        session.flush()
        return to_view(session, disk)


# ---- read ---------------------------------------------------------------------------

def get_disk(db: Database, disk_id: str) -> schema.Disk:
    with db.read() as session:
        return to_view(session, load_disk(session, disk_id))


def list_disks(db: Database, max_results: int, next_token: str | None, *,
               instance_id: str | None = None, status: str | None = None,
               role: str | None = None) -> schema.DiskList:
    stmt = select(Disk)
    if instance_id:
        stmt = stmt.where(Disk.instance_id == instance_id)
    if status:
        stmt = stmt.where(Disk.status == status)
    if role:
        stmt = stmt.where(Disk.role == role)
    with db.read() as session:
        rows, token = paginate(session, stmt, Disk, max_results, next_token)
        return schema.DiskList(items=[to_view(session, d) for d in rows], next_token=token)


# ---- attach / detach ----------------------------------------------------------------

def attach_disk(db: Database, disk_id: str, req: schema.DiskAttach) -> schema.Disk:
    with db.write() as session:
        disk = load_disk(session, disk_id)
        inst = _live_instance(session, req.instance_id)
        if disk.role != "data":
            raise Conflict("InvalidDisk.SystemDisk", "a system disk cannot be attached", "disk_id")
        if disk.instance_id == inst.id:
            return to_view(session, disk)
        if disk.instance_id is not None or disk.status not in ("Available",):
            raise Conflict("IncorrectDiskStatus",
                           f"disk {disk.id} is {disk.status}; only an Available disk attaches",
                           "disk_id")
        if disk.zone_id and disk.zone_id != inst.zone_id:
            raise InvalidParameter("InvalidDisk.ZoneMismatch", "instance_id",
                                   f"disk {disk.id} is in {disk.zone_id}, the instance in "
                                   f"{inst.zone_id}")
        if disk.host_id != inst.host_id:
            raise Conflict("InvalidDisk.HostMismatch",
                           f"disk {disk.id} is a local disk on host {disk.host_id}; instance "
                           f"{inst.id} runs on {inst.host_id} (disks are not moved)",
                           "instance_id")
        if inst.status not in ("Running", "Stopped"):
            raise Conflict("IncorrectInstanceStatus",
                           f"instance {inst.id} is {inst.status}; attach to a Running or "
                           "Stopped instance", "instance_id")
        bump_generation(session, disk.host_id)
        disk.device = _free_device(inst)
        inst.disks.append(disk)
        if req.delete_with_instance is not None:
            disk.delete_with_instance = req.delete_with_instance
        disk.status = "Attaching"
        session.flush()
        return to_view(session, disk)


def detach_disk(db: Database, disk_id: str) -> schema.Disk:
    with db.write() as session:
        disk = load_disk(session, disk_id)
        if disk.role != "data":
            raise Conflict("InvalidDisk.SystemDisk", "a system disk cannot be detached", "disk_id")
        if disk.instance_id is None:
            if disk.status == "Detaching":
                return to_view(session, disk)
            raise Conflict("IncorrectDiskStatus", f"disk {disk.id} is not attached", "disk_id")
        bump_generation(session, disk.host_id)
        disk.instance.disks.remove(disk)
        disk.instance_id = None
        disk.status = "Detaching"
        session.flush()
        return to_view(session, disk)


# ---- resize / reset / delete --------------------------------------------------------

def resize_disk(db: Database, disk_id: str, req: schema.DiskResize) -> schema.Disk:
    """Grow only; online (the guest sees it at once) or offline."""
    with db.write() as session:
        disk = load_disk(session, disk_id)
        if req.size_gib < disk.size_gib:
            raise InvalidParameter("InvalidDiskSize.ShrinkNotSupported", "size_gib",
                                   f"disk {disk.id} is {disk.size_gib} GiB; disks only grow")
        if req.size_gib == disk.size_gib:
            return to_view(session, disk)
        if disk.status in ("Creating", "Error"):
            raise Conflict("IncorrectDiskStatus", f"disk {disk.id} is {disk.status}", "disk_id")
        if disk.role != "data":  # the agent grows data disks only, so far
            raise Conflict("OperationDenied.SystemDiskResize",
                           "resizing a system disk is not supported yet", "disk_id")
        host_id = host_of(disk)
        bump_generation(session, host_id)
        allocate(session, host_id, req.size_gib - disk.size_gib)
        disk.size_gib = req.size_gib
        session.flush()
        return to_view(session, disk)


def reset_disk(db: Database, disk_id: str, req: schema.DiskReset) -> schema.DiskOperation:
    """Roll the disk back to one of its own snapshots (ECS ResetDisk); instance Stopped."""
    with db.write() as session:
        disk = load_disk(session, disk_id)
        snap = get_or_404(session, Snapshot, req.snapshot_id, "InvalidSnapshotId.NotFound",
                          "snapshot_id")
        if snap.disk_id != disk.id:
            raise InvalidParameter("InvalidSnapshotId.NotBelongToDisk", "snapshot_id",
                                   f"snapshot {snap.id} was taken of disk {snap.disk_id}, "
                                   f"not {disk.id}")
        if snap.status != "accomplished":
            raise Conflict("IncorrectSnapshotStatus", f"snapshot {snap.id} is {snap.status}",
                           "snapshot_id")
        if disk.instance is not None and (disk.instance.status != "Stopped"
                                          or disk.instance.desired_power != "stopped"):
            raise Conflict("IncorrectInstanceStatus",
                           f"instance {disk.instance.id} is {disk.instance.status}; stop it "
                           "before rolling its disk back", "disk_id")
        if disk.instance is None and disk.status != "Available":
            raise Conflict("IncorrectDiskStatus", f"disk {disk.id} is {disk.status}", "disk_id")
        host_id = host_of(disk)
        bump_generation(session, host_id)
        op = StorageOperation(id=ids.new_id("operation"), host_id=host_id, kind="reset_disk",
                              disk_id=disk.id, snapshot_id=snap.id, outcome="pending")
        session.add(op)
        session.flush()
        return operation_view(op)


def delete_disk(db: Database, disk_id: str) -> None:
    """Refused while attached (or detaching); its snapshots stay."""
    with db.write() as session:
        disk = load_disk(session, disk_id)
        if disk.role != "data":
            raise Conflict("InvalidDisk.SystemDisk",
                           "a system disk is deleted with its instance", "disk_id")
        if disk.instance_id is not None or disk.status in ("Detaching", "Attaching", "In_use"):
            raise Conflict("IncorrectDiskStatus",
                           f"disk {disk.id} is {disk.status}; detach it first", "disk_id")
        _drop(session, disk)


def _drop(session: Session, disk: Disk) -> None:
    host_id = host_of(disk)
    if host_id:
        bump_generation(session, host_id)
        allocate(session, host_id, -disk.size_gib)
    now = datetime.now(UTC)
    # A rollback dies with its disk; an export goes on: the snapshot outlives the disk (the
    # host keeps its file as the snapshots' holder) and the image is made from that.
    for op in session.scalars(select(StorageOperation).where(
            StorageOperation.disk_id == disk.id, StorageOperation.outcome == "pending",
            StorageOperation.kind != "export_snapshot")):
        op.outcome, op.message, op.finished_at = "cancelled", "disk deleted", now
        apply_export_outcome(session, op)
    disk_transfers.finish_transfer(session, disk.id, "disk deleted")
    session.delete(disk)


def release_instance_disks(session: Session, inst: Instance) -> int:
    """At an instance's final delete: drop its system disk and the data disks marked
    ``delete_with_instance``; the others become Available. Returns the system disk GiB
    (released with the instance's own capacity)."""
    system_gib = 0
    for disk in list(inst.disks):
        inst.disks.remove(disk)
        disk.instance_id = None
        if disk.role == "system":
            system_gib += disk.size_gib
            session.delete(disk)
        elif disk.delete_with_instance:
            _drop(session, disk)
        else:
            disk.status = "Available"
            bump_generation(session, disk.host_id)
    return system_gib


# ---- operations ------------------------------------------------------------------

def operation_view(op: StorageOperation) -> schema.DiskOperation:
    return schema.DiskOperation(id=op.id, kind=op.kind, disk_id=op.disk_id,
                                snapshot_id=op.snapshot_id, outcome=op.outcome,
                                is_final=op.outcome in FINAL_OUTCOMES, message=op.message,
                                created_at=op.created_at, finished_at=op.finished_at)


def get_operation(db: Database, operation_id: str) -> schema.DiskOperation:
    with db.read() as session:
        op = get_or_404(session, StorageOperation, operation_id,
                        "InvalidOperationId.NotFound", "operation_id")
        return operation_view(op)


# ---- spec and reports ---------------------------------------------------------------

def storage_spec(session: Session, host_id: str, present=None) -> dict:
    """The storage part of a host spec: data disks, snapshots, pending one-shot operations.
    ``present``: which of them the host has (a row of ``STORAGE_PRESENT`` columns: most
    hosts have none, asked in one statement with the rest of the spec's rare rows); None:
    read all three."""
    on_host = {"host_id": host_id}
    disks = session.scalars(_DATA_DISKS, on_host).all() \
        if present is None or present.data_disks else []
    snaps = session.scalars(_LIVE_SNAPSHOTS, on_host).all() \
        if present is None or present.snapshots else []
    snap_disk = {s.id: s.disk_id for s in snaps}
    ops = session.scalars(_PENDING_STORAGE_OPERATIONS, on_host).all() \
        if present is None or present.storage_operations else []
    return {
        "disks": [spec.HostDiskSpec(
            id=d.id, size_bytes=d.size_gib * GIB, source_snapshot_id=d.source_snapshot_id,
            source_disk_id=snap_disk.get(d.source_snapshot_id or ""),
            source_image=disk_transfers.source_image_spec(session, d)
            if d.source_snapshot_id and d.source_snapshot_id not in snap_disk else None)
            for d in disks],
        "snapshots": [spec.SnapshotSpec(id=s.id, disk_id=s.disk_id, state=s.status)
                      for s in snaps],
        "storage_operations": [spec.StorageOperationSpec(
            id=op.id, kind=op.kind, disk_id=op.disk_id, snapshot_id=op.snapshot_id,
            upload_url=f"/api/v1/agent/images/{op.image_id}/data" if op.image_id else None)
            for op in ops],
    }


# built once: every compile of a host's own part runs them (when ``STORAGE_PRESENT`` says so)
_ON_HOST = bindparam("host_id")
_DATA_DISKS_WHERE = and_(Disk.host_id == _ON_HOST, Disk.role == "data")
_LIVE_SNAPSHOTS_WHERE = and_(Snapshot.host_id == _ON_HOST,
                             Snapshot.status.in_(("progressing", "accomplished")))
_PENDING_STORAGE_WHERE = and_(StorageOperation.host_id == _ON_HOST,
                              StorageOperation.outcome == "pending")
_DATA_DISKS = select(Disk).where(_DATA_DISKS_WHERE).order_by(Disk.id)
_LIVE_SNAPSHOTS = select(Snapshot).where(_LIVE_SNAPSHOTS_WHERE).order_by(Snapshot.id)
_PENDING_STORAGE_OPERATIONS = select(StorageOperation).where(_PENDING_STORAGE_WHERE) \
    .order_by(StorageOperation.created_at, StorageOperation.id)
# whether each of the three has a row for the host (``bindparam("host_id")``), as columns
# for one probe statement (``storage_spec``'s ``present``)
STORAGE_PRESENT = (exists().where(_DATA_DISKS_WHERE).label("data_disks"),
                   exists().where(_LIVE_SNAPSHOTS_WHERE).label("snapshots"),
                   exists().where(_PENDING_STORAGE_WHERE).label("storage_operations"))


def _derive_disk_status(disk: Disk, seen: spec.DiskObserved | None) -> tuple[str, str]:
    if seen is not None and not seen.exists and seen.failed and disk.status in ("Creating",
                                                                               "Error"):
        return "Error", seen.error or "the host could not create the disk"
    if seen is None or not seen.exists:
        if disk.status == "Creating" and seen is not None and seen.error:
            return "Creating", seen.error
        return disk.status, (seen.error or "") if seen else disk.status_reason
    want = disk.instance_id
    if want and seen.attached_to == want:
        status = "In_use"
    elif want:
        status = "Attaching"
    elif seen.attached_to:
        status = "Detaching"
    else:
        status = "Available"
    return status, seen.error or ""


def apply_disk_reports(session: Session, host: Host, report: spec.HostReport,
                       now: datetime) -> None:
    """Disk, snapshot and storage-operation observations of one host report."""
    changed = False
    for seen in report.disks:
        disk = session.get(Disk, seen.id)
        if disk is None or host_of(disk) != host.id:
            continue
        if seen.exists:
            disk.attached_to = seen.attached_to
            disk.observed_size_bytes = seen.size_bytes
            disk.chain_depth = seen.chain_depth
        if disk.role == "data":
            was = disk.status
            disk.status, disk.status_reason = _derive_disk_status(disk, seen)
            if was == "Creating" and seen.exists and disk.source_snapshot_id:
                disk_transfers.finish_transfer(session, disk.id, "disk made")
            if was == "Creating" != disk.status and disk.source_snapshot_id:
                changed = True  # its copy source (a transfer image) leaves the spec
        else:
            disk.status_reason = seen.error or ""
    for seen_s in report.snapshots:
        snap = session.get(Snapshot, seen_s.id)
        if snap is None or snap.host_id != host.id:
            continue
        if snap.status == "progressing" and seen_s.state == "accomplished":
            snap.status, snap.accomplished_at, changed = "accomplished", now, True
        elif snap.status == "progressing" and seen_s.state == "failed":
            snap.status, snap.status_reason, changed = "failed", seen_s.message[:4000], True
        elif snap.status == "accomplished" and seen_s.state == "missing":
            snap.status_reason = seen_s.message[:4000]
    for result in report.storage_operations:
        op = session.get(StorageOperation, result.id)
        if op is None or op.host_id != host.id or op.outcome != "pending":
            continue
        op.outcome = "succeeded" if result.ok else "failed"
        op.message, op.finished_at, changed = result.message[:4000], now, True
        apply_export_outcome(session, op)
    if changed:
        bump_generation(session, host.id)


def apply_export_outcome(session: Session, op: StorageOperation) -> None:
    from controller.services.image_exports import apply_export_outcome as apply  # import cycle

    apply(session, op)


def gib_of(size_bytes: int) -> int:
    return max(1, math.ceil(size_bytes / GIB))
