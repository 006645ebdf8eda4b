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

from sqlalchemy import select
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


def host_eips(session: Session, host_id: str, instances) -> dict[str, list[spec.EipSpec]]:
    """The EIPs of the instances placed on ``host_id`` (ORM rows with their NICs loaded),
    by VPC, each mapped onto its instance's address (an instance's NICs are in one VPC;
    with several, the highest address by IP and MAC, as the ports are ordered)."""
    private: dict[str, tuple[str, str]] = {}
    for inst in instances:
        if inst.host_id != host_id:
            continue  # arriving by live migration: its EIP stays with the source until done
        for nic in sorted(inst.nics, key=lambda n: (n.ip, n.mac)):
            private[inst.id] = (nic.vswitch.vpc_id, nic.ip)
    out: dict[str, list[spec.EipSpec]] = {}
    if private:
        for eip in session.scalars(select(Eip).where(Eip.instance_id.in_(list(private)))
                                   .order_by(Eip.ip)):
            vpc_id, ip = private[eip.instance_id]
            out.setdefault(vpc_id, []).append(spec.EipSpec(public_ip=eip.ip, private_ip=ip))
    return out
