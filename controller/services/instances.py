"""Instances: create (placement, addressing, disks), read, list, update.

Power actions and delete are in ``instance_actions``; status updates from
agent reports in ``reports``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session, selectinload

from controller import ids
from controller.config import Settings
from controller.db import Database
from controller.errors import Conflict, InvalidParameter, NotFound
from controller.models import (
    Disk, Host, Image, Instance, InstanceType, KeyPair, Nic, NicSecurityGroup, SecurityGroup, VSwitch,
)
from controller.schemas import instances as schema
from controller.services import ipam, scheduler
from controller.services.common import get_or_404, paginate
from controller.services.notify import bump_generation, bump_generations
from controller.services.specs import bump_hosts_of_vpc, vpc_host_ids
from controller.tenancy import host_ref, sees_hosts

GIB = 1024 ** 3


def load_instance(session: Session, instance_id: str) -> Instance:
    inst = session.get(Instance, instance_id, options=[
        selectinload(Instance.disks),
        selectinload(Instance.nics).selectinload(Nic.security_groups)])
    if inst is None:
        raise NotFound("InvalidInstanceId.NotFound", f"instance {instance_id!r} does not exist",
                       "instance_id")
    return inst


def to_view(inst: Instance, hosts: dict[str, Host] | None = None) -> schema.Instance:
    """The API's view of ``inst``; ``hosts``: its host among others already loaded (a page
    of instances), else it is read."""
    nics = [schema.InstanceNic(id=n.id, vswitch_id=n.vswitch_id, private_ip_address=n.ip,
                               mac_address=n.mac,
                               security_group_ids=[m.security_group_id for m in n.security_groups])
            for n in inst.nics]
    primary = nics[0] if nics else None
    return schema.Instance(
        id=inst.id, name=inst.name, description=inst.description, hostname=inst.hostname,
        instance_type=inst.instance_type_id, vcpus=inst.vcpus, memory_mib=inst.memory_mib,
        image_id=inst.image_id, zone_id=inst.zone_id, vpc_id=inst.vpc_id,
        vswitch_id=inst.vswitch_id, host_id=host_ref(inst.host_id),
        private_ip_address=primary.private_ip_address if primary else None,
        mac_address=primary.mac_address if primary else None,
        security_group_ids=primary.security_group_ids if primary else [],
        key_pair_id=inst.key_pair_id, deletion_protection=inst.deletion_protection,
        desired_power=inst.desired_power, **host_down_status(inst, hosts),
        observed_power=inst.observed_power,
        disks=[schema.InstanceDisk.model_validate(d) for d in inst.disks], nics=nics,
        created_at=inst.created_at, deleted_at=inst.deleted_at,
        deployment_set_id=inst.deployment_set_id)


def host_down_status(inst: Instance, hosts: dict[str, Host] | None = None) -> dict[str, str]:
    """Status and reason as shown: Unknown while the instance's host is Down.

    The stored status is the last one reported; while the host misses its
    heartbeats nobody knows whether that still holds (nothing is evacuated).
    """
    if hosts is not None:
        host = hosts.get(inst.host_id)
    else:
        session = object_session(inst)
        host = session.get(Host, inst.host_id) if session is not None else None
    if host is None or host.state != "down" or inst.status == "Deleted":
        return {"status": inst.status, "status_reason": inst.status_reason}
    beat = host.last_heartbeat.isoformat() if host.last_heartbeat else "never"
    return {"status": "Unknown",
            "status_reason": f"host {host.name if sees_hosts() else 'of the instance'} is "
                             f"Down (missed heartbeats; last {beat}); "
                             f"last reported status {inst.status}"}


def image_min_disk_gib(image: Image) -> int:
    virtual = math.ceil((image.virtual_size_bytes or 0) / GIB)
    return max(1, virtual, image.min_disk_gib or 0)


def create_instance(db: Database, settings: Settings,
                    req: schema.InstanceCreate) -> tuple[schema.Instance, bool]:
    """Place, address and record a new instance in one transaction.

    Returns the instance view and whether it was created now (False when the
    client token names an earlier create). Every check runs before anything is
    written; any failure rolls the whole transaction back.
    """
    return db.write_retrying(lambda session: _create(session, settings, req))


def instance_of_client_token(session: Session, client_token: str, vswitch_id: str
                             ) -> str | None:
    """The instance an earlier create with this client token made, in the project the
    new one would join (its vSwitch's; else the caller's). Client tokens are unique per
    project: another project's use of the same token is never looked at."""
    from controller.tenancy import target_project

    project = session.scalar(select(VSwitch.project_id).where(VSwitch.id == vswitch_id)
                             ) or target_project()
    return session.scalar(select(Instance.id).where(
        Instance.project_id == project, Instance.client_token == client_token))


def _create(session: Session, settings: Settings, req: schema.InstanceCreate, *,
            instance_id: str | None = None) -> tuple[schema.Instance, bool]:
    if req.client_token:
        existing = instance_of_client_token(session, req.client_token, req.vswitch_id)
        if existing:
            return to_view(load_instance(session, existing)), False
    inst = new_instance(session, settings, req, instance_id=instance_id)
    bump_generation(session, inst.host_id)
    bump_hosts_of_vpc(session, inst.vpc_id)  # their FDB and router neighbours gain the port
    session.flush()  # unique constraints fire here, inside the retry loop
    return to_view(inst), True


def new_instance(session: Session, settings: Settings, req: schema.InstanceCreate, *,
                 instance_id: str | None = None, batch: "Batch | None" = None) -> Instance:
    """Check, place, address and add one instance (with its system disk and NIC) to the
    session. ``batch``: a member of a batch create, which flushes and bumps once at its end
    (its checked request, and the addresses and MACs its members took, are kept there)."""
    if batch is not None and batch.checked is not None:
        checked = batch.checked  # the members differ only in their names
    else:
        checked = _check(session, req)
    itype, image, vsw, group_ids, disk_gib = checked
    if batch is None:
        ip = ipam.allocate_private_ip(session, vsw, req.private_ip_address)
        mac = ipam.allocate_mac(session)
    else:
        batch.checked = checked
        ip, mac = batch.address(session, vsw, req.private_ip_address), batch.mac(session)

    demand = scheduler.Demand(itype.vcpus, itype.memory_mib, disk_gib)
    # (asked only when the claim locks: not in a zone the transaction holds already)
    host = scheduler.place_instance(session, settings, vsw.zone_id, demand,
                                    policy=req.placement_policy,
                                    deployment_set_id=req.deployment_set_id,
                                    lock_also=lambda: vpc_host_ids(session, vsw.vpc_id))
    if batch is not None:
        batch.hosts[host.id] = host

    instance_id = instance_id or ids.new_id("instance")
    nic_id = ids.new_id("nic")
    inst = Instance(
        id=instance_id, name=req.name, description=req.description,
        hostname=req.hostname or instance_id, instance_type_id=itype.id, vcpus=itype.vcpus,
        memory_mib=itype.memory_mib, image_id=image.id, vpc_id=vsw.vpc_id, vswitch_id=vsw.id,
        zone_id=vsw.zone_id, host_id=host.id, key_pair_id=req.key_pair_id,
        user_data=req.user_data, client_token=req.client_token,
        deletion_protection=req.deletion_protection, desired_power="running",
        deployment_set_id=req.deployment_set_id,
        stop_timeout_s=settings.stop_timeout_s, status="Pending")
    inst.disks.append(Disk(id=ids.new_id("disk"), role="system", size_gib=disk_gib,
                           image_id=image.id, device="vda"))
    nic = Nic(id=nic_id, vswitch_id=vsw.id, ip=ip, mac=mac, tap_name=ids.tap_name(nic_id),
              device_index=0)
    nic.security_groups.extend(NicSecurityGroup(security_group_id=g, position=i)
                               for i, g in enumerate(group_ids))
    inst.nics.append(nic)
    session.add(inst)
    return inst


def _check(session: Session, req: schema.InstanceCreate
           ) -> tuple[InstanceType, Image, VSwitch, list[str], int]:
    """What the request names, checked: its type, image, vSwitch (locked), security groups
    (ids) and key pair, and the system disk's size."""
    # Lock order everywhere: vSwitch row, then host rows.
    itype, image, vsw, disk_gib = check_placement_inputs(session, req, lock_vswitch=True)
    group_ids = _check_security_groups(session, req.security_group_ids, vsw.vpc_id)
    if req.key_pair_id is not None:
        get_or_404(session, KeyPair, req.key_pair_id, "InvalidKeyPair.NotFound", "key_pair_id")
    return itype, image, vsw, group_ids, disk_gib


def check_placement_inputs(session: Session, req: schema.InstanceCreate, *,
                           lock_vswitch: bool = False
                           ) -> tuple[InstanceType, Image, VSwitch, int]:
    """The request's type, image (Available) and vSwitch, and its system disk's size (at
    least the image's): what placement needs, checked as a create checks it."""
    itype = get_or_404(session, InstanceType, req.instance_type, "InvalidInstanceType.NotFound",
                       "instance_type")
    image = get_or_404(session, Image, req.image_id, "InvalidImageId.NotFound", "image_id")
    if image.status != "Available":
        raise Conflict("InvalidImageId.IncorrectStatus",
                       f"image {image.id} is {image.status}, not Available", "image_id")
    vsw = get_or_404(session, VSwitch, req.vswitch_id, "InvalidVSwitchId.NotFound", "vswitch_id",
                     for_update=lock_vswitch)
    min_disk = image_min_disk_gib(image)
    disk_gib = req.system_disk_size_gib or min_disk
    if disk_gib < min_disk:
        raise InvalidParameter("InvalidSystemDiskSize.LessThanImageSize", "system_disk_size_gib",
                               f"the image needs a system disk of at least {min_disk} GiB")
    return itype, image, vsw, disk_gib


@dataclass
class Batch:
    """A batch create's members so far (``instance_batch``), added to the session and
    flushed together at the end: the addresses and MACs they took are kept here (a query
    after each member would flush it), and their hosts and VPCs' hosts are bumped once.
    A member of a deployment set is flushed as it is placed: the set's anti-affinity reads
    its members from the database."""

    amount: int = 1
    # what the first member's request named, checked (``_check``): the members share it
    checked: tuple | None = None
    instances: list[Instance] = field(default_factory=list)
    used_ips: dict[str, set[str]] = field(default_factory=dict)  # vSwitch id -> addresses
    macs: list[str] = field(default_factory=list)  # free ones, drawn for the whole batch
    # the hosts the members were placed on, for their views (the ORM's identity map holds
    # rows weakly: each member's view read its host again)
    hosts: dict[str, Host] = field(default_factory=dict)

    def address(self, session: Session, vsw: VSwitch, requested: str | None) -> str:
        used = self.used_ips.get(vsw.id)
        if used is None:
            used = self.used_ips[vsw.id] = ipam.used_addresses(session, vsw.id)
        ip = ipam.allocate_private_ip(session, vsw, requested, used=used)
        used.add(ip)
        return ip

    def mac(self, session: Session) -> str:
        if not self.macs:
            self.macs = ipam.allocate_macs(session, self.amount - len(self.instances))
        return self.macs.pop()

    def add(self, session: Session, inst: Instance) -> None:
        self.instances.append(inst)
        if inst.deployment_set_id is not None:
            session.flush()

    def finish(self, session: Session) -> None:
        """Flush every member, then bump their hosts and their VPCs' hosts once each."""
        session.flush()  # unique constraints fire here; the VPCs' hosts are read with the ports
        bump_generations(session, {i.host_id for i in self.instances})
        for vpc_id in sorted({i.vpc_id for i in self.instances}):
            bump_hosts_of_vpc(session, vpc_id)


def _check_security_groups(session: Session, group_ids: list[str], vpc_id: str) -> list[str]:
    if len(set(group_ids)) != len(group_ids):
        raise InvalidParameter("InvalidSecurityGroupId.Duplicated", "security_group_ids",
                               "a security group is listed twice")
    for gid in group_ids:
        group = get_or_404(session, SecurityGroup, gid, "InvalidSecurityGroupId.NotFound",
                           "security_group_ids")
        if group.vpc_id != vpc_id:
            raise InvalidParameter("InvalidSecurityGroupId.VpcMismatch", "security_group_ids",
                                   f"security group {gid} is in VPC {group.vpc_id}, "
                                   f"the vSwitch in {vpc_id}")
    types = {session.get(SecurityGroup, gid).type for gid in group_ids}
    if len(types) > 1:
        raise InvalidParameter("InvalidSecurityGroup.TypeMismatch", "security_group_ids",
                               "an instance cannot be in normal and enterprise groups at once")
    return group_ids


def get_instance(db: Database, instance_id: str) -> schema.Instance:
    with db.read() as session:
        return to_view(load_instance(session, instance_id))


def list_instances(db: Database, max_results: int, next_token: str | None, *,
                   status: str | None = None, vpc_id: str | None = None,
                   vswitch_id: str | None = None, host_id: str | None = None,
                   name: str | None = None) -> schema.InstanceList:
    """Instances in creation order; Deleted ones only when ``status=Deleted`` is asked."""
    stmt = select(Instance).options(
        selectinload(Instance.disks), selectinload(Instance.nics).selectinload(Nic.security_groups))
    down_hosts = select(Host.id).where(Host.state == "down")
    if status == "Unknown":  # shown for the live instances of Down hosts
        stmt = stmt.where(Instance.status != "Deleted", Instance.host_id.in_(down_hosts))
    elif status:
        stmt = stmt.where(Instance.status == status)
        if status != "Deleted":
            stmt = stmt.where(Instance.host_id.not_in(down_hosts))
    else:
        stmt = stmt.where(Instance.status != "Deleted")
    with db.read() as session:
        if host_id and not sees_hosts():  # a tenant names a host by its opaque id
            host_id = next((h for h in session.scalars(select(Host.id))
                            if host_ref(h) == host_id), "-")
        for column, value in ((Instance.vpc_id, vpc_id), (Instance.vswitch_id, vswitch_id),
                              (Instance.host_id, host_id), (Instance.name, name)):
            if value:
                stmt = stmt.where(column == value)
        rows, token = paginate(session, stmt, Instance, max_results, next_token)
        # the page's hosts in one query, held here: the session's identity map keeps
        # only objects referenced elsewhere, so fetching them to "warm" it did not stop
        # one SELECT per instance (half of a page's time)
        hosts = {h.id: h for h in session.scalars(select(Host).where(
            Host.id.in_(sorted({i.host_id for i in rows if i.host_id}))))}
        return schema.InstanceList(items=[to_view(i, hosts) for i in rows], next_token=token)

