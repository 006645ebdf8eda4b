"""Host evacuation: a Down host's instances rebuilt on other hosts, at the operator's word.

Disks are local files, so a hypervisor that dies takes its guests' disks with it, and
nothing is evacuated on its own (a Down host may only have lost its agent or its
network, its guests running on). When the operator knows the host is gone, evacuation
rebuilds each of its instances on another host of its zone, chosen by the scheduler
like a migration's target: the same instance id, name, hostname, NICs (IP, MAC),
security groups and EIP; its system disk made again from its image, its attached data
disks made again empty; what they held on the dead host is lost, and so are the
snapshots kept in that host's store. That is why the caller must say
``accept_data_loss``. The host goes into maintenance. Instances being deleted there are
finalised (their addresses and capacity released). Migrations to or from the host end
failed first (an instance moving away stays where it was and is evacuated with the
rest; one moving in stays on its source).

What else the host's store held goes the same way, after the instances: its detached
data disks are made again, empty, on the host of their zone with the most free disk
(same id, name and size); the snapshots still kept there are lost; its pending storage
operations end failed, so an image or a disk being made from one of its snapshots goes
to Error with that reason instead of waiting for an upload that will not come.

If the host comes back after all, its agent finds none of these instances in its spec
and removes their domains and disk files: evacuation is the operator's statement that
the host's copies are dead. Each instance is moved in a transaction of its own (a
failure leaves the others moved), and so is each detached disk; an instance or disk no
host has room for is listed, with the reason, in ``not_moved``; evacuating again
retries it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from controller.config import Settings
from controller.db import Database
from controller.errors import Conflict, InvalidParameter, NotFound
from controller.models import Disk, Host, Operation
from controller.models_migration import ACTIVE_STATES, Migration
from controller.models_storage import Snapshot, StorageOperation
from controller.schemas import hosts as schema
from controller.services import disk_transfers, disks, placement, scheduler
from controller.services.common import get_or_404
from controller.services.instances import load_instance
from controller.services.migrations import (choose_target, fail_migration, instance_demand,
                                             instances_on, reserve, vpc_ids_of)
from controller.services.notify import bump_generation
from controller.services.reports import finalise_delete
from controller.services.specs import bump_hosts_of_vpc

log = logging.getLogger(__name__)
T = TypeVar("T")


def evacuate_host(db: Database, settings: Settings, host_id: str, *,
                  accept_data_loss: bool) -> schema.HostEvacuation:
    """Rebuild every instance of a Down host elsewhere (module docstring)."""
    if not accept_data_loss:
        raise InvalidParameter(
            "MissingParameter.AcceptDataLoss", "accept_data_loss",
            "evacuation rebuilds each instance from its image on another host: what its "
            "disks and snapshots held on this host is lost; pass accept_data_loss=true")
    ended = db.write_retrying(lambda session: _begin(session, settings, host_id))
    out = schema.HostEvacuation(host_id=host_id, maintenance=True, migrations_failed=ended)
    for instance_id, moved in _one_by_one(
            db, instances_on(db, host_id), out.not_moved,
            lambda session, i: _evacuate_one(session, settings, host_id, i)):
        if moved.target is None:
            out.deleted.append(instance_id)
        else:
            out.evacuated[instance_id] = moved.target
            out.snapshots_lost += moved.snapshots_lost
        out.operations_failed += moved.operations_failed
    for disk_id, (target, failed) in _one_by_one(
            db, _detached_disks_on(db, host_id), out.not_moved,
            lambda session, d: _remake_disk(session, settings, host_id, d)):
        out.disks_remade[disk_id] = target
        out.operations_failed += failed
    try:
        failed, lost = db.write_retrying(lambda session: _lose_store(session, host_id))
    except Conflict as exc:  # it reported again meanwhile: what is left stays with it
        out.not_moved[host_id] = f"{exc.code}: {exc.message}"
    else:
        out.operations_failed = sorted(out.operations_failed + failed)
        out.snapshots_lost = sorted(out.snapshots_lost + lost)
    out.instances_left = instances_on(db, host_id)
    out.disks_left = _detached_disks_on(db, host_id)
    out.done = not out.instances_left and not out.disks_left
    return out


def _one_by_one(db: Database, ids: list[str], not_moved: dict[str, str],
                move: Callable[[Session, str], T | None]) -> Iterator[tuple[str, T]]:
    """Each id moved in a transaction of its own: (id, what ``move`` answered), but for
    those moved or gone meanwhile (None) and those refused (into ``not_moved``)."""
    for item_id in ids:
        try:
            result = db.write_retrying(lambda session, i=item_id: move(session, i))
        except (Conflict, InvalidParameter, NotFound) as exc:
            not_moved[item_id] = f"{exc.code}: {exc.message}"
            continue
        if result is not None:
            yield item_id, result


def _begin(session: Session, settings: Settings, host_id: str) -> list[str]:
    """Maintenance on; the migrations to or from the host end failed (their ids)."""
    host = get_or_404(session, Host, host_id, "InvalidHostId.NotFound", "host_id",
                      for_update=True)
    _require_down(host)
    host.maintenance = True
    bump_generation(session, host.id)
    ended = list(session.scalars(select(Migration).where(
        Migration.state.in_(ACTIVE_STATES),
        or_(Migration.source_host_id == host.id, Migration.target_host_id == host.id))
        .order_by(Migration.id)))
    now = datetime.now(UTC)
    for m in ended:
        fail_migration(session, settings, m, f"host {host.name} was evacuated", now)
    return [m.id for m in ended]


@dataclass
class _Moved:
    target: str | None  # None: it was being deleted, and is Deleted now
    snapshots_lost: list[str]
    operations_failed: list[str]


def _require_down(host: Host) -> None:
    if host.state != "down":
        raise Conflict("IncorrectHostStatus.NotDown",
                       f"host {host.name} is {host.state}, not down: evacuation is for a host "
                       "that stopped reporting; drain a live host instead", "host_id")


def _evacuate_one(session: Session, settings: Settings, host_id: str,
                  instance_id: str) -> _Moved | None:
    inst = load_instance(session, instance_id)
    if inst.host_id != host_id or inst.deleted_at is not None:
        return None
    now = datetime.now(UTC)
    source = session.get(Host, host_id)
    if inst.delete_requested_at is not None:
        _lock_still_down(session, source)
        session.refresh(inst, with_for_update=True)
        finalise_delete(session, inst, now)
        return _Moved(None, [], [])
    # lock order of the whole controller (as a migration's): deployment set, the target
    # hosts, the source host, instance rows
    taken = {h: member for h, member in placement.set_members(
        session, inst.deployment_set_id, lock=True).items() if member != inst.id}
    demand = instance_demand(inst)
    target = choose_target(session, settings, source, demand, exclude=set(taken))
    reserve(session, settings, target, demand)
    bump_generation(session, target.id)
    _lock_still_down(session, source)
    session.refresh(inst, with_for_update=True)
    scheduler.release_instance(session, source.id, demand)
    inst.host_id = target.id
    inst.status = "Pending"
    inst.status_reason = (f"evacuated from host {source.name}: rebuilt on host {target.name} "
                          "from its image")
    inst.observed_power, inst.domain_uuid, inst.reconcile_retries = None, None, 0
    moved = [d.id for d in inst.disks]
    why = f"host {source.name} was evacuated"
    for d in inst.disks:
        disk_transfers.finish_transfer(session, d.id, why)  # a copy it was waiting for
        d.host_id = target.id if d.host_id is not None else None
        d.attached_to, d.observed_size_bytes, d.chain_depth = None, None, None
        if d.role == "data":  # made again, empty, and attached to the new domain
            d.source_snapshot_id = None
            d.status = "Attaching"
            d.status_reason = f"made again empty: its contents were lost with host {source.name}"
    lost = list(session.scalars(select(Snapshot.id).where(
        Snapshot.disk_id.in_(moved), Snapshot.host_id == source.id).order_by(Snapshot.id)))
    if lost:
        session.execute(delete(Snapshot).where(Snapshot.id.in_(lost))
                        .execution_options(synchronize_session=False))
    failed = _fail_operations(session, select(StorageOperation).where(
        StorageOperation.disk_id.in_(moved), StorageOperation.outcome == "pending"), why, now)
    session.execute(update(Operation).where(
        Operation.instance_id == inst.id, Operation.outcome == "pending")
        .values(outcome="failed", message=why, finished_at=now)
        .execution_options(synchronize_session=False))
    session.flush()
    for vpc_id in vpc_ids_of(session, inst.id):  # FDB and router neighbours point at the target
        bump_hosts_of_vpc(session, vpc_id)
    log.warning("instance %s evacuated from down host %s to %s (%d snapshot(s) lost)",
                inst.id, source.name, target.name, len(lost))
    return _Moved(target.id, lost, failed)


def _lock_still_down(session: Session, source: Host) -> None:
    """Bump (and so lock) the source host's row, and check it is still down: one that
    reported meanwhile holds its instances again."""
    bump_generation(session, source.id)
    session.refresh(source)
    _require_down(source)


def _detached_disks_on(db: Database, host_id: str) -> list[str]:
    with db.read() as session:
        return list(session.scalars(select(Disk.id).where(
            Disk.host_id == host_id, Disk.instance_id.is_(None)).order_by(Disk.id)))


def _remake_disk(session: Session, settings: Settings, host_id: str,
                 disk_id: str) -> tuple[str, list[str]] | None:
    """A detached data disk made again, empty, on the zone's host with the most free disk:
    its new host, and its pending operations ended failed (None when it was attached,
    deleted or moved meanwhile)."""
    disk = session.get(Disk, disk_id)
    if disk is None or disk.host_id != host_id or disk.instance_id is not None:
        return None
    source = session.get(Host, host_id)
    # lock order: the target host, then the source, then the disk
    target = disks.choose_host(session, settings, disk.zone_id or source.zone_id,
                               disk.size_gib)
    bump_generation(session, target.id)
    _lock_still_down(session, source)
    session.refresh(disk, with_for_update=True)
    if disk.host_id != host_id or disk.instance_id is not None:
        return None
    why = f"host {source.name} was evacuated"
    failed = _fail_operations(session, select(StorageOperation).where(
        StorageOperation.disk_id == disk.id, StorageOperation.outcome == "pending"),
        why, datetime.now(UTC))
    disk_transfers.finish_transfer(session, disk.id, why)
    disks.allocate(session, source.id, -disk.size_gib)
    disks.allocate(session, target.id, disk.size_gib)
    disk.host_id, disk.source_snapshot_id = target.id, None
    disk.attached_to, disk.observed_size_bytes, disk.chain_depth = None, None, None
    disk.status = "Creating"
    disk.status_reason = (f"made again empty on host {target.name}: its contents were lost "
                          f"with host {source.name}")
    log.warning("disk %s of down host %s made again empty on %s", disk.id, source.name,
                target.name)
    return target.id, failed


def _lose_store(session: Session, host_id: str) -> tuple[list[str], list[str]]:
    """What is left in the host's store is lost: its pending storage operations end
    failed (an image or disk made from one of its snapshots goes to Error), and its
    snapshots are deleted. Returns the operations' and the snapshots' ids."""
    source = session.get(Host, host_id)
    now = datetime.now(UTC)
    failed = _fail_operations(session, select(StorageOperation).where(
        StorageOperation.host_id == host_id, StorageOperation.outcome == "pending"),
        f"host {source.name} was evacuated: its store is lost", now)
    _lock_still_down(session, source)
    lost = list(session.scalars(select(Snapshot.id).where(Snapshot.host_id == host_id)
                                .order_by(Snapshot.id)))
    if lost:
        session.execute(delete(Snapshot).where(Snapshot.id.in_(lost))
                        .execution_options(synchronize_session=False))
    return failed, lost


def _fail_operations(session: Session, query, why: str, now: datetime) -> list[str]:
    """End these pending storage operations failed, each with its export's outcome (an
    image made from a snapshot, or a disk copied from one, goes to Error)."""
    ops = list(session.scalars(query.order_by(StorageOperation.id)))
    for op in ops:
        op.outcome, op.message, op.finished_at = "failed", why[:4000], now
        disks.apply_export_outcome(session, op)
    return [op.id for op in ops]
