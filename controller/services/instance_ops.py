"""Instance operations after launch (ECS semantics): change the instance type, replace or
re-initialise the system disk, modify attributes and security groups.

Every operation runs the same phases: check the arguments, lock (the host row
first, then the instance row: the order every service keeps), check the
prerequisites against the locked rows, then change desired columns and bump
the host's generation. The agent does the rest level-triggered: a new
vCPU/memory or system disk path changes the domain's config hash (it is
redefined), a new hostname or user data changes the seed (it is rewritten).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from controller import ids
from controller.config import Settings
from controller.db import Database
from controller.errors import Conflict, DomainError, InsufficientCapacity, InvalidParameter
from controller.models import Disk, Host, Image, Instance, InstanceType, KeyPair, NicSecurityGroup
from controller.models_storage import Snapshot, StorageOperation
from controller.schemas import disks as disk_schema
from controller.schemas import instance_ops as ops_schema
from controller.schemas import instances as schema
from controller.services import scheduler
from controller.services.common import get_or_404
from controller.services.disks import operation_view
from controller.services.instances import image_min_disk_gib, load_instance, to_view
from controller.services.notify import bump_generation
from controller.services.security_group_rules import check_nic_groups
from controller.services.specs import bump_hosts_of_vpc


def _lock_instance(session: Session, instance_id: str) -> tuple[Instance, Host]:
    """The instance and its host, the host row locked first (then the instance row)."""
    host_id = load_instance(session, instance_id).host_id
    host = session.get(Host, host_id, with_for_update=True, populate_existing=True)
    inst = session.get(Instance, instance_id, with_for_update=True, populate_existing=True)
    if inst.host_id != host.id:  # moved meanwhile (migration): the caller retries
        raise Conflict("IncorrectInstanceStatus", f"instance {inst.id} is moving to another host",
                       "instance_id")
    return inst, host


def _require_stopped(inst: Instance, what: str) -> None:
    """ECS: type changes and system disk work need a Stopped instance (not merely stopping)."""
    if inst.delete_requested_at is not None or inst.status != "Stopped" \
            or inst.desired_power != "stopped":
        raise Conflict("IncorrectInstanceStatus",
                       f"instance {inst.id} is {inst.status}; stop it before {what}",
                       "instance_id")


def _take_capacity(session: Session, settings: Settings, host: Host, vcpus: int,
                   memory_mib: int, disk_gib: int, field: str) -> None:
    """Add a (possibly negative) delta to the locked host's counters, or refuse naming the host.

    Growing must fit ``capacity * ratio`` as at placement; shrinking always fits.
    """
    load = scheduler.host_load(host, settings)
    grows = vcpus > 0 or memory_mib > 0 or disk_gib > 0
    if grows and not load.fits(scheduler.Demand(max(vcpus, 0), max(memory_mib, 0),
                                                max(disk_gib, 0))):
        raise InsufficientCapacity(
            f"host {host.name} ({host.id}) has no room for {vcpus:+d} vCPU, {memory_mib:+d} MiB "
            f"memory and {disk_gib:+d} GiB disk (allocated {host.allocated_vcpus} vCPU, "
            f"{host.allocated_memory_mib} MiB, {host.allocated_disk_gib} GiB of "
            f"{load.cap_vcpus:g} vCPU, {load.cap_memory_mib:g} MiB, {load.cap_disk_gib:g} GiB)",
            field)
    session.execute(
        update(Host).where(Host.id == host.id)
        .values(allocated_vcpus=Host.allocated_vcpus + vcpus,
                allocated_memory_mib=Host.allocated_memory_mib + memory_mib,
                allocated_disk_gib=Host.allocated_disk_gib + disk_gib)
        .execution_options(synchronize_session=False))


# ---- ModifyInstanceSpec ----------------------------------------------------------------

def modify_instance_type(db: Database, settings: Settings, instance_id: str,
                         req: ops_schema.InstanceTypeChange) -> schema.Instance:
    """Change the type of a Stopped instance; its host must have room for the difference."""
    with db.write() as session:
        itype = get_or_404(session, InstanceType, req.instance_type,
                           "InvalidInstanceType.NotFound", "instance_type")
        inst, host = _lock_instance(session, instance_id)
        _require_stopped(inst, "changing its type")
        if itype.id == inst.instance_type_id and (itype.vcpus, itype.memory_mib) == \
                (inst.vcpus, inst.memory_mib):
            return to_view(inst)
        _take_capacity(session, settings, host, itype.vcpus - inst.vcpus,
                       itype.memory_mib - inst.memory_mib, 0, "instance_type")
        bump_generation(session, host.id)
        inst.instance_type_id, inst.vcpus, inst.memory_mib = itype.id, itype.vcpus, itype.memory_mib
        session.flush()
        return to_view(inst)


# ---- ReplaceSystemDisk / ReInitDisk ----------------------------------------------------

def _system_disk(inst: Instance) -> Disk:
    for d in inst.disks:
        if d.role == "system":
            return d
    raise Conflict("InvalidInstance.NoSystemDisk", f"instance {inst.id} has no system disk",
                   "instance_id")


def _cancel_pending(session: Session, disk_id: str, why: str) -> None:
    now = datetime.now(UTC)
    for op in session.scalars(select(StorageOperation).where(
            StorageOperation.disk_id == disk_id, StorageOperation.outcome == "pending")):
        op.outcome, op.message, op.finished_at = "cancelled", why, now


def replace_system_disk(db: Database, settings: Settings, instance_id: str,
                        req: ops_schema.SystemDiskReplace) -> schema.Instance:
    """A new system disk (new id) from another image; the old disk is released.

    The instance keeps its NIC (MAC, IP) and groups. The old disk's file goes
    from the host (kept as a snapshot holder while it has snapshots, as for a
    deleted disk); its snapshots stay. The seed is re-read by the new disk's
    first boot, so the key pair (the instance's or the one given) is applied.
    """
    with db.write() as session:
        image = get_or_404(session, Image, req.image_id, "InvalidImageId.NotFound", "image_id")
        if image.status != "Available":
            raise Conflict("InvalidImageId.IncorrectStatus",
                           f"image {image.id} is {image.status}, not Available", "image_id")
        if req.key_pair_id is not None:
            get_or_404(session, KeyPair, req.key_pair_id, "InvalidKeyPair.NotFound",
                       "key_pair_id")
        inst, host = _lock_instance(session, instance_id)
        _require_stopped(inst, "replacing its system disk")
        old = _system_disk(inst)
        min_disk = image_min_disk_gib(image)
        size = req.system_disk_size_gib or max(old.size_gib, min_disk)
        if size < min_disk:
            raise InvalidParameter("InvalidSystemDiskSize.LessThanImageSize",
                                   "system_disk_size_gib",
                                   f"image {image.id} needs a system disk of at least "
                                   f"{min_disk} GiB")
        _take_capacity(session, settings, host, 0, 0, size - old.size_gib,
                       "system_disk_size_gib")
        bump_generation(session, host.id)
        _cancel_pending(session, old.id, "system disk replaced")
        device = old.device
        inst.disks.remove(old)
        session.delete(old)
        session.flush()  # the old row goes before the new one takes its device
        inst.disks.append(Disk(id=ids.new_id("disk"), role="system", size_gib=size,
                               image_id=image.id, device=device, zone_id=old.zone_id,
                               host_id=old.host_id))
        inst.image_id = image.id
        if req.key_pair_id is not None:
            inst.key_pair_id = req.key_pair_id
        session.flush()
        return to_view(inst)


def reinit_system_disk(db: Database, instance_id: str) -> disk_schema.DiskOperation:
    """Put the system disk back to its image (ECS ReInitDisk): same disk id, content lost.

    A one-shot storage operation: the agent recreates the disk's overlay on
    the cached image. Refused while the disk holds snapshots (its internal
    snapshots live in the file that is recreated; see docs/decisions.md).
    """
    with db.write() as session:
        inst, host = _lock_instance(session, instance_id)
        _require_stopped(inst, "re-initialising its system disk")
        disk = _system_disk(inst)
        if disk.image_id is None:
            raise Conflict("InvalidDisk.NoImage", f"disk {disk.id} has no source image",
                           "instance_id")
        snaps = session.scalars(select(Snapshot.id).where(
            Snapshot.disk_id == disk.id,
            Snapshot.status.in_(("progressing", "accomplished"))).limit(3)).all()
        if snaps:
            raise Conflict("OperationDenied.DiskHasSnapshots",
                           f"system disk {disk.id} has snapshots ({', '.join(snaps)}); delete "
                           "them first or replace the system disk instead", "instance_id")
        bump_generation(session, host.id)
        op = StorageOperation(id=ids.new_id("operation"), host_id=host.id, kind="reinit_disk",
                              disk_id=disk.id, snapshot_id="", image_id=None,
                              outcome="pending")
        session.add(op)
        session.flush()
        return operation_view(op)


# ---- ModifyInstanceAttribute -------------------------------------------------------------

def modify_instance(db: Database, instance_id: str,
                    req: ops_schema.InstanceModify) -> schema.Instance:
    """Name, description, deletion protection, hostname, user data, security groups.

    Nothing changes unless every given field is acceptable (one transaction).
    """
    with db.write() as session:
        inst, host = _lock_instance(session, instance_id)
        if inst.delete_requested_at is not None:
            raise Conflict("IncorrectInstanceStatus", f"instance {inst.id} is {inst.status}",
                           "instance_id")
        in_spec = False
        if req.user_data is not None and (req.user_data or None) != inst.user_data:
            if inst.status != "Stopped" or inst.desired_power != "stopped":
                raise Conflict("IncorrectInstanceStatus",
                               f"instance {inst.id} is {inst.status}; user data changes only "
                               "while Stopped", "user_data")
            inst.user_data, in_spec = req.user_data or None, True
        if req.security_group_ids is not None:
            groups = req.security_group_ids
            if not groups:
                raise InvalidParameter("InvalidSecurityGroupId.Empty", "security_group_ids",
                                       "an instance keeps at least one security group")
            if len(set(groups)) != len(groups):
                raise InvalidParameter("InvalidSecurityGroupId.Duplicated", "security_group_ids",
                                       "a security group is listed twice")
            nic = inst.nics[0]
            if [m.security_group_id for m in nic.security_groups] != groups:
                try:
                    check_nic_groups(session, nic, groups)
                except DomainError as exc:  # its checks name the singular field
                    exc.field = "security_group_ids"
                    raise
                nic.security_groups.clear()
                session.flush()
                nic.security_groups.extend(NicSecurityGroup(security_group_id=g, position=i)
                                           for i, g in enumerate(groups))
                session.flush()
                bump_hosts_of_vpc(session, inst.vpc_id)  # address sets of referring rules too
        if req.name is not None and req.name != inst.name:
            inst.name, in_spec = req.name, True
        if req.hostname is not None and req.hostname != inst.hostname:
            inst.hostname, in_spec = req.hostname, True
        if req.description is not None:
            inst.description = req.description
        if req.deletion_protection is not None:
            inst.deletion_protection = req.deletion_protection
        if in_spec:
            bump_generation(session, host.id)
        session.flush()
        return to_view(inst)
