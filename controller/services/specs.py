"""The spec compiler: a host's desired state, from the database, in the agent's vocabulary.

``compile_host_spec`` reads everything placed on the host that is not being
deleted: instances with their disks, NICs, keys, user data and pending
one-shot operations; one ``NetworkSpec`` per VPC with a port on the host
(with the gateways of all that VPC's vSwitches, for routing between them);
and the images those instances need.
"""

from __future__ import annotations

import functools
import ipaddress

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from agent import spec
from controller import ids
from controller.config import Settings
from controller.errors import NotFound
from controller.models import Host, Image, Instance, KeyPair, Nic, Vpc, VSwitch
from controller.services.net_compile import network_extras_many
from controller.services.disks import storage_spec
from controller.services.notify import bump_generations
from controller.services.sg_compile import compile_host_firewall
from controller.services.migration_compile import spec_extras as migration_extras

GIB = 1024 ** 3


def image_data_url(image_id: str) -> str:
    return f"/api/v1/agent/images/{image_id}/data"


def instances_in_spec(session: Session, host_id: str, extra_ids: list[str] | None = None
                      ) -> list[Instance]:
    """Instances the host must realise: placed there (or ``extra_ids``: arriving by live
    migration), not deleted nor being deleted."""
    where = Instance.host_id == host_id
    if extra_ids:
        where = or_(where, Instance.id.in_(extra_ids))
    return list(session.scalars(
        select(Instance)
        .where(where, Instance.delete_requested_at.is_(None))
        .options(selectinload(Instance.disks), selectinload(Instance.operations),
                 selectinload(Instance.nics).selectinload(Nic.security_groups),
                 selectinload(Instance.nics).selectinload(Nic.vswitch))
        .order_by(Instance.id)))


def compile_host_spec(session: Session, host_id: str, settings: Settings | None = None
                      ) -> spec.HostSpec:
    settings = settings or Settings()
    host = session.get(Host, host_id)
    if host is None:
        raise NotFound("InvalidHostId.NotFound", f"host {host_id!r} does not exist", "host_id")
    migrations = migration_extras(session, host_id)
    instances = instances_in_spec(session, host_id, migrations["instance_ids"])

    vpc_ids = sorted({nic.vswitch.vpc_id for inst in instances for nic in inst.nics})
    vpcs = {v.id: v for v in session.scalars(select(Vpc).where(Vpc.id.in_(vpc_ids)))}
    key_ids = {i.key_pair_id for i in instances if i.key_pair_id}
    keys = {k.id: k for k in session.scalars(select(KeyPair).where(KeyPair.id.in_(key_ids)))}
    image_ids = sorted({d.image_id for i in instances for d in i.disks if d.image_id}
                       | set(migrations["image_ids"]))
    images = list(session.scalars(select(Image).where(Image.id.in_(image_ids))
                                  .order_by(Image.id)))

    firewalls, address_sets = compile_host_firewall(
        session, [n for i in instances for n in i.nics], vpcs)

    storage = storage_spec(session, host.id)
    storage["disks"] = storage["disks"] + migrations["data_disks"]
    return spec.HostSpec(
        host_id=host.id,
        generation=host.generation,
        instances=[_instance_spec(i, vpcs, keys, settings, firewalls) for i in instances],
        address_sets=address_sets,
        networks=_network_specs(session, [vpcs[v] for v in vpc_ids], host, settings),
        images=[_image_spec(m) for m in images if m.status == "Available"],
        **storage,
        migrations=migrations["migrations"],
    )


def _instance_spec(inst: Instance, vpcs: dict[str, Vpc], keys: dict[str, KeyPair],
                   settings: Settings, firewalls: dict | None = None) -> spec.InstanceSpec:
    key = keys.get(inst.key_pair_id) if inst.key_pair_id else None
    return spec.InstanceSpec(
        id=inst.id, name=inst.name, hostname=inst.hostname, vcpus=inst.vcpus,
        memory_mib=inst.memory_mib, power=inst.desired_power,
        stop_timeout_s=inst.stop_timeout_s, force_stop=inst.force_stop,
        disks=[spec.DiskSpec(id=d.id, role=d.role, size_bytes=d.size_gib * GIB,
                             image_id=d.image_id, device=d.device) for d in inst.disks],
        nics=[_nic_spec(n, vpcs[n.vswitch.vpc_id], settings, (firewalls or {}).get(n.id))
              for n in inst.nics],
        user_data=inst.user_data,
        ssh_authorized_keys=[key.public_key] if key else [],
        operations=[spec.OperationSpec(id=op.id, kind=op.kind, force=op.force)
                    for op in inst.operations if op.outcome == "pending"],
    )


def _nic_spec(nic: Nic, vpc: Vpc, settings: Settings,
              firewall: spec.NicFirewallSpec | None = None) -> spec.NicSpec:
    return spec.NicSpec(
        id=nic.id, mac=nic.mac, ip=nic.ip, prefix_len=_prefix_len(nic.vswitch.cidr_block),
        gateway=nic.vswitch.gateway_ip, vpc_id=vpc.id, vswitch_id=nic.vswitch_id,
        bridge=vpc.bridge_name, tap=nic.tap_name, mtu=settings.guest_mtu,
        security_group_ids=[m.security_group_id for m in nic.security_groups],
        firewall=firewall)


@functools.lru_cache(maxsize=4096)
def _prefix_len(cidr: str) -> int:
    """A vSwitch's prefix length (parsed once per CIDR, not once per NIC of every spec)."""
    return ipaddress.IPv4Network(cidr).prefixlen


def _network_specs(session: Session, vpcs: list[Vpc], host: Host, settings: Settings
                   ) -> list[spec.NetworkSpec]:
    """The host's ``NetworkSpec`` of each of ``vpcs``, in a few queries for all of them."""
    vswitches: dict[str, list[VSwitch]] = {v.id: [] for v in vpcs}
    if vpcs:
        for vsw in session.scalars(select(VSwitch).where(VSwitch.vpc_id.in_(list(vswitches)))
                                   .order_by(VSwitch.cidr_block, VSwitch.id)):
            vswitches[vsw.vpc_id].append(vsw)
    extras = network_extras_many(session, vpcs, host, vswitches)
    return [_network_spec(vpc, host.id, settings, vswitches[vpc.id], extras[vpc.id])
            for vpc in vpcs]


def _network_spec(vpc: Vpc, host_id: str, settings: Settings, vswitches: list[VSwitch],
                  extras: dict) -> spec.NetworkSpec:
    veth_b, veth_r = ids.veth_names(vpc.id)
    return spec.NetworkSpec(
        vpc_id=vpc.id, vni=vpc.vni, bridge=vpc.bridge_name, router_ns=ids.router_ns_name(vpc.id),
        veth_bridge_side=veth_b, veth_router_side=veth_r,
        router_mac=ids.router_mac(vpc.id, host_id), mtu=settings.guest_mtu,
        gateways=[spec.GatewaySpec(vswitch_id=v.id, cidr=v.cidr_block, gateway_ip=v.gateway_ip)
                  for v in vswitches],
        **extras)


def _image_spec(image: Image) -> spec.ImageSpec:
    return spec.ImageSpec(id=image.id, sha256=image.sha256 or "", format=image.format,
                          size_bytes=image.size_bytes or 0,
                          virtual_size_bytes=image.virtual_size_bytes or 0,
                          url=image_data_url(image.id))


def bump_hosts_of_vpc(session: Session, vpc_id: str) -> None:
    """Bump every host that carries a port of ``vpc_id`` (its gateways list changed)."""
    bump_generations(session, vpc_host_ids(session, vpc_id))


def vpc_host_ids(session: Session, vpc_id: str) -> list[str]:
    """The hosts carrying a port of ``vpc_id`` (instances not being deleted), in id order."""
    return list(session.scalars(
        select(Instance.host_id).distinct()
        .join(Nic, Nic.instance_id == Instance.id).join(VSwitch, VSwitch.id == Nic.vswitch_id)
        .where(VSwitch.vpc_id == vpc_id, Instance.delete_requested_at.is_(None))
        .order_by(Instance.host_id)))


def host_needs_image(session: Session, host_id: str, image_id: str) -> bool:
    """True when an instance in the host's spec (or a migration to it) has a disk from
    ``image_id``, or a disk of this host is being made from a snapshot copied through it
    (disk_transfers.py)."""
    from controller.services.disk_transfers import host_may_download

    migrations = migration_extras(session, host_id)
    return image_id in migrations["image_ids"] or any(
        d.image_id == image_id
        for inst in instances_in_spec(session, host_id, migrations["instance_ids"])
        for d in inst.disks) or host_may_download(session, host_id, image_id)
