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
from controller.services.instances import image_min_disk_gib, load_instance, to_view
from controller.services.notify import bump_generation


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
