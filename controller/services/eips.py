"""Elastic IPs: allocate from the configured pool, associate 1:1 with an instance.

The pool is ``Settings.eip_pool``. An associated EIP is compiled into the
spec of the host where its instance is (``services/net_compile.py``), so it
follows the instance. An association with an instance that is deleted (or
being deleted) no longer counts: the EIP is Available again.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import ids
from controller.config import Settings
from controller.db import Database
from controller.errors import Conflict, InvalidParameter
from controller.models import Instance
from controller.models_net import Eip
from controller.schemas import eips as schema
from controller.services.common import get_or_404, paginate
from controller.services.notify import bump_generation
from controller.tenancy import ALL_PROJECTS


def pool_addresses(pool: str) -> list[ipaddress.IPv4Address]:
    """Every address of ``pool`` (comma-separated CIDRs or ``A-B`` ranges), in order."""
    out: list[ipaddress.IPv4Address] = []
    for part in (p.strip() for p in pool.split(",")):
        if not part:
            continue
        if "-" in part:
            a, b = (ipaddress.IPv4Address(x.strip()) for x in part.split("-", 1))
            out += [ipaddress.IPv4Address(i) for i in range(int(a), int(b) + 1)]
        else:
            net = ipaddress.IPv4Network(part, strict=False)
            out += list(net.hosts()) if net.prefixlen < 31 else list(net)
    return sorted(set(out))


def _live_instance(session: Session, eip: Eip) -> Instance | None:
    if not eip.instance_id:
        return None
    inst = session.get(Instance, eip.instance_id)
    if inst is None or inst.delete_requested_at is not None or inst.status == "Deleted":
        return None
    return inst


def to_view(session: Session, eip: Eip) -> schema.Eip:
    inst = _live_instance(session, eip)
    return schema.Eip(
        id=eip.id, name=eip.name, ip_address=eip.ip, status="InUse" if inst else "Available",
        instance_id=inst.id if inst else None,
        private_ip_address=inst.nics[0].ip if inst and inst.nics else None,
        associated_at=eip.associated_at if inst else None, created_at=eip.created_at)


def allocate_eip(db: Database, settings: Settings, req: schema.EipAllocate) -> schema.Eip:
    pool = pool_addresses(settings.eip_pool)

    def attempt(session: Session) -> schema.Eip:
        taken = set(session.scalars(select(Eip.ip).execution_options(**ALL_PROJECTS)))
        if req.ip_address is not None:
            wanted = ipaddress.IPv4Address(req.ip_address)
            if wanted not in pool:
                raise InvalidParameter("InvalidIpAddress.NotInPool", "ip_address",
                                       f"{wanted} is not in the region's EIP pool")
            if str(wanted) in taken:
                raise Conflict("InvalidIpAddress.AlreadyAllocated",
                               f"{wanted} is allocated already", "ip_address")
            ip = wanted
        else:
            free = [a for a in pool if str(a) not in taken]
            if not free:
                raise Conflict("QuotaExceeded.Eip", "the region's EIP pool is exhausted"
                               if pool else "the region has no EIP pool configured")
            ip = free[0]
        eip = Eip(id=ids.new_id("eip"), name=req.name, ip=str(ip))
        session.add(eip)
        session.flush()
        return to_view(session, eip)

    return db.write_retrying(attempt)


def get_eip(db: Database, eip_id: str) -> schema.Eip:
    with db.read() as session:
        return to_view(session, get_or_404(session, Eip, eip_id, "InvalidEipId.NotFound",
                                           "eip_id"))


def list_eips(db: Database, max_results: int, next_token: str | None) -> schema.EipList:
    with db.read() as session:
        rows, token = paginate(session, select(Eip), Eip, max_results, next_token)
        return schema.EipList(items=[to_view(session, e) for e in rows], next_token=token)


def associate_eip(db: Database, eip_id: str, req: schema.EipAssociate) -> schema.Eip:
    with db.write() as session:
        inst = session.get(Instance, req.instance_id)
        if inst is None or inst.status == "Deleted":
            raise InvalidParameter("InvalidInstanceId.NotFound", "instance_id",
                                   f"instance {req.instance_id!r} does not exist")
        if inst.delete_requested_at is not None:
            raise Conflict("IncorrectInstanceStatus", f"instance {inst.id} is being deleted",
                           "instance_id")
        bump_generation(session, inst.host_id)  # host row first, as everywhere
        eip = get_or_404(session, Eip, eip_id, "InvalidEipId.NotFound", "eip_id",
                         for_update=True)
        current = _live_instance(session, eip)
        if current is not None:
            if current.id == inst.id:
                return to_view(session, eip)  # idempotent
            raise Conflict("InvalidEipStatus.InUse",
                           f"EIP {eip.id} is associated with {current.id}; disassociate it first",
                           "eip_id")
        other = session.scalar(select(Eip).where(Eip.instance_id == inst.id, Eip.id != eip.id))
        if other is not None:
            if _live_instance(session, other) is not None:
                raise Conflict("InvalidInstance.EipAlreadyAssociated",
                               f"instance {inst.id} already has EIP {other.id}", "instance_id")
            other.instance_id = None  # stale association of a reused id: impossible, but tidy
            session.flush()
        eip.instance_id = inst.id
        eip.associated_at = datetime.now(UTC)
        session.flush()
        return to_view(session, eip)


def disassociate_eip(db: Database, eip_id: str) -> schema.Eip:
    with db.write() as session:
        eip = get_or_404(session, Eip, eip_id, "InvalidEipId.NotFound", "eip_id")
        inst = _live_instance(session, eip)
        if inst is not None:
            bump_generation(session, inst.host_id)
        session.refresh(eip, with_for_update=True)
        eip.instance_id = None
        eip.associated_at = None
        session.flush()
        return to_view(session, eip)


def release_eip(db: Database, eip_id: str) -> None:
    with db.write() as session:
        eip = get_or_404(session, Eip, eip_id, "InvalidEipId.NotFound", "eip_id",
                         for_update=True)
        inst = _live_instance(session, eip)
        if inst is not None:
            raise Conflict("InvalidEipStatus.InUse",
                           f"EIP {eip.id} is associated with {inst.id}; disassociate it first",
                           "eip_id")
        session.delete(eip)
