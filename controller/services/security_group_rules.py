"""Security-group rules: validate, add (idempotently), list, remove; explain; hit counters.

Every check runs before anything is written, so a refused request applies
nothing. A rule change bumps every host carrying the group's VPC: the
pooled rules of each member NIC and the address sets change there.
"""

from __future__ import annotations

import ipaddress
import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent.firewall_model import evaluate
from controller import ids
from controller.db import Database
from controller.errors import Conflict, InvalidParameter
from controller.models import Instance, Nic, NicSecurityGroup, SecurityGroup, Vpc
from controller.models_sg import SecurityGroupRule
from controller.schemas import security_groups as schema
from controller.services.common import get_or_404
from controller.services.sg_compile import compile_host_firewall, sort_key, rule_spec

MAX_GROUPS_PER_NIC = 5
MAX_RULES_PER_NIC = 1000
PROTOCOLS = ("tcp", "udp", "icmp", "all")


# ---- validation -----------------------------------------------------------------

def parse_port_range(value: str | None, protocol: str, field: str) -> tuple[int | None, int | None]:
    """``start/end`` in 1-65535 (tcp/udp), ``-1/-1`` for icmp/all; None stays None."""
    if value is None:
        return None, None
    parts = value.split("/") if isinstance(value, str) else []
    try:
        lo, hi = (int(parts[0]), int(parts[1])) if len(parts) == 2 else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None or hi is None:
        raise InvalidParameter("InvalidPortRange.Malformed", field,
                               f"{value!r} is not a port range like 22/22 or -1/-1")
    if protocol in ("icmp", "all"):
        if (lo, hi) != (-1, -1):
            raise InvalidParameter("InvalidPortRange.Malformed", field,
                                   f"protocol {protocol} takes the port range -1/-1")
        return None, None
    if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
        raise InvalidParameter("InvalidPortRange.Malformed", field,
                               f"ports of {value!r} must be within 1-65535")
    if lo > hi:
        raise InvalidParameter("InvalidPortRange.Reversed", field,
                               f"port range {value!r} ends before it starts")
    return lo, hi


def parse_rule_cidr(value: str | None, field: str, code: str) -> str | None:
    if value is None:
        return None
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise InvalidParameter(f"{code}.Malformed", field,
                               f"{value!r} is not a network CIDR like 10.0.0.0/8: {exc}") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise InvalidParameter(f"{code}.Malformed", field, "only IPv4 CIDRs")
    return str(net)


def _range_text(lo: int | None, hi: int | None) -> str:
    return "-1/-1" if lo is None else f"{lo}/{hi}"


def validated_rule(session: Session, group: SecurityGroup,
                   req: schema.SecurityGroupRuleCreate) -> SecurityGroupRule:
    protocol = req.protocol.lower() if isinstance(req.protocol, str) else ""
    if protocol not in PROTOCOLS:
        raise InvalidParameter("InvalidIpProtocol.Malformed", "protocol",
                               f"protocol must be one of {', '.join(PROTOCOLS)}")
    if req.policy not in ("accept", "drop"):
        raise InvalidParameter("InvalidPolicy.Malformed", "policy", "policy is accept or drop")
    if not 1 <= req.priority <= 100:
        raise InvalidParameter("InvalidPriority.Malformed", "priority",
                               f"priority {req.priority} is outside 1-100")
    port_min, port_max = parse_port_range(req.port_range, protocol, "port_range")
    if req.source_port_range is not None and protocol not in ("tcp", "udp"):
        raise InvalidParameter("InvalidSourcePortRange.Malformed", "source_port_range",
                               "source ports only apply to tcp and udp")
    sport_min, sport_max = parse_port_range(req.source_port_range, protocol, "source_port_range")
    peer_code = "InvalidSourceCidrIp" if req.direction == "ingress" else "InvalidDestCidrIp"
    peer_cidr = parse_rule_cidr(req.peer_cidr, "peer_cidr", peer_code)
    local_cidr = parse_rule_cidr(req.local_cidr, "local_cidr",
                                 "InvalidDestCidrIp" if req.direction == "ingress"
                                 else "InvalidSourceCidrIp")
    if req.peer_group_id is not None:
        if peer_cidr is not None:
            raise InvalidParameter("InvalidParameter.Conflict", "peer_group_id",
                                   "give peer_cidr or peer_group_id, not both")
        if group.type == "enterprise":
            raise InvalidParameter("InvalidSecurityGroup.EnterpriseGroupReference",
                                   "peer_group_id",
                                   "rules of enterprise groups cannot name security groups")
        peer = get_or_404(session, SecurityGroup, req.peer_group_id,
                          "InvalidSecurityGroupId.NotFound", "peer_group_id")
        if peer.vpc_id != group.vpc_id:
            raise InvalidParameter("InvalidSecurityGroup.VpcMismatch", "peer_group_id",
                                   f"{peer.id} is in VPC {peer.vpc_id}, the group in "
                                   f"{group.vpc_id}")
    elif peer_cidr is None:
        peer_cidr = "0.0.0.0/0"
    fingerprint = "|".join(str(x) for x in (
        req.direction, protocol, port_min, port_max, sport_min, sport_max, peer_cidr,
        req.peer_group_id, local_cidr, req.policy, req.priority))
    return SecurityGroupRule(
        id="sgr-" + ids.id_suffix(ids.new_id("security_group")), security_group_id=group.id,
        direction=req.direction, protocol=protocol, port_min=port_min, port_max=port_max,
        source_port_min=sport_min, source_port_max=sport_max, peer_cidr=peer_cidr,
        peer_group_id=req.peer_group_id, local_cidr=local_cidr, policy=req.policy,
        priority=req.priority, description=req.description, fingerprint=fingerprint)


def _rule_count(session: Session, group_ids: list[str]) -> int:
    return session.scalar(select(func.count()).select_from(SecurityGroupRule)
                          .where(SecurityGroupRule.security_group_id.in_(group_ids))) or 0


def check_nic_groups(session: Session, nic: Nic, group_ids: list[str], extra_rules: int = 0
                     ) -> None:
    """A NIC's prospective groups: at most 5, all in its VPC, one type, <= 1,000 rules."""
    if len(group_ids) > MAX_GROUPS_PER_NIC:
        raise Conflict("SecurityGroupLimitExceeded",
                       f"a NIC belongs to at most {MAX_GROUPS_PER_NIC} security groups",
                       "security_group_id")
    vpc_id = nic.vswitch.vpc_id
    types = set()
    for gid in group_ids:
        g = get_or_404(session, SecurityGroup, gid, "InvalidSecurityGroupId.NotFound",
                       "security_group_id")
        if g.vpc_id != vpc_id:
            raise InvalidParameter("InvalidSecurityGroupId.VpcMismatch", "security_group_id",
                                   f"security group {gid} is in VPC {g.vpc_id}, the NIC in "
                                   f"{vpc_id}")
        types.add(g.type)
    if len(types) > 1:
        raise InvalidParameter("InvalidSecurityGroup.TypeMismatch", "security_group_id",
                               "a NIC cannot be in normal and enterprise groups at once")
    total = _rule_count(session, group_ids) + extra_rules
    if total > MAX_RULES_PER_NIC:
        raise Conflict("QuotaExceed.RulesPerNic",
                       f"{total} rules would reach NIC {nic.id}; the limit is {MAX_RULES_PER_NIC}",
                       "security_group_id")


# ---- views ----------------------------------------------------------------------

def to_view(rule: SecurityGroupRule, hits: int | None = None) -> schema.SecurityGroupRule:
    return schema.SecurityGroupRule(
        id=rule.id, security_group_id=rule.security_group_id, direction=rule.direction,
        protocol=rule.protocol, port_range=_range_text(rule.port_min, rule.port_max),
        source_port_range=None if rule.source_port_min is None
        else _range_text(rule.source_port_min, rule.source_port_max),
        peer_cidr=rule.peer_cidr, peer_group_id=rule.peer_group_id, local_cidr=rule.local_cidr,
        policy=rule.policy, priority=rule.priority, description=rule.description, hits=hits,
        created_at=rule.created_at)


def _member_nics(session: Session, group_id: str) -> list[Nic]:
    return list(session.scalars(
        select(Nic).join(NicSecurityGroup, NicSecurityGroup.nic_id == Nic.id)
        .join(Instance, Instance.id == Nic.instance_id)
        .where(NicSecurityGroup.security_group_id == group_id,
               Instance.delete_requested_at.is_(None))))


# ---- operations -----------------------------------------------------------------

def add_rule(db: Database, group_id: str, req: schema.SecurityGroupRuleCreate
             ) -> tuple[schema.SecurityGroupRule, bool]:
    """Add a rule; an identical existing rule is returned unchanged (created False)."""
    from controller.services.specs import bump_hosts_of_vpc

    with db.write() as session:
        group = get_or_404(session, SecurityGroup, group_id, "InvalidSecurityGroupId.NotFound",
                           "security_group_id", for_update=True)
        rule = validated_rule(session, group, req)
        same = session.scalar(select(SecurityGroupRule).where(
            SecurityGroupRule.security_group_id == group_id,
            SecurityGroupRule.fingerprint == rule.fingerprint))
        if same is not None:
            return to_view(same), False
        for nic in _member_nics(session, group_id):
            check_nic_groups(session, nic, [m.security_group_id for m in nic.security_groups],
                             extra_rules=1)
        session.add(rule)
        session.flush()
        bump_hosts_of_vpc(session, group.vpc_id)
        return to_view(rule), True


def list_rules(db: Database, group_id: str, direction: str | None = None,
               hits: bool = False) -> schema.SecurityGroupRuleList:
    with db.read() as session:
        get_or_404(session, SecurityGroup, group_id, "InvalidSecurityGroupId.NotFound",
                   "security_group_id")
        stmt = select(SecurityGroupRule).where(SecurityGroupRule.security_group_id == group_id)
        if direction:
            stmt = stmt.where(SecurityGroupRule.direction == direction)
        rules = sorted(session.scalars(stmt), key=lambda r: (r.direction, sort_key(rule_spec(r))))
        counters = HITS.totals() if hits else {}
        return schema.SecurityGroupRuleList(
            items=[to_view(r, counters.get(r.id, 0) if hits else None) for r in rules])


def remove_rule(db: Database, group_id: str, rule_id: str) -> None:
    from controller.services.specs import bump_hosts_of_vpc

    with db.write() as session:
        group = get_or_404(session, SecurityGroup, group_id, "InvalidSecurityGroupId.NotFound",
                           "security_group_id", for_update=True)
        rule = session.get(SecurityGroupRule, rule_id)
        if rule is None or rule.security_group_id != group_id:
            raise_not_found(rule_id)
        session.delete(rule)
        session.flush()
        bump_hosts_of_vpc(session, group.vpc_id)


def remove_matching_rule(db: Database, group_id: str, req: schema.SecurityGroupRuleCreate
                         ) -> str:
    """Remove the rule with exactly these fields (ECS RevokeSecurityGroup by fields)."""
    with db.read() as session:
        group = get_or_404(session, SecurityGroup, group_id, "InvalidSecurityGroupId.NotFound",
                           "security_group_id")
        probe = validated_rule(session, group, req)
        rule_id = session.scalar(select(SecurityGroupRule.id).where(
            SecurityGroupRule.security_group_id == group_id,
            SecurityGroupRule.fingerprint == probe.fingerprint))
    if rule_id is None:
        raise_not_found("(matching fields)")
    remove_rule(db, group_id, rule_id)
    return rule_id


def raise_not_found(rule_id: str):
    from controller.errors import NotFound

    raise NotFound("InvalidSecurityGroupRuleId.NotFound",
                   f"security group rule {rule_id} does not exist", "rule_id")


def explain(db: Database, req: schema.ExplainRequest) -> schema.ExplainResult:
    """The verdict for a new connection, by the compiler and evaluator the hosts use."""
    protocol = req.protocol.lower()
    if protocol not in ("tcp", "udp", "icmp"):
        raise InvalidParameter("InvalidIpProtocol.Malformed", "protocol",
                               "explain a tcp, udp or icmp packet")
    try:
        ipaddress.IPv4Address(req.peer)
    except ValueError:
        raise InvalidParameter("InvalidIpAddress.Malformed", "peer",
                               f"{req.peer!r} is not an IPv4 address") from None
    with db.read() as session:
        inst = get_or_404(session, Instance, req.instance_id, "InvalidInstanceId.NotFound",
                          "instance_id")
        nic = inst.nics[0]
        vpc = session.get(Vpc, nic.vswitch.vpc_id)
        firewalls, sets = compile_host_firewall(session, [nic], {vpc.id: vpc})
        fw = firewalls[nic.id]
        verdict = evaluate(fw, req.direction, protocol=protocol,
                           port=req.port if protocol in ("tcp", "udp") else None,
                           peer_ip=req.peer, local_ip=nic.ip,
                           sets={s.name: set(s.ips) for s in sets})
        rule_view = None
        if verdict.rule is not None and not verdict.rule.id.startswith("inner:"):
            rule_view = to_view(session.get(SecurityGroupRule, verdict.rule.id))
        if verdict.rule is None:
            reason = f"no rule matched: default {verdict.policy} for {req.direction}"
        elif verdict.rule.id.startswith("inner:"):
            reason = f"inner access of {verdict.rule.group_id}: {req.peer} is a member"
        else:
            reason = (f"rule {verdict.rule.id} of {verdict.rule.group_id} "
                      f"(priority {verdict.rule.priority}, {verdict.policy}) matches first")
        return schema.ExplainResult(verdict=verdict.policy, decided_by=verdict.decided_by,
                                    rule=rule_view, nic_id=nic.id, reason=reason)


class HitCounters:
    """Per-rule packet counters as agents last reported them, summed over hosts (in memory:
    they are counters, re-reported after every pass, so a controller restart loses nothing)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_host: dict[str, dict[str, int]] = {}

    def record(self, host_id: str, hits: dict[str, int]) -> None:
        with self._lock:
            self._by_host[host_id] = dict(hits)

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for hits in self._by_host.values():
                for rule_id, n in hits.items():
                    out[rule_id] = out.get(rule_id, 0) + n
        return out


HITS = HitCounters()
