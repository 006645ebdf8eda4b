"""The VPC overlay on this host: VXLAN device, static FDB, router neighbours, ARP guard.

For each ``NetworkSpec`` with an ``overlay``:

* a VXLAN device (``mvx-``, VNI of the VPC, ``local`` = this host's underlay
  address, ``nolearning``) joined to the VPC's bridge;
* static FDB entries on it: ``00:00:00:00:00:00 dst VTEP`` per remote host
  (head-end replication of broadcast, unknown unicast and multicast; no
  multicast underlay) and ``MAC dst VTEP`` per remote port;
* in the router namespace, a permanent neighbour entry for every port of the
  VPC, local or remote, so the router never has to ARP across hosts;
* an ebtables guard (chain ``miniecs-overlay``): no ARP (and no DHCP) between a
  router veth and a VXLAN device. Every host answers for the same gateway address with its
  own router MAC (a distributed gateway); without the guard a guest could
  learn a remote host's router MAC and its traffic would leave from the wrong
  host.

Plan (pure) and apply are separate like ``network.py``; removals of the
VXLAN device itself are planned there (its name prefix is one of the
cleaned-up ones).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field

from agent import faults
from agent import netlink, proc
from agent.errors import AgentError, TemporaryError
from agent.spec import NetworkSpec, OverlaySpec, VETH_PREFIX, VXLAN_PREFIX

log = logging.getLogger(__name__)

FLOOD_MAC = "00:00:00:00:00:00"
NUD_PERMANENT = 0x80
EBT_CHAIN = "miniecs-overlay"
# Interface wildcards: every router veth (bridge side) and every VXLAN device of miniecs.
# DHCP likewise: each host's router serves its own guests (agent/dhcp.py); a request
# flooded to a remote router would be answered with a NAK (it does not know the MAC).
EBT_RULES = (
    f"-p ARP -i {VETH_PREFIX}+ -o {VXLAN_PREFIX}+ -j DROP",
    f"-p ARP -i {VXLAN_PREFIX}+ -o {VETH_PREFIX}+ -j DROP",
    f"-p IPv4 -i {VXLAN_PREFIX}+ -o {VETH_PREFIX}+ --ip-proto udp --ip-dport 67 -j DROP",
    f"-p IPv4 -i {VETH_PREFIX}+ -o {VXLAN_PREFIX}+ --ip-proto udp --ip-dport 68 -j DROP",
)


@dataclass(frozen=True)
class VxlanObserved:
    name: str
    vni: int
    local: str
    port: int
    master: str | None
    mtu: int
    up: bool
    fdb: frozenset[tuple[str, str]] = frozenset()  # (mac, dst)


@dataclass
class OverlayObserved:
    vxlans: dict[str, VxlanObserved] = field(default_factory=dict)
    neighbours: dict[str, frozenset[tuple[str, str]]] = field(default_factory=dict)  # ns -> (ip, mac)
    guard: bool = False  # complete: every rule, and the jump from FORWARD
    guard_remnant: bool = False  # the chain or the jump exists (complete or not)


# ---- actions -------------------------------------------------------------------

@dataclass(frozen=True)
class CreateVxlan:
    network: NetworkSpec


@dataclass(frozen=True)
class ConfigureVxlan:
    network: NetworkSpec


@dataclass(frozen=True)
class SyncFdb:
    device: str
    add: tuple[tuple[str, str], ...]
    remove: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SyncNeighbours:
    network: NetworkSpec
    add: tuple[tuple[str, str], ...]
    remove: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class InstallArpGuard:
    pass


@dataclass(frozen=True)
class RemoveArpGuard:
    pass


OverlayAction = CreateVxlan | ConfigureVxlan | SyncFdb | SyncNeighbours | InstallArpGuard | RemoveArpGuard


def desired_fdb(ov: OverlaySpec, net: NetworkSpec) -> set[tuple[str, str]]:
    want = {(FLOOD_MAC, v) for v in ov.remote_vteps}
    want |= {(p.mac.lower(), p.vtep) for p in net.ports if p.vtep}
    return want


def desired_neighbours(net: NetworkSpec) -> set[tuple[str, str]]:
    return {(p.ip, p.mac.lower()) for p in net.ports}


# ---- plan ----------------------------------------------------------------------

def plan_overlay(desired: list[NetworkSpec], observed: OverlayObserved,
                 routers_ready: set[str] | None = None) -> list[OverlayAction]:
    """Actions that make VXLAN devices, FDB entries and router neighbours match ``desired``.

    ``routers_ready``: router namespaces whose router veth exists now (neighbours
    need it); None means all.
    """
    acts: list[OverlayAction] = []
    for net in desired:
        ov = net.overlay
        if ov is not None:
            vx = observed.vxlans.get(ov.device)
            if vx is None or vx.vni != net.vni or vx.local != ov.local_vtep or vx.port != ov.port:
                acts.append(CreateVxlan(net))  # recreates a mismatched device
                have: set[tuple[str, str]] = set()
            else:
                if vx.master != net.bridge or vx.mtu != net.mtu or not vx.up:
                    acts.append(ConfigureVxlan(net))
                have = set(vx.fdb)
            want = desired_fdb(ov, net)
            add, remove = want - have, have - want
            if add or remove:
                acts.append(SyncFdb(ov.device, tuple(sorted(add)), tuple(sorted(remove))))
        if routers_ready is None or net.router_ns in routers_ready:
            have_n = set(observed.neighbours.get(net.router_ns, frozenset()))
            want_n = desired_neighbours(net)
            # an IP whose MAC changed: remove the old entry, add the new
            add_n, remove_n = want_n - have_n, have_n - want_n
            if add_n or remove_n:
                acts.append(SyncNeighbours(net, tuple(sorted(add_n)), tuple(sorted(remove_n))))
    need_guard = any(n.overlay is not None for n in desired)
    if need_guard and not observed.guard:
        acts.append(InstallArpGuard())
    elif not need_guard and (observed.guard or observed.guard_remnant):
        acts.append(RemoveArpGuard())  # also half a guard: a removal cut short by a crash
    return acts


# ---- observe / apply -----------------------------------------------------------

def _vxlan_observed(ipr, msg, names: dict[int, str]) -> VxlanObserved:
    info = msg.get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA")
    master = msg.get_attr("IFLA_MASTER")
    idx = msg["index"]
    fdb = set()
    for e in ipr.fdb("dump", ifindex=idx):
        if e["ifindex"] != idx or not e.get_attr("NDA_DST"):
            continue
        fdb.add(((e.get_attr("NDA_LLADDR") or "").lower(), e.get_attr("NDA_DST")))
    return VxlanObserved(
        name=msg.get_attr("IFLA_IFNAME"), vni=data.get_attr("IFLA_VXLAN_ID") or 0,
        local=data.get_attr("IFLA_VXLAN_LOCAL") or "", port=data.get_attr("IFLA_VXLAN_PORT") or 0,
        master=names.get(master) if master else None, mtu=msg.get_attr("IFLA_MTU") or 0,
        up=bool(msg["flags"] & 1), fdb=frozenset(fdb))


class OverlayReconciler:
    def __init__(self, ns_path) -> None:
        self.ns_path = ns_path  # name -> Path of a router namespace
        self._guard_maybe = True  # until a pass has seen it absent (e.g. after a restart)

    def observe(self, desired: list[NetworkSpec], routers: set[str]) -> OverlayObserved:
        obs = OverlayObserved()
        with netlink.ipr() as ipr:
            msgs = list(ipr.get_links())
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in msgs}
            for m in msgs:
                name = m.get_attr("IFLA_IFNAME")
                info = m.get_attr("IFLA_LINKINFO")
                if name.startswith(VXLAN_PREFIX) and info is not None and \
                        info.get_attr("IFLA_INFO_KIND") == "vxlan":
                    obs.vxlans[name] = _vxlan_observed(ipr, m, names)
        for net in desired:
            if net.router_ns not in routers:
                continue
            with netlink.ipr(self.ns_path(net.router_ns)) as ns:
                found = ns.link_lookup(ifname=net.veth_router_side)
                if not found:
                    continue
                entries = set()
                for n in ns.get_neighbours(family=socket.AF_INET, ifindex=found[0]):
                    if n["state"] & NUD_PERMANENT and n.get_attr("NDA_LLADDR"):
                        entries.add((n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR").lower()))
                obs.neighbours[net.router_ns] = frozenset(entries)
        if not (self._guard_maybe or obs.vxlans or any(n.overlay for n in desired)):
            return obs
        out = proc.run(["ebtables", "-t", "filter", "-L", EBT_CHAIN], check=False)
        jumped = _ebt_jumped()
        obs.guard = out.returncode == 0 and all(
            _ebt_norm(r) in {_ebt_norm(line) for line in out.stdout.splitlines()}
            for r in EBT_RULES) and jumped
        obs.guard_remnant = out.returncode == 0 or jumped
        self._guard_maybe = obs.guard or obs.guard_remnant
        return obs

    def apply(self, a: OverlayAction) -> None:
        try:
            self._apply(a)
        except AgentError:
            raise
        except OSError as exc:
            raise TemporaryError(f"{type(a).__name__}: {exc}") from None

    def _apply(self, a: OverlayAction) -> None:
        if isinstance(a, CreateVxlan):
            net, ov = a.network, a.network.overlay
            assert ov is not None
            with netlink.ipr() as ipr:
                for idx in ipr.link_lookup(ifname=ov.device):
                    ipr.link("del", index=idx)
                ipr.link("add", ifname=ov.device, kind="vxlan", vxlan_id=net.vni,
                         vxlan_local=ov.local_vtep, vxlan_port=ov.port, vxlan_learning=0,
                         mtu=net.mtu)
            faults.point("overlay.vxlan_added")
            self._configure(net)
            log.info("vxlan %s (vni %d, local %s) on %s", ov.device, net.vni, ov.local_vtep,
                     net.bridge)
        elif isinstance(a, ConfigureVxlan):
            self._configure(a.network)
        elif isinstance(a, SyncFdb):
            with netlink.ipr() as ipr:
                idx = ipr.link_lookup(ifname=a.device)[0]
                for mac, dst in a.remove:
                    try:
                        ipr.fdb("del", ifindex=idx, lladdr=mac, dst=dst)
                    except OSError:
                        pass  # gone already
                for mac, dst in a.add:
                    ipr.fdb("append", ifindex=idx, lladdr=mac, dst=dst)
                    faults.point("overlay.fdb_entry_added")
            log.info("fdb %s: +%d -%d", a.device, len(a.add), len(a.remove))
        elif isinstance(a, SyncNeighbours):
            net = a.network
            with netlink.ipr(self.ns_path(net.router_ns)) as ns:
                idx = ns.link_lookup(ifname=net.veth_router_side)[0]
                for ip, mac in a.remove:
                    try:
                        ns.neigh("del", dst=ip, lladdr=mac, ifindex=idx)
                    except OSError:
                        pass
                for ip, mac in a.add:
                    ns.neigh("replace", dst=ip, lladdr=mac, ifindex=idx, state=NUD_PERMANENT)
                    faults.point("overlay.neighbour_added")
        elif isinstance(a, InstallArpGuard):
            run = proc.run
            run(["ebtables", "-t", "filter", "-N", EBT_CHAIN], check=False)
            run(["ebtables", "-t", "filter", "-F", EBT_CHAIN])
            for rule in EBT_RULES:
                run(["ebtables", "-t", "filter", "-A", EBT_CHAIN, *rule.split()])
                faults.point("overlay.arp_guard_rule")
            if not _ebt_jumped():
                run(["ebtables", "-t", "filter", "-I", "FORWARD", "1", "-j", EBT_CHAIN])
            log.info("ARP guard between router veths and VXLAN devices installed")
        elif isinstance(a, RemoveArpGuard):
            while _ebt_jumped():
                proc.run(["ebtables", "-t", "filter", "-D", "FORWARD", "-j", EBT_CHAIN])
            faults.point("overlay.arp_guard_unhooked")
            proc.run(["ebtables", "-t", "filter", "-F", EBT_CHAIN], check=False)
            proc.run(["ebtables", "-t", "filter", "-X", EBT_CHAIN], check=False)
            self._guard_maybe = False
        else:  # pragma: no cover
            raise TypeError(a)

    def _configure(self, net: NetworkSpec) -> None:
        ov = net.overlay
        assert ov is not None
        with netlink.ipr() as ipr:
            idx = ipr.link_lookup(ifname=ov.device)[0]
            ipr.link("set", index=idx, mtu=net.mtu,
                     master=ipr.link_lookup(ifname=net.bridge)[0], state="up")


def _ebt_norm(line: str) -> str:
    return " ".join(line.replace("-p arp", "-p ARP").split())


def _ebt_jumped() -> bool:
    out = proc.run(["ebtables", "-t", "filter", "-L", "FORWARD"], check=False)
    return out.returncode == 0 and any(f"-j {EBT_CHAIN}" in line for line in out.stdout.splitlines())
