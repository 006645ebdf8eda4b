"""The networking part of a host spec: overlay peers, the VPC's ports, NAT and EIPs.

``network_extras`` is called by the spec compiler for each VPC with a port on
the host. It lists every port of the VPC (any host, instances not being
deleted) with the underlay address of its host, so the agent keeps static FDB
entries and router neighbours; and the uplink leg: the vSwitch blocks with
outbound NAT and the EIPs of instances of this VPC on this host.
"""

from __future__ import annotations

import ipaddress

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent import spec
from controller import ids
from controller.models import Host, Instance, Nic, Vpc, VSwitch
from controller.models_net import Eip

TRANSIT_NET = ipaddress.IPv4Network("100.64.0.0/10")


def transit_ip(vni: int) -> str:
    """The router's uplink-side address for a VPC: unique per VPC on a host (VNIs are unique)."""
    return str(TRANSIT_NET.network_address + 4 + vni % (TRANSIT_NET.num_addresses - 8))


def network_extras(session: Session, vpc: Vpc, host: Host, vswitches: list[VSwitch]) -> dict:
    return network_extras_many(session, [vpc], host, {vpc.id: vswitches})[vpc.id]


def network_extras_many(session: Session, vpcs: list[Vpc], host: Host,
                        vswitches: dict[str, list[VSwitch]]) -> dict[str, dict]:
    """``network_extras`` of several VPCs in two queries (ports, EIPs) instead of two each:
    a host with a port in 20 VPCs compiled its spec in 40 queries of this kind."""
    if not vpcs:
        return {}
    rows = session.execute(
        select(VSwitch.vpc_id, Nic.ip, Nic.mac, Instance.id, Instance.host_id,
               Host.underlay_address)
        .join(Instance, Instance.id == Nic.instance_id)
        .join(VSwitch, VSwitch.id == Nic.vswitch_id)
        .join(Host, Host.id == Instance.host_id)
        .where(VSwitch.vpc_id.in_([v.id for v in vpcs]), Instance.delete_requested_at.is_(None))
        .order_by(Nic.ip, Nic.mac)).all()
    by_vpc: dict[str, list] = {v.id: [] for v in vpcs}
    for vpc_id, *row in rows:
        by_vpc[vpc_id].append(row)
    local = {iid: (vpc_id, ip) for vpc_id, ip, _mac, iid, h, _v in rows if h == host.id}
    eips: dict[str, list[spec.EipSpec]] = {v.id: [] for v in vpcs}
    if local:
        for eip in session.scalars(select(Eip).where(Eip.instance_id.in_(local))
                                   .order_by(Eip.ip)):
            vpc_id, ip = local[eip.instance_id]
            eips[vpc_id].append(spec.EipSpec(public_ip=eip.ip, private_ip=ip))
    out = {}
    for vpc in vpcs:
        ports_rows = by_vpc[vpc.id]
        veth_h, veth_r = ids.uplink_veth_names(vpc.id)
        out[vpc.id] = {
            "overlay": spec.OverlaySpec(
                device=ids.vxlan_name(vpc.id), local_vtep=host.underlay_address,
                remote_vteps=sorted({vtep for _ip, _mac, _iid, h, vtep in ports_rows
                                     if h != host.id})),
            "ports": [spec.PortSpec(mac=mac, ip=ip, vtep=None if h == host.id else vtep)
                      for ip, mac, _iid, h, vtep in ports_rows],
            "uplink": spec.UplinkSpec(
                veth_host_side=veth_h, veth_router_side=veth_r, transit_ip=transit_ip(vpc.vni),
                nat_cidrs=[v.cidr_block for v in vswitches[vpc.id] if v.nat_enabled],
                eips=eips[vpc.id]),
        }
    return out
