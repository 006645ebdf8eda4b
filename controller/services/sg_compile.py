"""Security groups → a NIC's compiled firewall (``agent.spec.NicFirewallSpec``).

The rules of all the NIC's groups are pooled and sorted by priority (smaller
first), drop before accept at equal priority, then by rule id so the order is
stable. A normal group whose inner access policy is ``accept`` adds an
implicit accept from its own members after every explicit rule (priority
101): an explicit drop overrides inner access. Defaults: ingress drop;
egress accept for normal groups, drop for enterprise ones (a NIC's groups
are all of one type).
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.spec import FIREWALL_PREFIX, FirewallRuleSpec, NicFirewallSpec
from controller.models import SecurityGroup
from controller.models_sg import SecurityGroupRule

INNER_PRIORITY = 101


def address_set_name(group_id: str) -> str:
    """The ipset of a group's member IPs on every host: ``mecs-g-`` + the id suffix (<= 31)."""
    return f"{FIREWALL_PREFIX}g-{group_id.split('-', 1)[1]}"[:31]


def ct_zone(vni: int) -> int:
    """Conntrack zone of a VPC: derived from its VNI, in 1..65535 (0 is the host's own)."""
    return vni % 65535 + 1


def rule_spec(rule: SecurityGroupRule) -> FirewallRuleSpec:
    return FirewallRuleSpec(
        id=rule.id, group_id=rule.security_group_id, priority=rule.priority, policy=rule.policy,
        protocol=rule.protocol, port_min=rule.port_min, port_max=rule.port_max,
        source_port_min=rule.source_port_min, source_port_max=rule.source_port_max,
        peer_cidr=rule.peer_cidr,
        peer_set=address_set_name(rule.peer_group_id) if rule.peer_group_id else None,
        peer_group_id=rule.peer_group_id, local_cidr=rule.local_cidr)


def sort_key(rule: FirewallRuleSpec) -> tuple:
    return (rule.priority, 0 if rule.policy == "drop" else 1, rule.id)


def compile_nic_firewall(groups: list[SecurityGroup], rules: Iterable[SecurityGroupRule],
                         zone: int) -> NicFirewallSpec:
    """The NIC's pooled, ordered rule lists for its ``groups`` and their ``rules``."""
    ingress: list[FirewallRuleSpec] = []
    egress: list[FirewallRuleSpec] = []
    for r in rules:
        (ingress if r.direction == "ingress" else egress).append(rule_spec(r))
    ingress.sort(key=sort_key)
    egress.sort(key=sort_key)
    for g in sorted(groups, key=lambda g: g.id):
        if g.type == "normal" and g.inner_access_policy == "accept":
            ingress.append(FirewallRuleSpec(
                id=f"inner:{g.id}", group_id=g.id, priority=INNER_PRIORITY, policy="accept",
                protocol="all", peer_set=address_set_name(g.id), peer_group_id=g.id))
    enterprise = any(g.type == "enterprise" for g in groups)
    return NicFirewallSpec(ingress=ingress, egress=egress, ingress_default="drop",
                           egress_default="drop" if enterprise else "accept", ct_zone=zone)


def referenced_groups(fw: NicFirewallSpec) -> set[str]:
    return {r.peer_group_id for r in (*fw.ingress, *fw.egress) if r.peer_group_id}


def compile_host_firewall(session, nics: list, vpcs: dict) -> tuple[dict[str, NicFirewallSpec],
                                                                    list]:
    """Firewalls of ``nics`` (ORM rows, by NIC id) and the address sets their rules name."""
    return compile_firewalls(session, [
        (n.id, [m.security_group_id for m in n.security_groups], vpcs[n.vswitch.vpc_id].vni)
        for n in nics])


def compile_firewalls(session, nics: list[tuple[str, list[str], int]]
                      ) -> tuple[dict[str, NicFirewallSpec], list]:
    """Firewalls of ``nics`` given as (NIC id, its group ids in order, its VPC's VNI), by
    NIC id, and the address sets (sorted by group id) their rules name."""
    from sqlalchemy import select

    from agent.spec import AddressSetSpec
    from controller.models import Instance, Nic, NicSecurityGroup

    group_ids = {g for _n, gids, _v in nics for g in gids}
    groups = {g.id: g for g in session.scalars(
        select(SecurityGroup).where(SecurityGroup.id.in_(group_ids)))}
    by_group: dict[str, list[SecurityGroupRule]] = {g: [] for g in group_ids}
    for r in session.scalars(select(SecurityGroupRule)
                             .where(SecurityGroupRule.security_group_id.in_(group_ids))):
        by_group[r.security_group_id].append(r)
    firewalls: dict[str, NicFirewallSpec] = {}
    # a firewall is a function of the NIC's groups (in order) and VPC: NICs sharing a group
    # list share one compiled (immutable) firewall
    compiled: dict[tuple, NicFirewallSpec] = {}
    for nic_id, gids, vni in nics:
        key = (tuple(gids), vni)
        if key not in compiled:
            mine = [groups[g] for g in gids]
            rules = [r for g in mine for r in by_group[g.id]]
            compiled[key] = compile_nic_firewall(mine, rules, ct_zone(vni))
        firewalls[nic_id] = compiled[key]
    wanted = sorted({g for fw in firewalls.values() for g in referenced_groups(fw)})
    members: dict[str, list[str]] = {g: [] for g in wanted}
    rows = session.execute(
        select(NicSecurityGroup.security_group_id, Nic.ip)
        .join(Nic, Nic.id == NicSecurityGroup.nic_id)
        .join(Instance, Instance.id == Nic.instance_id)
        .where(NicSecurityGroup.security_group_id.in_(wanted),
               Instance.delete_requested_at.is_(None)))
    for gid, ip in rows:
        members[gid].append(ip)
    sets = [AddressSetSpec(name=address_set_name(g), group_id=g, ips=sorted(set(members[g])))
            for g in wanted]
    return firewalls, sets
