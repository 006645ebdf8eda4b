"""What a NIC's compiled rules decide for one packet: the semantics the iptables chains enforce.

``evaluate`` walks a :class:`NicFirewallSpec` exactly as the chains that
``agent.firewall_render`` writes do (first match in the compiled order, then the
direction's default), so ``miniecs sg explain`` and the dataplane cannot
disagree. Pure: no host access; the controller imports it next to the spec.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from agent.spec import FirewallRuleSpec, NicFirewallSpec

Direction = Literal["ingress", "egress"]


@dataclass(frozen=True)
class Verdict:
    policy: Literal["accept", "drop"]
    rule: FirewallRuleSpec | None  # None: the direction's default decided

    @property
    def decided_by(self) -> str:
        return self.rule.id if self.rule else "default"


def _in_cidr(ip: str, cidr: str | None) -> bool:
    return cidr is None or ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(cidr)


def rule_matches(rule: FirewallRuleSpec, *, protocol: str, port: int | None, peer_ip: str,
                 local_ip: str | None, sets: dict[str, set[str]],
                 source_port: int | None = None) -> bool:
    """True when ``rule`` matches a packet (the peer is the remote end, whatever the direction)."""
    if rule.protocol != "all" and rule.protocol != protocol:
        return False
    if rule.protocol in ("tcp", "udp") and rule.port_min is not None:
        if port is None or not rule.port_min <= port <= (rule.port_max or rule.port_min):
            return False
    if rule.protocol in ("tcp", "udp") and rule.source_port_min is not None:
        if source_port is None or not (rule.source_port_min <= source_port
                                       <= (rule.source_port_max or rule.source_port_min)):
            return False
    if not _in_cidr(peer_ip, rule.peer_cidr):
        return False
    if rule.peer_set is not None and peer_ip not in sets.get(rule.peer_set, set()):
        return False
    if rule.local_cidr is not None and (local_ip is None or not _in_cidr(local_ip, rule.local_cidr)):
        return False
    return True


def evaluate(fw: NicFirewallSpec, direction: Direction, *, protocol: str, port: int | None,
             peer_ip: str, local_ip: str | None = None, sets: dict[str, set[str]] | None = None,
             source_port: int | None = None) -> Verdict:
    """The verdict for a new connection through a NIC, and the rule that decides it."""
    rules = fw.ingress if direction == "ingress" else fw.egress
    for rule in rules:
        if rule_matches(rule, protocol=protocol, port=port, peer_ip=peer_ip, local_ip=local_ip,
                        sets=sets or {}, source_port=source_port):
            return Verdict(rule.policy, rule)
    default = fw.ingress_default if direction == "ingress" else fw.egress_default
    return Verdict(default, None)
