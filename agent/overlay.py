"""The VPC overlay on this host: VXLAN device, static FDB, router neighbours, ARP guard.

For each ``NetworkSpec`` with an ``overlay``:

* a VXLAN device (``mvx-``, VNI of the VPC, ``local`` = this host's underlay
  address, ``nolearning``) joined to the VPC's bridge;
* static FDB entries on it: ``00:00:00:00:00:00 dst VTEP`` per remote host
  (head-end replication of broadcast, unknown unicast and multicast; no
  multicast underlay) and ``MAC dst VTEP`` per remote port;
* in the router namespace, a permanent neighbour entry for every port of the
  VPC, local or remote, so the router never has to ARP across hosts;
* no bridge-learned entry on the VXLAN device for the MAC of a port on this
  host: one left from when the port lived elsewhere (it migrated here) would
  send the port's traffic back across the overlay until it aged out (300 s),
  and a guest that is silent until spoken to never corrects it — the
  anti-spoofing chains drop a guest's frames before the bridge learns from
  them, so not even its IPv6 chatter at boot does;
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

import errno
import logging
import os
from dataclasses import dataclass, field

from agent import faults
from agent import netlink, nlbatch, proc
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
    learned: frozenset[str] = frozenset()  # MACs the bridge learned on this port (dynamic)


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
class ForgetLearned:
    """Delete the bridge's dynamic FDB entries for ``macs`` on the VXLAN port ``device``."""
    device: str
    macs: tuple[str, ...]


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


OverlayAction = (CreateVxlan | ConfigureVxlan | SyncFdb | ForgetLearned | SyncNeighbours
                 | InstallArpGuard | RemoveArpGuard)


def desired_fdb(ov: OverlaySpec, net: NetworkSpec) -> set[tuple[str, str]]:
    want = {(FLOOD_MAC, v) for v in ov.remote_vteps}
    want |= {(p.mac.lower(), p.vtep) for p in net.ports if p.vtep}
    return want


def local_macs(net: NetworkSpec) -> set[str]:
    return {p.mac.lower() for p in net.ports if not p.vtep}


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
                learned: frozenset[str] = frozenset()
            else:
                if vx.master != net.bridge or vx.mtu != net.mtu or not vx.up:
                    acts.append(ConfigureVxlan(net))
                have, learned = set(vx.fdb), vx.learned
            want = desired_fdb(ov, net)
            add, remove = want - have, have - want
            if add or remove:
                acts.append(SyncFdb(ov.device, tuple(sorted(add)), tuple(sorted(remove))))
            # a port that moved here: the bridge may still send its MAC over the overlay
            stale = learned & local_macs(net)
            if stale:
                acts.append(ForgetLearned(ov.device, tuple(sorted(stale))))
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

def vxlans_from_json(links: list[dict], fdb: list[dict]) -> dict[str, VxlanObserved]:
    """miniecs VXLAN devices with their static FDB (``self`` entries with a ``dst``) and the
    MACs their bridge learned on them, from ``ip -j -d link`` and ``bridge -j fdb``."""
    entries: dict[str, set[tuple[str, str]]] = {}
    learned: dict[str, set[str]] = {}
    for e in fdb:
        name, dst = e.get("ifname") or "", e.get("dst")
        if not name.startswith(VXLAN_PREFIX):
            continue
        mac = (e.get("mac") or "").lower()
        if dst:
            entries.setdefault(name, set()).add((mac, dst))
        elif e.get("master") and not e.get("state"):  # dynamic: neither static nor permanent
            learned.setdefault(name, set()).add(mac)
    out = {}
    for m in links:
        name = m.get("ifname") or ""
        info = m.get("linkinfo") or {}
        if not name.startswith(VXLAN_PREFIX) or info.get("info_kind") != "vxlan":
            continue
        data = info.get("info_data") or {}
        out[name] = VxlanObserved(
            name=name, vni=int(data.get("id") or 0), local=data.get("local") or "",
            port=int(data.get("port") or 0), master=m.get("master"), mtu=int(m.get("mtu") or 0),
            up="UP" in (m.get("flags") or ()), fdb=frozenset(entries.get(name, ())),
            learned=frozenset(learned.get(name, ())))
    return out


class OverlayReconciler:
    def __init__(self, ns_path) -> None:
        self.ns_path = ns_path  # name -> Path of a router namespace
        self._guard_maybe = True  # until a pass has seen it absent (e.g. after a restart)

    def observe(self, desired: list[NetworkSpec], routers: set[str]) -> OverlayObserved:
        obs = OverlayObserved()
        links = netlink.host_links()
        if any((m.get("ifname") or "").startswith(VXLAN_PREFIX) for m in links):
            obs.vxlans = vxlans_from_json(links, netlink.host_fdb())
        for net in desired:
            if net.router_ns not in routers:
                continue
            path = self.ns_path(net.router_ns)
            try:
                with netlink.raw(path) as fd:
                    found = [ln.index for ln in nlbatch.links(fd)
                             if ln.name == net.veth_router_side]
                    if not found:
                        continue
                    entries = {(ip, mac.lower()) for idx, state, ip, mac in
                               nlbatch.ipv4_neighbours(fd)
                               if idx == found[0] and state & NUD_PERMANENT and mac}
            except OSError as exc:
                raise TemporaryError(f"netlink in {path}: {exc}") from None
            obs.neighbours[net.router_ns] = frozenset(entries)
        if not (self._guard_maybe or obs.vxlans or any(n.overlay for n in desired)):
            return obs
        chain, jumped = _ebt_read()
        obs.guard = chain is not None and jumped and \
            {_ebt_norm(r) for r in EBT_RULES} <= {_ebt_norm(line) for line in chain}
        # half a guard (a removal cut short by a crash: jumps without rules, or the chain
        # without its jump) is a remnant the plan removes
        obs.guard_remnant = chain is not None or jumped
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
            with netlink.handle() as ipr:
                for idx in ipr.link_lookup(ifname=ov.device):
                    ipr.link("del", index=idx)
                # one request: on the bridge and up from the start
                ipr.link("add", ifname=ov.device, kind="vxlan", vxlan_id=net.vni,
                         vxlan_local=ov.local_vtep, vxlan_port=ov.port, vxlan_learning=0,
                         mtu=net.mtu, master=ipr.link_lookup(ifname=net.bridge)[0], state="up")
            faults.point("overlay.vxlan_added")
            log.info("vxlan %s (vni %d, local %s) on %s", ov.device, net.vni, ov.local_vtep,
                     net.bridge)
        elif isinstance(a, ConfigureVxlan):
            self._configure(a.network)
        elif isinstance(a, SyncFdb):
            with netlink.handle() as ipr:
                idx = ipr.link_lookup(ifname=a.device)[0]
            entries = [nlbatch.Entry("fdb-del", idx, mac, dst) for mac, dst in a.remove]
            entries += [nlbatch.Entry("fdb-append", idx, mac, dst) for mac, dst in a.add]
            fd = nlbatch.new_socket()
            try:
                _send_batch(fd, entries, f"fdb {a.device}")
                faults.point("overlay.fdb_synced")
            finally:
                os.close(fd)
            log.info("fdb %s: +%d -%d", a.device, len(a.add), len(a.remove))
        elif isinstance(a, ForgetLearned):
            with netlink.handle() as ipr:
                idx = ipr.link_lookup(ifname=a.device)[0]
            fd = nlbatch.new_socket()
            try:
                # an entry the guest's own frames moved to its tap meanwhile is not on this
                # port any more: the kernel answers ENOENT, which is fine
                _send_batch(fd, [nlbatch.Entry("fdb-del-master", idx, mac, "") for mac in a.macs],
                            f"learned entries on {a.device}")
            finally:
                os.close(fd)
            log.info("fdb %s: forgot %s learned there (now on this host)", a.device,
                     ", ".join(a.macs))
        elif isinstance(a, SyncNeighbours):
            net = a.network
            with netlink.raw(self.ns_path(net.router_ns)) as fd:
                idx = [ln.index for ln in nlbatch.links(fd) if ln.name == net.veth_router_side][0]
                entries = [nlbatch.Entry("neigh-del", idx, mac, ip) for ip, mac in a.remove]
                entries += [nlbatch.Entry("neigh-replace", idx, mac, ip) for ip, mac in a.add]
                _send_batch(fd, entries, f"neighbours in {net.router_ns}")
                faults.point("overlay.neighbours_synced")
        elif isinstance(a, InstallArpGuard):
            # one transaction: declaring the chain with --noflush empties it if it exists
            lines = ["*filter", f":{EBT_CHAIN} ACCEPT"]
            lines += [f"-A {EBT_CHAIN} {rule}" for rule in EBT_RULES]
            if not _ebt_read()[1]:
                lines.append(f"-I FORWARD 1 -j {EBT_CHAIN}")
            proc.run(["ebtables-restore", "--noflush"], input_text="\n".join(lines + ["COMMIT", ""]))
            faults.point("overlay.arp_guard_rule")
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
        with netlink.handle() as ipr:
            idx = ipr.link_lookup(ifname=ov.device)[0]
            ipr.link("set", index=idx, mtu=net.mtu,
                     master=ipr.link_lookup(ifname=net.bridge)[0], state="up")


def _send_batch(fd: int, entries: list[nlbatch.Entry], what: str) -> None:
    """Send a batch on the netlink socket ``fd``; deleting an entry that is gone already
    is not an error."""
    if not entries:
        return
    failures = [(e, err) for e, err in nlbatch.send(fd, entries)
                if not (e.op.endswith("-del") and err == errno.ENOENT)]
    if failures:
        raise TemporaryError(f"{what}: {nlbatch.describe(failures)}")


def _ebt_norm(line: str) -> str:
    return " ".join(line.replace("-p arp", "-p ARP").split())


def _ebt_read() -> tuple[list[str] | None, bool]:
    """The guard chain's rules (without ``-A chain``; None when the chain is missing) and
    whether FORWARD jumps to it, from one ``ebtables-save -t filter``."""
    out = proc.run(["ebtables-save", "-t", "filter"], check=False)
    if out.returncode != 0:
        return None, False
    chain: list[str] | None = None
    jumped = False
    for line in out.stdout.splitlines():
        if line.startswith(f":{EBT_CHAIN} "):
            chain = [] if chain is None else chain
        elif line.startswith(f"-A {EBT_CHAIN} "):
            chain = [] if chain is None else chain
            chain.append(line[len(f"-A {EBT_CHAIN} "):])
        elif line.startswith("-A FORWARD ") and line.split()[-2:] == ["-j", EBT_CHAIN]:
            jumped = True
    return chain, jumped


def _ebt_jumped() -> bool:
    out = proc.run(["ebtables", "-t", "filter", "-L", "FORWARD"], check=False)
    return out.returncode == 0 and any(f"-j {EBT_CHAIN}" in line for line in out.stdout.splitlines())
