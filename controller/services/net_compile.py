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
    rows = session.execute(
        select(Nic.ip, Nic.mac, Instance.id, Instance.host_id, Host.underlay_address)
        .join(Instance, Instance.id == Nic.instance_id)
        .join(VSwitch, VSwitch.id == Nic.vswitch_id)
        .join(Host, Host.id == Instance.host_id)
        .where(VSwitch.vpc_id == vpc.id, Instance.delete_requested_at.is_(None))
        .order_by(Nic.ip, Nic.mac)).all()
    ports = [spec.PortSpec(mac=mac, ip=ip, vtep=None if h == host.id else vtep)
             for ip, mac, _iid, h, vtep in rows]
    remote = sorted({vtep for _ip, _mac, _iid, h, vtep in rows if h != host.id})
    local_instances = {iid: ip for ip, _mac, iid, h, _v in rows if h == host.id}
    eips = []
    if local_instances:
        for eip in session.scalars(select(Eip).where(Eip.instance_id.in_(local_instances))
                                   .order_by(Eip.ip)):
            eips.append(spec.EipSpec(public_ip=eip.ip,
                                     private_ip=local_instances[eip.instance_id]))
    veth_h, veth_r = ids.uplink_veth_names(vpc.id)
    return {
        "overlay": spec.OverlaySpec(device=ids.vxlan_name(vpc.id), local_vtep=host.underlay_address,
                                    remote_vteps=remote),
        "ports": ports,
        "uplink": spec.UplinkSpec(veth_host_side=veth_h, veth_router_side=veth_r,
                                  transit_ip=transit_ip(vpc.vni),
                                  nat_cidrs=[v.cidr_block for v in vswitches if v.nat_enabled],
                                  eips=eips),
    }
