"""Security groups → iptables/ebtables chains and ipsets (pure: text in, text out).

Layout (Neutron's, adapted to ECS priorities):

filter (iptables, bridged traffic through br_netfilter)::

    FORWARD ─ physdev-out mtap+ / physdev-in mtap+ ─▶ mecs-sg
    mecs-sg:  ESTABLISHED,RELATED accept │ INVALID drop │ tcp NEW without SYN drop │
              DHCP server replies from a tap drop, other DHCP replies accept
              per NIC: physdev-out TAP → mecs-i-<key>   physdev-in TAP → mecs-o-<key>
              accept
    mecs-i-<key> / mecs-o-<key>: compiled rules in order (accept = RETURN, drop = DROP),
              then the direction's default; one pair per distinct set of groups
              (``rule_set_key``), shared by the NICs that have exactly those groups

raw: ``mecs-PREROUTING`` puts every frame bridged by a VPC bridge into the
VPC's conntrack zone and leaves VXLAN (udp 4789) untracked.

anti-spoofing: the nftables table ``bridge mecs-spoof`` (hook prerouting at
priority -300, where ebtables nat PREROUTING sits: before the bridge learns the
source MAC). Its one chain is fixed; the NICs are elements of three sets
(``taps``; ``macs``: tap . MAC; ``addrs``: tap . MAC . IP), so a NIC added is
three set elements, not a chain and a jump. From a filtered tap only the NIC's
MAC with its IP (IPv4, and ARP whose sender MAC and IP are the NIC's) and DHCP
from 0.0.0.0 pass; everything else from it drops. (Earlier versions kept
``mecs-spoof``/``mecs-as-<tap>`` chains in ebtables nat, before that in
ebtables filter; both are removed where found.)

Every line is written in the canonical form ``iptables-save`` prints, so the
observed chains compare with the desired ones line by line.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field

from agent.spec import (FIREWALL_PREFIX, TAP_PREFIX, AddressSetSpec, FirewallRuleSpec,
                        NicSpec)

P = FIREWALL_PREFIX
SG_CHAIN = f"{P}sg"
RAW_CHAIN = f"{P}PREROUTING"
RAW_OUT_CHAIN = f"{P}OUTPUT"
SPOOF_CHAIN = f"{P}spoof"
VXLAN_PORT = 4789
TAP_GLOB = f"{TAP_PREFIX}+"

# Base-chain jumps: (table, chain, rule) — inserted at the top when missing.
FILTER_JUMPS = (
    ("FORWARD", f"-A FORWARD -m physdev --physdev-out {TAP_GLOB} --physdev-is-bridged -j {SG_CHAIN}"),
    ("FORWARD", f"-A FORWARD -m physdev --physdev-in {TAP_GLOB} --physdev-is-bridged -j {SG_CHAIN}"),
)
RAW_JUMPS = (
    ("PREROUTING", f"-A PREROUTING -j {RAW_CHAIN}"),
    ("OUTPUT", f"-A OUTPUT -j {RAW_OUT_CHAIN}"),
)
# Anti-spoofing is judged at the bridge's prerouting hook (priority -300, ebtables nat
# PREROUTING's place): before the bridge learns the source MAC, so a guest sending with
# another NIC's MAC cannot move that MAC's FDB entry to its own port (in filter FORWARD
# the bridge would have learnt it already, and traffic to the real owner would go to the
# impersonator). Covers frames to the host (INPUT) as well.
# The ebtables layout of earlier versions (``mecs-spoof`` → ``mecs-as-<tap>``), in nat
# (EB_TABLE) and before that in filter (EB_LEGACY_TABLE): removed where found.
EB_TABLE = "nat"
EB_JUMPS = (
    ("PREROUTING", f"-A PREROUTING -i {TAP_GLOB} -j {SPOOF_CHAIN}"),
)
EB_LEGACY_TABLE = "filter"
# The anti-spoofing table (nftables, bridge family) and its fixed chain.
SPOOF_TABLE = f"{P}spoof"
SPOOF_CHAIN_BODY = (
    "type filter hook prerouting priority -300; policy accept;",
    "iifname != @taps accept",
    # ARP: the sender MAC in the frame and in the ARP header, and the sender IP, are the NIC's
    "ether type arp iifname . ether saddr . arp saddr ip @addrs "
    "iifname . arp saddr ether . arp saddr ip @addrs accept",
    "ether type ip iifname . ether saddr . ip saddr @addrs accept",
    "ether type ip ip saddr 0.0.0.0 udp dport 67 iifname . ether saddr @macs accept",
    "drop",
)
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def suffix(tap: str) -> str:
    return tap[len(TAP_PREFIX):] if tap.startswith(TAP_PREFIX) else tap


def rule_set_key(nic: NicSpec) -> str:
    """Which rule chains a NIC uses: one pair per distinct set of groups.

    A NIC's compiled rules depend only on its groups (never on its own
    address), so NICs with the same groups share one ingress and one egress
    chain, and a rule added to a group edits one chain per group set instead
    of one per NIC. A NIC whose spec names no groups gets chains of its own.
    """
    if not nic.security_group_ids:
        return suffix(nic.tap)
    return _groups_key(tuple(nic.security_group_ids))


@functools.lru_cache(maxsize=4096)
def _groups_key(group_ids: tuple[str, ...]) -> str:
    digest = hashlib.sha256(",".join(sorted(group_ids)).encode()).hexdigest()
    return "g" + digest[:12]


def ingress_chain(key: str) -> str:
    return f"{P}i-{key}"


def egress_chain(key: str) -> str:
    return f"{P}o-{key}"


def spoof_chain(tap: str) -> str:
    return f"{P}as-{suffix(tap)}"


def _cidr(value: str) -> str | None:
    if value in ("0.0.0.0/0", None):
        return None
    return value if "/" in value else f"{value}/32"


def _ports(lo: int | None, hi: int | None) -> str:
    return str(lo) if hi is None or lo == hi else f"{lo}:{hi}"


def rule_line(chain: str, rule: FirewallRuleSpec, ingress: bool) -> str:
    """One compiled rule as ``iptables-save`` prints it."""
    peer = _cidr(rule.peer_cidr) if rule.peer_cidr else None
    local = _cidr(rule.local_cidr) if rule.local_cidr else None
    src, dst = (peer, local) if ingress else (local, peer)
    parts = [f"-A {chain}"]
    if src:
        parts.append(f"-s {src}")
    if dst:
        parts.append(f"-d {dst}")
    if rule.protocol != "all":
        parts.append(f"-p {rule.protocol}")
    if rule.peer_set:
        parts.append(f"-m set --match-set {rule.peer_set} {'src' if ingress else 'dst'}")
    if rule.protocol in ("tcp", "udp") and (rule.port_min is not None
                                            or rule.source_port_min is not None):
        parts.append(f"-m {rule.protocol}")
        if rule.source_port_min is not None:
            parts.append(f"--sport {_ports(rule.source_port_min, rule.source_port_max)}")
        if rule.port_min is not None:
            parts.append(f"--dport {_ports(rule.port_min, rule.port_max)}")
    parts.append(f'-m comment --comment "r:{rule.id}"')
    parts.append("-j RETURN" if rule.policy == "accept" else "-j DROP")
    return " ".join(parts)


def rule_id_of(line: str) -> str | None:
    marker = '--comment "r:'
    i = line.find(marker)
    if i < 0:
        return None
    j = line.find('"', i + len(marker))
    return line[i + len(marker):j]


@dataclass
class Desired:
    """Chains per table (name → lines) plus ipsets, for the filtered NICs of one host."""

    filter: dict[str, list[str]] = field(default_factory=dict)
    raw: dict[str, list[str]] = field(default_factory=dict)
    eb: dict[str, list[str]] = field(default_factory=dict)  # ebtables nat: none any more
    sets: dict[str, frozenset[str]] = field(default_factory=dict)
    spoof: frozenset[tuple[str, str, str]] = frozenset()  # (tap, MAC, IP) of filtered NICs


def filtered_nics(nics: list[NicSpec]) -> list[NicSpec]:
    return sorted((n for n in nics if n.firewall is not None), key=lambda n: n.tap)


def render(nics: list[NicSpec], address_sets: list[AddressSetSpec]) -> Desired:
    """Everything the host's firewall must hold for ``nics`` (NICs without a firewall skipped)."""
    d = Desired()
    nics = filtered_nics(nics)
    sg = [f"-A {SG_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
          f"-A {SG_CHAIN} -m conntrack --ctstate INVALID -j DROP",
          f"-A {SG_CHAIN} -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN "
          "-m conntrack --ctstate NEW -j DROP",
          # DHCP: guests may not answer as servers; the router's answers always reach them
          # (a reply to a broadcast from 0.0.0.0 never matches the request's conntrack entry)
          f"-A {SG_CHAIN} -p udp -m physdev --physdev-in {TAP_GLOB} --physdev-is-bridged "
          "-m udp --sport 67 --dport 68 -j DROP",
          f"-A {SG_CHAIN} -p udp -m udp --sport 67 --dport 68 -j ACCEPT"]
    zones: dict[str, int] = {}
    spoof: list[tuple[str, str, str]] = []
    for n in nics:
        fw = n.firewall
        assert fw is not None
        key = rule_set_key(n)
        ic, oc = ingress_chain(key), egress_chain(key)
        sg.append(f"-A {SG_CHAIN} -m physdev --physdev-out {n.tap} --physdev-is-bridged -j {ic}")
        sg.append(f"-A {SG_CHAIN} -m physdev --physdev-in {n.tap} --physdev-is-bridged -j {oc}")
        if ic not in d.filter:
            d.filter[ic] = [rule_line(ic, r, True) for r in fw.ingress] + \
                [f"-A {ic} -j {'RETURN' if fw.ingress_default == 'accept' else 'DROP'}"]
            d.filter[oc] = [rule_line(oc, r, False) for r in fw.egress] + \
                [f"-A {oc} -j {'RETURN' if fw.egress_default == 'accept' else 'DROP'}"]
        if fw.ct_zone:
            zones.setdefault(n.bridge, fw.ct_zone)
        spoof.append(spoof_element(n))
    if not nics:
        return d
    sg.append(f"-A {SG_CHAIN} -j ACCEPT")
    d.filter[SG_CHAIN] = sg
    d.raw[RAW_CHAIN] = [f"-A {RAW_CHAIN} -i {br} -j CT --zone {z}"
                        for br, z in sorted(zones.items())] + \
        [f"-A {RAW_CHAIN} -p udp -m udp --dport {VXLAN_PORT} -j CT --notrack"]
    d.raw[RAW_OUT_CHAIN] = [f"-A {RAW_OUT_CHAIN} -p udp -m udp --dport {VXLAN_PORT} "
                            "-j CT --notrack"]
    d.spoof = frozenset(spoof)
    wanted: set[str] = set()
    seen_keys: set[str] = set()
    for n in nics:  # NICs with one rule-set key have the same rules: look at one of them
        key = rule_set_key(n)
        if key not in seen_keys:
            seen_keys.add(key)
            wanted |= {r.peer_set for r in (*n.firewall.ingress, *n.firewall.egress)
                       if r.peer_set}
    for s in address_sets:
        if s.name in wanted:
            d.sets[s.name] = frozenset(s.ips)
    for name in wanted - set(d.sets):
        d.sets[name] = frozenset()
    return d


# ---- observed state and the restore payload ------------------------------------------

@dataclass
class TableObserved:
    chains: dict[str, list[str]] = field(default_factory=dict)  # our chains and their lines
    jumps: set[str] = field(default_factory=set)  # our jump lines present in base chains
    counters: dict[str, int] = field(default_factory=dict)  # rule id → packets


def parse_save(text: str, base_chains: tuple[str, ...] = ("FORWARD", "INPUT", "OUTPUT",
                                                           "PREROUTING")) -> TableObserved:
    """Our chains from ``iptables-save -c`` / ``ebtables-save`` output (counters optional)."""
    obs = TableObserved()
    for raw in text.splitlines():
        line = raw.strip()
        packets = 0
        if line.startswith("["):
            end = line.find("]")
            try:
                packets = int(line[1:end].split(":")[0])
            except ValueError:
                packets = 0
            line = line[end + 1:].strip()
        if line.startswith(":" + P):
            obs.chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            chain = line.split()[1]
            if chain.startswith(P):
                obs.chains.setdefault(chain, []).append(line)
                rid = rule_id_of(line)
                if rid:
                    obs.counters[rid] = obs.counters.get(rid, 0) + packets
            elif chain in base_chains and f"-j {P}" in line:
                obs.jumps.add(line)
    return obs


def plan_restore(desired: dict[str, list[str]], observed: TableObserved,
                 jumps: tuple[tuple[str, str], ...], table: str,
                 chain_policy: str = "-", in_place: bool = True) -> tuple[str | None, set[str]]:
    """The ``*-restore --noflush`` payload that turns ``observed`` into ``desired``.

    Only our chains appear in it. A chain that differs a little is edited in
    place (``-D``/``-I`` by position, from the end so positions stay valid); one
    that differs a lot is flushed and rewritten; stale chains are flushed and
    deleted after the dispatch chains no longer name them. Returns the payload
    (None when nothing differs) and the chains it touches.
    """
    out: list[str] = []
    body: list[str] = []
    touched: set[str] = set()
    want_jumps = [j for _c, j in jumps] if desired else []
    for chain, lines in desired.items():
        have = observed.chains.get(chain)
        if have is None:
            out.append(f":{chain} {chain_policy}" + (" [0:0]" if chain_policy == "-" else ""))
            body.extend(lines)
            touched.add(chain)
            continue
        if have == lines:
            continue
        touched.add(chain)
        body.extend(_edit_chain(chain, have, lines) if in_place else [f"-F {chain}", *lines])
    for base, line in reversed([(c, j) for c, j in jumps] if desired else []):
        if line not in observed.jumps:
            body.append(line.replace(f"-A {base} ", f"-I {base} 1 ", 1))
    for line in sorted(observed.jumps - set(want_jumps)):
        body.append(line.replace("-A ", "-D ", 1))
    stale = sorted(set(observed.chains) - set(desired))
    for chain in stale:
        body.append(f"-F {chain}")
        touched.add(chain)
    for chain in stale:
        body.append(f"-X {chain}")
    if not out and not body:
        return None, touched
    return "\n".join([f"*{table}", *out, *body, "COMMIT", ""]), touched


def widens_only(old: list[str], new: list[str]) -> bool:
    """True when a rule chain going from ``old`` to ``new`` can only let more through.

    With first-match evaluation, accept rules added anywhere (or drop rules
    removed), everything else kept in order and the default unchanged, turn no
    verdict from accept into drop: no established flow needs to be judged again.
    """
    if not old or not new or old[-1] != new[-1]:
        return False
    if len(new) >= len(old):
        extra = _extra_lines(old, new)
        return extra is not None and all(x.endswith(" -j RETURN") for x in extra)
    extra = _extra_lines(new, old)
    return extra is not None and all(x.endswith(" -j DROP") for x in extra)


def _extra_lines(small: list[str], big: list[str]) -> list[str] | None:
    """The lines of ``big`` besides ``small`` kept in order; None when ``small`` is not."""
    extra, i = [], 0
    for line in big:
        if i < len(small) and line == small[i]:
            i += 1
        else:
            extra.append(line)
    return extra if i == len(small) else None


def _edit_chain(chain: str, have: list[str], want: list[str]) -> list[str]:
    # The common head and tail are cut off first: a NIC added to a dispatch chain of
    # thousands of lines leaves a two-line difference, and difflib on the whole lists
    # would cost a tenth of a second.
    n = min(len(have), len(want))
    head = 0
    while head < n and have[head] == want[head]:
        head += 1
    tail = 0
    while tail < n - head and have[len(have) - 1 - tail] == want[len(want) - 1 - tail]:
        tail += 1
    sm = difflib.SequenceMatcher(a=have[head:len(have) - tail], b=want[head:len(want) - tail],
                                 autojunk=False)
    ops = [(t, i1 + head, i2 + head, j1 + head, j2 + head)
           for t, i1, i2, j1, j2 in sm.get_opcodes() if t != "equal"]
    cost = sum(max(i2 - i1, j2 - j1) for _t, i1, i2, j1, j2 in ops)
    if cost * 2 > len(want) + 4:
        return [f"-F {chain}", *want]
    edits: list[str] = []
    for _tag, i1, i2, j1, j2 in reversed(ops):
        edits.extend(f"-D {chain} {i1 + 1}" for _ in range(i2 - i1))
        for k, line in enumerate(want[j1:j2]):
            edits.append(line.replace(f"-A {chain} ", f"-I {chain} {i1 + 1 + k} ", 1))
    return edits


def plan_sets(desired: dict[str, frozenset[str]], observed: dict[str, set[str]]
              ) -> tuple[str | None, list[str]]:
    """``ipset restore`` input creating/updating our sets, and the sets to destroy afterwards
    (after the rules naming them are gone)."""
    lines: list[str] = []
    for name, ips in sorted(desired.items()):
        have = observed.get(name)
        if have is None:
            lines.append(f"create {name} hash:ip family inet -exist")
            have = set()
        lines.extend(f"add {name} {ip} -exist" for ip in sorted(ips - have))
        lines.extend(f"del {name} {ip} -exist" for ip in sorted(have - ips))
    stale = sorted(n for n in observed if n not in desired)
    return ("\n".join(lines) + "\n") if lines else None, stale


def parse_ipset_save(text: str) -> dict[str, set[str]]:
    sets: dict[str, set[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith(P):
            if parts[0] == "create":
                sets.setdefault(parts[1], set())
            elif parts[0] == "add" and len(parts) >= 3:
                sets.setdefault(parts[1], set()).add(parts[2])
    return sets


# ---- anti-spoofing table (nftables) ----------------------------------------------------

@dataclass
class SpoofObserved:
    """The anti-spoofing table as listed: set elements and the chain's rules (nft JSON)."""

    taps: set[str] = field(default_factory=set)
    macs: set[tuple[str, str]] = field(default_factory=set)
    addrs: set[tuple[str, str, str]] = field(default_factory=set)
    chains: list[dict] = field(default_factory=list)
    rules: list[list] = field(default_factory=list)


def spoof_element(nic: NicSpec) -> tuple[str, str, str]:
    """(tap, MAC, IP) of a NIC, checked before it goes into nft text."""
    return _spoof_element(nic.tap, nic.mac, nic.ip)


@functools.lru_cache(maxsize=65536)
def _spoof_element(tap: str, mac: str, ip: str) -> tuple[str, str, str]:
    mac = mac.lower()
    if not _IFNAME.match(tap) or not _MAC.match(mac):
        raise ValueError(f"bad tap or MAC for anti-spoofing: {tap!r} {mac!r}")
    return tap, mac, str(ipaddress.IPv4Address(ip))


def spoof_table(elements: frozenset[tuple[str, str, str]]) -> str:
    """nft text that (re)makes the whole anti-spoofing table with ``elements``, atomically."""
    t = f"bridge {SPOOF_TABLE}"
    lines = [f"table {t}", f"delete table {t}", f"table {t} {{",
             "  set taps { type ifname; }",
             "  set macs { type ifname . ether_addr; }",
             "  set addrs { type ifname . ether_addr . ipv4_addr; }",
             "  chain prerouting {", *(f"    {x}" for x in SPOOF_CHAIN_BODY), "  }", "}"]
    if elements:
        for kind, items in (("taps", {tp for tp, _m, _i in elements}),
                            ("macs", {(tp, m) for tp, m, _i in elements}),
                            ("addrs", set(elements))):
            lines.append(f"add element {t} {kind} {{ {_fmt(kind, sorted(items))} }}")
    return "\n".join(lines) + "\n"


def plan_spoof(desired: frozenset[tuple[str, str, str]], observed: SpoofObserved
               ) -> str | None:
    """nft text adding and deleting the set elements that differ (None: nothing differs)."""
    t = f"bridge {SPOOF_TABLE}"
    want_macs = {(tp, m) for tp, m, _i in desired}
    want_taps = {tp for tp, _m, _i in desired}
    lines = []
    for kind, want, have in (("addrs", set(desired), observed.addrs),
                             ("macs", want_macs, observed.macs),
                             ("taps", want_taps, observed.taps)):
        gone = sorted(have - want)
        if gone:
            lines.append(f"delete element {t} {kind} {{ {_fmt(kind, gone)} }}")
    for kind, want, have in (("taps", want_taps, observed.taps),
                             ("macs", want_macs, observed.macs),
                             ("addrs", set(desired), observed.addrs)):
        new = sorted(want - have)
        if new:
            lines.append(f"add element {t} {kind} {{ {_fmt(kind, new)} }}")
    return ("\n".join(lines) + "\n") if lines else None


def _fmt(kind: str, items: list) -> str:
    if kind == "taps":
        return ", ".join(f'"{x}"' for x in items)
    return ", ".join(" . ".join([f'"{x[0]}"', *x[1:]]) for x in items)


def parse_spoof_json(objects: list[dict] | None) -> SpoofObserved | None:
    """The anti-spoofing table from ``list table bridge mecs-spoof`` JSON (None: no table)."""
    if objects is None:
        return None
    obs = SpoofObserved()
    for o in objects:
        if "set" in o:
            s = o["set"]
            for e in s.get("elem", []):
                v = e.get("concat") if isinstance(e, dict) else e
                if s.get("name") == "taps" and isinstance(v, str):
                    obs.taps.add(v)
                elif s.get("name") == "macs" and isinstance(v, list) and len(v) == 2:
                    obs.macs.add((v[0], v[1].lower()))
                elif s.get("name") == "addrs" and isinstance(v, list) and len(v) == 3:
                    obs.addrs.add((v[0], v[1].lower(), v[2]))
        elif "chain" in o:
            c = dict(o["chain"])
            c.pop("handle", None)
            obs.chains.append(c)
        elif "rule" in o:
            obs.rules.append(o["rule"].get("expr", []))
    return obs
