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
from dataclasses import dataclass, field

from pydantic_core import to_json
from sqlalchemy import bindparam, exists, or_, select
from sqlalchemy.orm import Session

from agent import spec
from controller import ids
from controller.config import Settings
from controller.errors import NotFound
from controller.models import (Disk, Host, Image, Instance, KeyPair, Nic, NicSecurityGroup,
                               Operation, Vpc, VSwitch)
from controller.models_net import Eip
from controller.services.net_compile import host_eips, transit_ip, vpc_ports
from controller.services.disks import STORAGE_PRESENT, storage_spec
from controller.services.notify import bump_network
from controller.services.sg_compile import compile_firewalls, referenced_groups
from controller.services.migration_compile import active_involving, \
    spec_extras as migration_extras

GIB = 1024 ** 3


def image_data_url(image_id: str) -> str:
    return f"/api/v1/agent/images/{image_id}/data"


@dataclass(frozen=True)
class LocalPart:
    """The host's own part of its spec: everything but what its VPCs decide (NICs carry no
    groups or firewall here; those are in each ``VpcPart``)."""

    instances: list[spec.InstanceSpec]
    vpc_ids: list[str]  # sorted
    nics_by_vpc: dict[str, list[str]]  # NIC ids of this host's instances, per VPC
    images: list[spec.ImageSpec]
    storage: dict
    migrations: list[spec.MigrationSpec]
    eips_by_vpc: dict[str, list[spec.EipSpec]]  # of the instances placed here
    # JSON kept for ``host_spec_body``: the fields taken as they are (field -> JSON, filled
    # on first use), and each instance with its NICs' groups and firewalls (instance id ->
    # (the NICs' (groups, firewall) pairs, JSON)): a VPC's change replaces those objects
    fields_json: dict = field(default_factory=dict, compare=False, repr=False)
    instances_json: dict = field(default_factory=dict, compare=False, repr=False)
    # instance id -> the rows its spec was built from: a recompile of the part keeps the
    # InstanceSpec (and its JSON) of an instance whose rows are the same
    rows: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class VpcPart:
    """One VPC's part of a host's spec: its network, its NICs' groups and firewalls on the
    host, the member sets their rules name."""

    network: spec.NetworkSpec
    nics: dict[str, tuple[list[str], spec.NicFirewallSpec]]
    address_sets: list[spec.AddressSetSpec]
    network_json: bytes = b""  # ``network`` serialised once, for ``host_spec_body``
    address_sets_json: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class VpcShared:
    """What a VPC puts in the spec of every host it has a port on, compiled once per change
    of the VPC (its net generation) and cut per host in memory (``_vpc_part``): a create
    bumps the VPC's other hosts, and each of them compiling the VPC's ports, groups and
    firewalls again from the database was most of a create's cost at 500 hosts."""

    vpc_id: str
    vni: int
    bridge: str
    gateways: list[spec.GatewaySpec]
    nat_cidrs: list[str]
    # every port: (host id, its VTEP, the port as its own host lists it, as the others do)
    ports: list[tuple[str, str, spec.PortSpec, spec.PortSpec]]
    nic_groups: dict[str, list[str]]  # NIC id -> its group ids in order
    firewalls: dict[str, spec.NicFirewallSpec]  # NIC id -> its compiled firewall
    address_sets: dict[str, spec.AddressSetSpec]  # group id -> members, for groups rules name


@dataclass(frozen=True)
class HostHead:
    """The columns of a host its spec needs (not the whole ORM row: a long-poll reads them
    for every answer)."""

    id: str
    generation: int
    local_generation: int
    underlay_address: str

    @classmethod
    def read(cls, session: Session, host_id: str) -> "HostHead":
        head = cls.read_many(session, [host_id]).get(host_id)
        if head is None:
            raise host_not_found(host_id)
        return head

    @classmethod
    def read_many(cls, session: Session, host_ids: list[str]) -> dict[str, "HostHead"]:
        """The heads of ``host_ids`` that exist, by id, in one statement."""
        return {row.id: cls(*row) for row in session.execute(_HEADS, {"ids": host_ids})}


def host_not_found(host_id: str) -> NotFound:
    return NotFound("InvalidHostId.NotFound", f"host {host_id!r} does not exist", "host_id")


def net_generations(session: Session, vpc_ids) -> dict[str, int]:
    """The net generations of ``vpc_ids`` (those that exist), in one statement."""
    return dict(session.execute(_NET_GENERATIONS, {"vpc_ids": list(vpc_ids)}).all()) \
        if vpc_ids else {}


# Built once: every spec answer runs these, and building a statement (its clauses and
# cache key) cost as much as running it on SQLite.
_NET_GENERATIONS = select(Vpc.id, Vpc.net_generation) \
    .where(Vpc.id.in_(bindparam("vpc_ids", expanding=True)))
_HEADS = select(Host.id, Host.generation, Host.local_generation, Host.underlay_address) \
    .where(Host.id.in_(bindparam("ids", expanding=True)))
GENERATION = select(Host.generation).where(Host.id == bindparam("host_id"))


def compile_host_spec(session: Session, host_id: str, settings: Settings | None = None,
                      fragments=None, head: HostHead | None = None) -> spec.HostSpec:
    """The host's spec. With ``fragments`` (``spec_cache.Fragments``) the host's own part
    and each VPC part are reused while their generations stay (a peer's change in one VPC
    recompiles that VPC's part only); without, everything is compiled afresh. ``head``: the
    host's columns, already read in this transaction."""
    host, local, parts = _parts(session, host_id, settings or Settings(), fragments, head)
    nic_parts = {nic_id: dyn for part in parts.values() for nic_id, dyn in part.nics.items()}
    return spec.HostSpec(
        host_id=host.id,
        generation=host.generation,
        instances=[_with_groups(i, nic_parts) for i in local.instances],
        address_sets=sorted({a.group_id: a for part in parts.values()
                             for a in part.address_sets}.values(), key=lambda a: a.group_id),
        networks=[parts[v].network for v in local.vpc_ids],
        images=local.images,
        **local.storage,
        migrations=local.migrations,
    )


def host_spec_body(session: Session, host_id: str, settings: Settings | None = None,
                   fragments=None, head: HostHead | None = None,
                   net_gens: dict[str, int] | None = None) -> tuple[int, bytes]:
    """The host's spec as the JSON ``compile_host_spec(...).model_dump_json()`` gives, and
    its generation. With ``fragments``, assembled from JSON kept with the parts: a peer's
    change to one VPC serialises that VPC's network and the instances whose NICs are in
    it, not the whole spec (at 20 instances and 20 VPCs a host, the whole spec built and
    serialised again was most of each peer's answer). Without, compiled and serialised
    afresh (what the cache check compares the assembly with). ``net_gens``: the net
    generations of VPCs, read in this transaction (for several hosts at once); the host's
    VPCs missing from it are read."""
    if fragments is None:
        compiled = compile_host_spec(session, host_id, settings, None, head)
        return compiled.generation, compiled.model_dump_json().encode()
    host, local, parts = _parts(session, host_id, settings or Settings(), fragments, head,
                                net_gens)
    nic_parts = {nic_id: dyn for part in parts.values() for nic_id, dyn in part.nics.items()}
    fixed = local.fields_json
    if not fixed:
        fixed.update(images=_json_list(local.images), migrations=_json_list(local.migrations),
                     **{k: _json_list(v) for k, v in local.storage.items()})
    sets = {a.group_id: j for part in parts.values()
            for a, j in zip(part.address_sets, part.address_sets_json)}
    fields = {
        "schema_version": to_json(spec.SCHEMA_VERSION),
        "host_id": to_json(host.id),
        "generation": to_json(host.generation),
        "instances": b"[" + b",".join(_instance_json(local, i, nic_parts)
                                      for i in local.instances) + b"]",
        "networks": b"[" + b",".join(parts[v].network_json for v in local.vpc_ids) + b"]",
        **fixed,
        "address_sets": b"[" + b",".join(sets[g] for g in sorted(sets)) + b"]",
    }
    return host.generation, b"{" + b",".join(
        b'"' + name.encode() + b'":' + fields[name] for name in _HOST_SPEC_FIELDS) + b"}"


# The assembly above writes every field of HostSpec, in its order; a field it does not know
# fails here, at import, not in an agent.
_HOST_SPEC_FIELDS = tuple(spec.HostSpec.model_fields)
assert set(_HOST_SPEC_FIELDS) == {"schema_version", "host_id", "generation", "instances",
                                  "networks", "images", "disks", "snapshots",
                                  "storage_operations", "address_sets", "migrations"}, \
    "HostSpec changed: teach specs.host_spec_body its new fields"


def _json(model) -> bytes:
    return model.__pydantic_serializer__.to_json(model)


def _json_list(models) -> bytes:
    return b"[" + b",".join(_json(m) for m in models) + b"]"


def _instance_json(local: LocalPart, inst: spec.InstanceSpec, nic_parts: dict) -> bytes:
    """``inst`` with its NICs' groups and firewalls, serialised; kept while those are the
    same objects (a VPC's change compiles new ones)."""
    dyn = [nic_parts[nic.id] for nic in inst.nics]
    kept = local.instances_json.get(inst.id)
    if kept is not None and len(kept[0]) == len(dyn) and all(
            a[0] is b[0] and a[1] is b[1] for a, b in zip(kept[0], dyn)):
        return kept[1]
    body = _json(_with_groups(inst, nic_parts))
    local.instances_json[inst.id] = (dyn, body)
    return body


def _parts(session: Session, host_id: str, settings: Settings, fragments,
           head: HostHead | None, known_net_gens: dict[str, int] | None = None
           ) -> tuple[HostHead, LocalPart, dict[str, "VpcPart"]]:
    """The host's head, its own part and its VPC parts (from ``fragments`` while their
    generations stay; ``known_net_gens``: VPCs' net generations already read)."""
    host = head if head is not None else HostHead.read(session, host_id)
    local_gen = host.local_generation
    local = fragments.local(host_id, local_gen) if fragments is not None else None
    if local is None:
        local = _local_part(session, host, settings,
                            fragments.last_local(host_id) if fragments is not None else None)
        if fragments is not None:
            fragments.put_local(host_id, local_gen, local)
    if known_net_gens is not None and all(v in known_net_gens for v in local.vpc_ids):
        net_gens = {v: known_net_gens[v] for v in local.vpc_ids}
    else:
        net_gens = net_generations(session, local.vpc_ids)
    parts: dict[str, VpcPart] = {}
    own = {v: _own_in_vpc(host, local, v) for v in local.vpc_ids} if fragments is not None \
        else {}
    for vpc_id, key in own.items():
        part = fragments.vpc(host_id, vpc_id, net_gens.get(vpc_id), key)
        if part is not None:
            parts[vpc_id] = part
    missing = [v for v in local.vpc_ids if v not in parts]
    if missing:
        fresh = _vpc_parts(session, host, settings, missing, local, net_gens, fragments)
        parts.update(fresh)
        if fragments is not None:
            for vpc_id, part in fresh.items():
                fragments.put_vpc(host_id, vpc_id, net_gens.get(vpc_id), own[vpc_id], part)
    return host, local, parts


def _own_in_vpc(host: HostHead, local: LocalPart, vpc_id: str) -> tuple:
    """What the host's own part puts in its part of ``vpc_id`` (``_vpc_part``'s inputs but
    the VPC's shared part): its VTEP, its NICs there, their EIPs."""
    return (host.underlay_address, tuple(local.nics_by_vpc[vpc_id]),
            tuple((e.public_ip, e.private_ip) for e in local.eips_by_vpc.get(vpc_id, ())))


def _with_groups(inst: spec.InstanceSpec, nic_parts: dict) -> spec.InstanceSpec:
    nics = []
    for nic in inst.nics:
        groups, firewall = nic_parts[nic.id]
        nics.append(nic.model_copy(update={"security_group_ids": groups, "firewall": firewall}))
    return inst.model_copy(update={"nics": nics})


def _local_part(session: Session, host: HostHead, settings: Settings,
                previous: LocalPart | None = None) -> LocalPart:
    """The host's own part. ``previous``: the part last compiled for the host, whose
    instances are kept (with their JSON) where their rows are the same: a create on a host
    of 20 instances built and serialised all 20 again."""
    # the rows most hosts do not have (migrations, storage, pending operations, EIPs) in
    # one statement: each kind is read only when present
    present = session.execute(_PRESENT, {"host_id": host.id}).one()
    migrations = migration_extras(session, host.id, present.migrations)
    rows, disks = _instances_in_spec(session, host.id, migrations["instance_ids"])
    ids = {"ids": [r.id for r in rows]}
    nics = _by_instance(session, _LOCAL_NICS, ids)
    ops = _by_instance(session, _LOCAL_OPERATIONS, ids) \
        if present.operations or migrations["instance_ids"] else {}
    image_ids = sorted({d.image_id for ds in disks.values() for d in ds if d.image_id}
                       | set(migrations["image_ids"]))
    images = session.scalars(_IMAGES, {"ids": image_ids}).all() if image_ids else []
    nics_by_vpc: dict[str, list[str]] = {}
    private: dict[str, tuple[str, str]] = {}  # instance placed here -> its EIP's (VPC, address)
    for r in rows:
        for nic in nics.get(r.id, ()):
            nics_by_vpc.setdefault(nic.vpc_id, []).append(nic.id)
        if r.host_id == host.id and r.id in nics:
            # arriving by live migration: its EIP stays with the source until done. With
            # several NICs (in one VPC), the highest address by IP and MAC, as ports are ordered
            nic = max(nics[r.id], key=lambda n: (n.ip, n.mac))
            private[r.id] = (nic.vpc_id, nic.ip)
    storage = storage_spec(session, host.id, present)
    storage["disks"] = storage["disks"] + migrations["data_disks"]
    instances, kept_json, built_from = [], {}, {}
    for r in rows:
        of = (r, tuple(disks.get(r.id, ())), tuple(nics.get(r.id, ())),
              tuple(ops.get(r.id, ())))
        before = previous.rows.get(r.id) if previous is not None else None
        if before is not None and before[0] == of:
            inst = before[1]
            if r.id in previous.instances_json:
                kept_json[r.id] = previous.instances_json[r.id]
        else:
            inst = _instance_spec(r, *of[1:], settings)
        instances.append(inst)
        built_from[r.id] = (of, inst)
    return LocalPart(
        instances=instances,
        vpc_ids=sorted(nics_by_vpc), nics_by_vpc=nics_by_vpc,
        images=[_image_spec(m) for m in images if m.status == "Available"],
        storage=storage, migrations=migrations["migrations"],
        eips_by_vpc=host_eips(session, private) if present.eips else {},
        instances_json=kept_json, rows=built_from)


# The host's own part is read with Core statements built once, not as ORM rows with their
# relationships loaded: at 20 instances a host the ORM loading was half of the part's
# compile, which a create runs for its host (and a batch for each of its hosts).
_LOCAL_INSTANCES = (
    select(Instance.id, Instance.host_id, Instance.name, Instance.hostname, Instance.vcpus,
           Instance.memory_mib, Instance.desired_power, Instance.stop_timeout_s,
           Instance.force_stop, Instance.power_serial, Instance.user_data, KeyPair.public_key)
    .outerjoin(KeyPair, KeyPair.id == Instance.key_pair_id)
    .where(or_(Instance.host_id == bindparam("host_id"),
               Instance.id.in_(bindparam("extra_ids", expanding=True))),
           Instance.delete_requested_at.is_(None))
    .order_by(Instance.id))
_OF_INSTANCES = bindparam("ids", expanding=True)
# each instance's rows in the order its ORM relationship has them
_LOCAL_DISKS = (select(Disk.instance_id, Disk.id, Disk.role, Disk.size_gib, Disk.image_id,
                       Disk.device)
                .where(Disk.instance_id.in_(_OF_INSTANCES)).order_by(Disk.device, Disk.id))
_LOCAL_NICS = (select(Nic.instance_id, Nic.id, Nic.mac, Nic.ip, Nic.tap_name, Nic.vswitch_id,
                      VSwitch.cidr_block, VSwitch.gateway_ip, VSwitch.vpc_id, Vpc.bridge_name)
               .join(VSwitch, VSwitch.id == Nic.vswitch_id).join(Vpc, Vpc.id == VSwitch.vpc_id)
               .where(Nic.instance_id.in_(_OF_INSTANCES)).order_by(Nic.device_index, Nic.id))
_LOCAL_OPERATIONS = (select(Operation.instance_id, Operation.id, Operation.kind, Operation.force)
                     .where(Operation.instance_id.in_(_OF_INSTANCES),
                            Operation.outcome == "pending")
                     .order_by(Operation.created_at, Operation.id))
_IMAGES = select(Image).where(Image.id.in_(bindparam("ids", expanding=True))).order_by(Image.id)
# Whether the host has each kind of row its own part reads only when there is one: a
# superset of what those statements find (a pending operation or an EIP of any instance
# placed here, deleted or not). Five statements finding nothing were a third of the part's
# compile on PostgreSQL, which every create runs for its host.
_ON_HOST = bindparam("host_id")
_PRESENT = select(
    exists().where(active_involving(_ON_HOST)).label("migrations"),
    *STORAGE_PRESENT,
    exists().where(Operation.instance_id == Instance.id, Instance.host_id == _ON_HOST,
                   Operation.outcome == "pending").label("operations"),
    exists().where(Eip.instance_id == Instance.id, Instance.host_id == _ON_HOST).label("eips"))


def _instances_in_spec(session: Session, host_id: str, extra_ids: list[str]
                       ) -> tuple[list, dict[str, list]]:
    """The instances the host must realise (rows of ``_LOCAL_INSTANCES``: placed there, or
    ``extra_ids`` arriving by live migration; not deleted nor being deleted), and their
    disks by instance."""
    rows = session.execute(_LOCAL_INSTANCES, {"host_id": host_id, "extra_ids": extra_ids}).all()
    return rows, _by_instance(session, _LOCAL_DISKS, {"ids": [r.id for r in rows]})


def _by_instance(session: Session, statement, ids: dict) -> dict[str, list]:
    """``statement``'s rows (their first column the instance id), by instance, in order."""
    out: dict[str, list] = {}
    if ids["ids"]:
        for row in session.execute(statement, ids):
            out.setdefault(row.instance_id, []).append(row)
    return out


def _vpc_parts(session: Session, host: HostHead, settings: Settings, vpc_ids: list[str],
               local: LocalPart, net_gens: dict[str, int], fragments=None
               ) -> dict[str, VpcPart]:
    """The parts of ``vpc_ids`` for ``host``, cut from each VPC's shared part (from
    ``fragments`` while the VPC's net generation stays, else compiled for all the missing
    VPCs together)."""
    if fragments is not None:
        shared = fragments.shared_many({v: net_gens.get(v) for v in vpc_ids},
                                       lambda todo: _vpc_shared(session, todo))
    else:
        shared = _vpc_shared(session, vpc_ids)
    out = {}
    for vpc_id in vpc_ids:
        own = local.nics_by_vpc[vpc_id]
        lacking = [n for n in own if n not in shared[vpc_id].firewalls]
        if lacking:
            # read after the host's own part, in a transaction that sees newer commits
            # (PostgreSQL): an instance of this host's part is already being deleted. Its
            # NICs keep their groups until the next generation (already bumped) drops it.
            shared[vpc_id] = _vpc_shared(session, [vpc_id], lacking)[vpc_id]
        out[vpc_id] = _vpc_part(shared[vpc_id], host, settings, own,
                                local.eips_by_vpc.get(vpc_id, []))
    return out


def _vpc_shared(session: Session, vpc_ids: list[str], extra_nics: list[str] = ()
                ) -> dict[str, VpcShared]:
    """Each VPC's shared part, in a few queries for all of them: vSwitches, ports, the
    ports' groups, the rules of those groups and the members of the groups rules name.
    ``extra_nics``: NICs to compile firewalls for although they are no port any more."""
    vpcs = {v.id: v for v in session.scalars(select(Vpc).where(Vpc.id.in_(vpc_ids)))}
    vswitches: dict[str, list[VSwitch]] = {v: [] for v in vpc_ids}
    for vsw in session.scalars(select(VSwitch).where(VSwitch.vpc_id.in_(vpc_ids))
                               .order_by(VSwitch.cidr_block, VSwitch.id)):
        vswitches[vsw.vpc_id].append(vsw)
    ports = vpc_ports(session, vpc_ids)
    nic_vpc = {row[0]: v for v in vpc_ids for row in ports[v]}
    if extra_nics:
        for nic_id, vpc_id in session.execute(
                select(Nic.id, VSwitch.vpc_id).join(VSwitch, VSwitch.id == Nic.vswitch_id)
                .where(Nic.id.in_(list(extra_nics)))):
            nic_vpc.setdefault(nic_id, vpc_id)
    groups: dict[str, list[str]] = {n: [] for n in nic_vpc}
    for nic_id, group_id in session.execute(
            select(NicSecurityGroup.nic_id, NicSecurityGroup.security_group_id)
            .join(Nic, Nic.id == NicSecurityGroup.nic_id)
            .join(VSwitch, VSwitch.id == Nic.vswitch_id)
            .where(VSwitch.vpc_id.in_(vpc_ids))
            .order_by(NicSecurityGroup.nic_id, NicSecurityGroup.position)):
        if nic_id in groups:
            groups[nic_id].append(group_id)
    firewalls, sets = compile_firewalls(
        session, [(n, groups[n], vpcs[v].vni) for n, v in nic_vpc.items()])
    sets_by_group = {a.group_id: a for a in sets}
    nics_of: dict[str, list[str]] = {v: [] for v in vpc_ids}
    named: dict[str, set[str]] = {v: set() for v in vpc_ids}  # groups the VPC's rules name
    for n, v in nic_vpc.items():
        nics_of[v].append(n)
        named[v] |= referenced_groups(firewalls[n])
    out = {}
    for vpc_id in vpc_ids:
        vpc = vpcs[vpc_id]
        mine = nics_of[vpc_id]
        out[vpc_id] = VpcShared(
            vpc_id=vpc_id, vni=vpc.vni, bridge=vpc.bridge_name,
            gateways=[spec.GatewaySpec(vswitch_id=v.id, cidr=v.cidr_block,
                                       gateway_ip=v.gateway_ip) for v in vswitches[vpc_id]],
            nat_cidrs=[v.cidr_block for v in vswitches[vpc_id] if v.nat_enabled],
            ports=[(h, vtep, spec.PortSpec(mac=mac, ip=ip, vtep=None),
                    spec.PortSpec(mac=mac, ip=ip, vtep=vtep))
                   for _nic, ip, mac, h, vtep in ports[vpc_id]],
            nic_groups={n: groups[n] for n in mine},
            firewalls={n: firewalls[n] for n in mine},
            address_sets={g: a for g, a in sets_by_group.items() if g in named[vpc_id]})
    return out


def _vpc_part(shared: VpcShared, host: HostHead, settings: Settings, own_nics: list[str],
              eips: list[spec.EipSpec]) -> VpcPart:
    """``host``'s part of a VPC from the VPC's shared part (no database)."""
    vpc_id = shared.vpc_id
    veth_b, veth_r = ids.veth_names(vpc_id)
    veth_uh, veth_ur = ids.uplink_veth_names(vpc_id)
    network = spec.NetworkSpec(
        vpc_id=vpc_id, vni=shared.vni, bridge=shared.bridge, router_ns=ids.router_ns_name(vpc_id),
        veth_bridge_side=veth_b, veth_router_side=veth_r,
        router_mac=ids.router_mac(vpc_id, host.id), mtu=settings.guest_mtu,
        gateways=shared.gateways,
        overlay=spec.OverlaySpec(
            device=ids.vxlan_name(vpc_id), local_vtep=host.underlay_address,
            remote_vteps=sorted({vtep for h, vtep, _l, _r in shared.ports if h != host.id})),
        ports=[mine if h == host.id else theirs for h, _vtep, mine, theirs in shared.ports],
        uplink=spec.UplinkSpec(
            veth_host_side=veth_uh, veth_router_side=veth_ur, transit_ip=transit_ip(shared.vni),
            nat_cidrs=shared.nat_cidrs, eips=eips))
    nics = {n: (shared.nic_groups[n], shared.firewalls[n]) for n in own_nics}
    named = set().union(*(referenced_groups(fw) for _g, fw in nics.values()))
    sets = [shared.address_sets[g] for g in sorted(named) if g in shared.address_sets]
    return VpcPart(network=network, nics=nics, address_sets=sets,
                   network_json=_json(network), address_sets_json=tuple(_json(a) for a in sets))


def _instance_spec(inst, disks, nics, operations, settings: Settings) -> spec.InstanceSpec:
    """The instance as the host's own part has it (rows of ``_LOCAL_INSTANCES`` and of its
    disks, NICs and pending operations): NICs without groups and firewall."""
    return spec.InstanceSpec(
        id=inst.id, name=inst.name, hostname=inst.hostname, vcpus=inst.vcpus,
        memory_mib=inst.memory_mib, power=inst.desired_power,
        stop_timeout_s=inst.stop_timeout_s, force_stop=inst.force_stop,
        power_serial=inst.power_serial,
        disks=[spec.DiskSpec(id=d.id, role=d.role, size_bytes=d.size_gib * GIB,
                             image_id=d.image_id, device=d.device) for d in disks],
        nics=[spec.NicSpec(id=n.id, mac=n.mac, ip=n.ip, prefix_len=_prefix_len(n.cidr_block),
                           gateway=n.gateway_ip, vpc_id=n.vpc_id, vswitch_id=n.vswitch_id,
                           bridge=n.bridge_name, tap=n.tap_name, mtu=settings.guest_mtu)
              for n in nics],
        user_data=inst.user_data,
        ssh_authorized_keys=[inst.public_key] if inst.public_key is not None else [],
        operations=[spec.OperationSpec(id=op.id, kind=op.kind, force=op.force)
                    for op in operations],
    )


@functools.lru_cache(maxsize=4096)
def _prefix_len(cidr: str) -> int:
    """A vSwitch's prefix length (parsed once per CIDR, not once per NIC of every spec)."""
    return ipaddress.IPv4Network(cidr).prefixlen


def _image_spec(image: Image) -> spec.ImageSpec:
    return spec.ImageSpec(id=image.id, sha256=image.sha256 or "", format=image.format,
                          size_bytes=image.size_bytes or 0,
                          virtual_size_bytes=image.virtual_size_bytes or 0,
                          url=image_data_url(image.id))


def bump_hosts_of_vpc(session: Session, vpc_id: str) -> None:
    """Bump every host that carries a port of ``vpc_id`` for a change to the VPC's part of
    their specs (ports, gateways, NAT, group members and rules; ``notify.bump_network``)."""
    bump_network(session, vpc_id, vpc_host_ids(session, vpc_id))


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
    _rows, disks = _instances_in_spec(session, host_id, migrations["instance_ids"])
    return image_id in migrations["image_ids"] or any(
        d.image_id == image_id for of_instance in disks.values() for d in of_instance) \
        or host_may_download(session, host_id, image_id)
