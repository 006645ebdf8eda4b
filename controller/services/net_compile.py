"""The networking part of a host spec: overlay peers, the VPC's ports, NAT and EIPs.

A VPC's ports (every NIC of an instance not being deleted, on any host, with
the underlay address of its host) are the same for every host of the VPC: the
spec compiler reads them once per change of the VPC (``vpc_ports``, cached
with the VPC's part in ``specs.VpcShared``) and each host's view marks its own
ports local (no VTEP) and lists the other hosts as its VXLAN peers. The EIPs of
a host's instances belong to the host's own part (``host_eips``): associating
one bumps the host, not the VPC.
"""

from __future__ import annotations

import ipaddress

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from agent import spec
from controller.models import Host, Instance, Nic, VSwitch
from controller.models_net import Eip

TRANSIT_NET = ipaddress.IPv4Network("100.64.0.0/10")


def transit_ip(vni: int) -> str:
    """The router's uplink-side address for a VPC: unique per VPC on a host (VNIs are unique)."""
    return str(TRANSIT_NET.network_address + 4 + vni % (TRANSIT_NET.num_addresses - 8))


def vpc_ports(session: Session, vpc_ids: list[str]) -> dict[str, list[tuple]]:
    """Every port of each of ``vpc_ids`` as (NIC id, IP, MAC, host id, the host's underlay
    address), ordered by IP and MAC, in one query for all of them."""
    by_vpc: dict[str, list[tuple]] = {v: [] for v in vpc_ids}
    if not vpc_ids:
        return by_vpc
    rows = session.execute(
        select(VSwitch.vpc_id, Nic.id, Nic.ip, Nic.mac, Instance.host_id, Host.underlay_address)
        .join(Instance, Instance.id == Nic.instance_id)
        .join(VSwitch, VSwitch.id == Nic.vswitch_id)
        .join(Host, Host.id == Instance.host_id)
        .where(VSwitch.vpc_id.in_(vpc_ids), Instance.delete_requested_at.is_(None))
        .order_by(Nic.ip, Nic.mac))
    for vpc_id, *row in rows:
        by_vpc[vpc_id].append(tuple(row))
    return by_vpc


def host_eips(session: Session, private: dict[str, tuple[str, str]]
              ) -> dict[str, list[spec.EipSpec]]:
    """The EIPs of the instances placed on a host, by VPC, each mapped onto its instance's
    address. ``private``: instance id -> (its VPC, the address its EIP maps to)."""
    out: dict[str, list[spec.EipSpec]] = {}
    if private:
        for eip_ip, instance_id in session.execute(_EIPS, {"ids": list(private)}):
            vpc_id, ip = private[instance_id]
            out.setdefault(vpc_id, []).append(spec.EipSpec(public_ip=eip_ip, private_ip=ip))
    return out


_EIPS = select(Eip.ip, Eip.instance_id).where(
    Eip.instance_id.in_(bindparam("ids", expanding=True))).order_by(Eip.ip)
