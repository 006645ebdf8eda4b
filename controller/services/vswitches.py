"""vSwitches: subnets of a VPC in one zone. See ``ipam`` for the reserved addresses."""

from __future__ import annotations

import ipaddress

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller import ids
from controller.db import Database
from controller.errors import Conflict, InvalidParameter
from controller.models import Nic, Vpc, VSwitch, Zone
from controller.schemas import vswitches as schema
from controller.services import ipam
from controller.services.common import get_or_404, paginate
from controller.services.specs import bump_hosts_of_vpc


def to_view(session: Session, vsw: VSwitch) -> schema.VSwitch:
    net = ipaddress.IPv4Network(vsw.cidr_block)
    return schema.VSwitch(
        id=vsw.id, name=vsw.name, description=vsw.description, vpc_id=vsw.vpc_id,
        zone_id=vsw.zone_id, cidr_block=vsw.cidr_block, gateway_ip=vsw.gateway_ip,
        reserved_ips=[str(a) for a in ipam.reserved_addresses(net)],
        available_ip_count=ipam.usable_count(net) - ipam.used_count(session, vsw.id),
        nat_enabled=bool(vsw.nat_enabled), created_at=vsw.created_at)


def create_vswitch(db: Database, req: schema.VSwitchCreate) -> schema.VSwitch:
    net = ipaddress.IPv4Network(req.cidr_block)
    with db.write() as session:
        # The VPC row's lock serialises sibling creates, so the overlap check holds.
        vpc = get_or_404(session, Vpc, req.vpc_id, "InvalidVpcId.NotFound", "vpc_id",
                         for_update=True)
        get_or_404(session, Zone, req.zone_id, "InvalidZoneId.NotFound", "zone_id")
        if not net.subnet_of(ipaddress.IPv4Network(vpc.cidr_block)):
            raise InvalidParameter("InvalidVSwitchCidr.NotInVpc", "cidr_block",
                                   f"{net} is not inside VPC {vpc.id}'s block {vpc.cidr_block}")
        for sibling in session.scalars(select(VSwitch).where(VSwitch.vpc_id == vpc.id)):
            if net.overlaps(ipaddress.IPv4Network(sibling.cidr_block)):
                raise Conflict("InvalidVSwitchCidr.Overlapped",
                               f"{net} overlaps vSwitch {sibling.id} ({sibling.cidr_block})",
                               "cidr_block")
        vsw = VSwitch(id=ids.new_id("vswitch"), name=req.name, description=req.description,
                      vpc_id=vpc.id, zone_id=req.zone_id, cidr_block=str(net),
                      gateway_ip=str(ipam.gateway_address(net)), nat_enabled=req.nat_enabled)
        session.add(vsw)
        # Hosts already carrying this VPC route for the new gateway too.
        bump_hosts_of_vpc(session, vpc.id)
        session.flush()
        return to_view(session, vsw)


def get_vswitch(db: Database, vswitch_id: str) -> schema.VSwitch:
    with db.read() as session:
        vsw = get_or_404(session, VSwitch, vswitch_id, "InvalidVSwitchId.NotFound", "vswitch_id")
        return to_view(session, vsw)


def list_vswitches(db: Database, max_results: int, next_token: str | None,
                   vpc_id: str | None = None, zone_id: str | None = None) -> schema.VSwitchList:
    stmt = select(VSwitch)
    if vpc_id:
        stmt = stmt.where(VSwitch.vpc_id == vpc_id)
    if zone_id:
        stmt = stmt.where(VSwitch.zone_id == zone_id)
    with db.read() as session:
        rows, token = paginate(session, stmt, VSwitch, max_results, next_token)
        return schema.VSwitchList(items=[to_view(session, v) for v in rows], next_token=token)


def update_vswitch(db: Database, vswitch_id: str, req: schema.VSwitchUpdate) -> schema.VSwitch:
    """Change outbound NAT; every host carrying the VPC re-renders its router's rules."""
    with db.write() as session:
        vsw = get_or_404(session, VSwitch, vswitch_id, "InvalidVSwitchId.NotFound", "vswitch_id",
                         for_update=True)
        if req.nat_enabled is not None and req.nat_enabled != vsw.nat_enabled:
            vsw.nat_enabled = req.nat_enabled
            bump_hosts_of_vpc(session, vsw.vpc_id)
        session.flush()
        return to_view(session, vsw)


def delete_vswitch(db: Database, vswitch_id: str) -> None:
    """Refused while any NIC (of an instance not yet Deleted) uses it."""
    with db.write() as session:
        vsw = get_or_404(session, VSwitch, vswitch_id, "InvalidVSwitchId.NotFound", "vswitch_id",
                         for_update=True)
        in_use = session.scalar(select(func.count()).select_from(Nic)
                                .where(Nic.vswitch_id == vswitch_id))
        if in_use:
            raise Conflict("DependencyViolation.Instance",
                           f"vSwitch {vswitch_id} still has {in_use} NIC(s)", "vswitch_id")
        vpc_id = vsw.vpc_id
        session.delete(vsw)
        session.flush()
        bump_hosts_of_vpc(session, vpc_id)
