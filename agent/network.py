"""Network: per VPC on this host a bridge and a router namespace — observe, plan (pure), apply.

For each ``NetworkSpec``: a Linux bridge (``mbr-``), a router network
namespace (``mrt-``, bind-mounted under the agent's netns directory) and a
veth pair (``mgw…b`` on the bridge, ``mgw…r`` in the namespace) whose router
end holds every vSwitch gateway of the VPC, with forwarding on inside the
namespace. Cleanup removes only objects carrying those prefixes. The guests'
taps are created and removed by libvirt (``<interface type='bridge'>``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

from agent import faults
from agent import netlink, nlbatch
from agent.errors import TemporaryError
from agent.spec import (BRIDGE_PREFIX, ROUTER_NS_PREFIX, UPLINK_VETH_PREFIX, VETH_PREFIX,
                        VXLAN_PREFIX, NetworkSpec, NicSpec)

OWNED_LINK_PREFIXES = (BRIDGE_PREFIX, VETH_PREFIX, VXLAN_PREFIX, UPLINK_VETH_PREFIX)

log = logging.getLogger(__name__)

IFF_UP = 0x1


@dataclass(frozen=True)
class LinkObserved:
    name: str
    kind: str = ""
    master: str | None = None
    mtu: int = 1500
    up: bool = False
    mac: str = ""
    index: int = 0


@dataclass(frozen=True)
class RouterObserved:
    link: LinkObserved | None = None  # the router veth end inside the namespace
    addresses: frozenset[str] = frozenset()  # "ip/prefix" on that link
    forwarding: bool = False
    lo_up: bool = False


@dataclass
class NetworkObserved:
    links: dict[str, LinkObserved] = field(default_factory=dict)  # in the host's namespace
    routers: dict[str, RouterObserved] = field(default_factory=dict)  # live namespaces by name
    stale_netns: set[str] = field(default_factory=set)  # entries that are no longer namespaces


# ---- actions -------------------------------------------------------------------

@dataclass(frozen=True)
class CreateBridge:
    name: str
    mtu: int


@dataclass(frozen=True)
class ConfigureLink:
    name: str
    mtu: int
    master: str | None = None


@dataclass(frozen=True)
class CreateRouterNs:
    name: str


@dataclass(frozen=True)
class CreateVethPair:
    network: NetworkSpec


@dataclass(frozen=True)
class ConfigureRouterLink:
    network: NetworkSpec


@dataclass(frozen=True)
class SetRouterAddresses:
    network: NetworkSpec
    add: tuple[str, ...]
    remove: tuple[str, ...]


@dataclass(frozen=True)
class EnableForwarding:
    router_ns: str


@dataclass(frozen=True)
class RemoveLink:
    name: str


@dataclass(frozen=True)
class RemoveRouterNs:
    name: str


NetworkAction = (CreateBridge | ConfigureLink | CreateRouterNs | CreateVethPair | ConfigureRouterLink
                 | SetRouterAddresses | EnableForwarding | RemoveLink | RemoveRouterNs)
REMOVALS = (RemoveLink, RemoveRouterNs)


def gateway_addresses(net: NetworkSpec) -> set[str]:
    return {f"{g.gateway_ip}/{IPv4Network(g.cidr).prefixlen}" for g in net.gateways}


# ---- plan ----------------------------------------------------------------------

def plan_network(desired: list[NetworkSpec], observed: NetworkObserved) -> list[NetworkAction]:
    """Actions that make bridges, router namespaces and veths match ``desired``.

    Removal actions (``REMOVALS``) come last; the reconciler runs them after
    the domains, so a bridge is never taken from under a guest that is still
    meant to leave first.
    """
    acts: list[NetworkAction] = []
    links = observed.links
    for net in desired:
        br = links.get(net.bridge)
        if br is None:
            acts.append(CreateBridge(net.bridge, net.mtu))
        elif br.mtu != net.mtu or not br.up:
            acts.append(ConfigureLink(net.bridge, net.mtu))
        router = observed.routers.get(net.router_ns)
        if router is None:
            acts.append(CreateRouterNs(net.router_ns))
            router = RouterObserved()
        vb = links.get(net.veth_bridge_side)
        if router.link is None:
            if vb is not None:
                acts.append(RemoveLink(net.veth_bridge_side))  # half a pair: start over
            acts.append(CreateVethPair(net))
            router = RouterObserved(forwarding=router.forwarding, lo_up=router.lo_up)
        else:
            if vb is not None and (vb.master != net.bridge or vb.mtu != net.mtu or not vb.up):
                acts.append(ConfigureLink(net.veth_bridge_side, net.mtu, master=net.bridge))
            rl = router.link
            if rl.mtu != net.mtu or not rl.up or rl.mac.lower() != net.router_mac.lower() \
                    or not router.lo_up:
                acts.append(ConfigureRouterLink(net))
        want = gateway_addresses(net)
        add = tuple(sorted(want - router.addresses))
        remove = tuple(sorted(router.addresses - want))
        if add or remove:
            acts.append(SetRouterAddresses(net, add, remove))
        if not router.forwarding:
            acts.append(EnableForwarding(net.router_ns))
    want_links = {n.bridge for n in desired} | {n.veth_bridge_side for n in desired}
    want_links |= {n.overlay.device for n in desired if n.overlay is not None}
    want_links |= {n.uplink.veth_host_side for n in desired if n.uplink is not None}
    removed: set[str] = {a.name for a in acts if isinstance(a, RemoveLink)}
    for name in sorted(links):
        if name in want_links or name in removed:
            continue
        if name.startswith(OWNED_LINK_PREFIXES):
            acts.append(RemoveLink(name))
    want_ns = {n.router_ns for n in desired}
    for name in sorted(set(observed.routers) | observed.stale_netns):
        if name.startswith(ROUTER_NS_PREFIX) and name not in want_ns:
            acts.append(RemoveRouterNs(name))
    return acts


# ---- observe -------------------------------------------------------------------

def links_from_json(items: list[dict]) -> dict[str, LinkObserved]:
    """LinkObserved by name from ``ip -j -d link show`` (see :func:`netlink.host_links`)."""
    out = {}
    for m in items:
        name = m.get("ifname")
        if not name:
            continue
        kind = (m.get("linkinfo") or {}).get("info_kind") or ""
        out[name] = LinkObserved(name, kind, m.get("master"), int(m.get("mtu") or 0),
                                 "UP" in (m.get("flags") or ()), (m.get("address") or "").lower(),
                                 int(m.get("ifindex") or 0))
    return out


class NetworkReconciler:
    """Observes and applies; the plan in between is :func:`plan_network`."""

    def __init__(self, netns_dir: Path) -> None:
        self.netns_dir = Path(netns_dir)

    def ns_path(self, name: str) -> Path:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"bad namespace name {name!r}")
        return self.netns_dir / name

    def live_routers(self) -> set[str]:
        """Names of the router namespaces that exist (cheap: no netlink inside them)."""
        return {name for name in netlink.list_netns(self.netns_dir)
                if name.startswith(ROUTER_NS_PREFIX) and netlink.is_netns(self.ns_path(name))}

    def observe(self, desired: list[NetworkSpec]) -> NetworkObserved:
        links = {k: v for k, v in links_from_json(netlink.host_links()).items()
                 if k.startswith(OWNED_LINK_PREFIXES)}
        obs = NetworkObserved(links=links)
        veth_r = {n.router_ns: n.veth_router_side for n in desired}
        live: list[str] = []
        for name in netlink.list_netns(self.netns_dir):
            if not name.startswith(ROUTER_NS_PREFIX):
                continue
            if not netlink.is_netns(self.ns_path(name)):
                obs.stale_netns.add(name)
                continue
            live.append(name)
        netlink.prune([self.ns_path(n) for n in live])
        fwd = netlink.sysctls_in_netns([self.ns_path(n) for n in live], "net.ipv4.ip_forward")
        for name in live:
            path = self.ns_path(name)
            try:
                with netlink.raw(path) as fd:
                    nslinks = {ln.name: ln for ln in nlbatch.links(fd)}
                    addrs: set[str] = set()
                    r = nslinks.get(veth_r.get(name, ""))
                    if r is not None:
                        addrs = {f"{ip}/{plen}" for idx, ip, plen in nlbatch.ipv4_addresses(fd)
                                 if idx == r.index}
            except OSError as exc:
                raise TemporaryError(f"netlink in {path}: {exc}") from None
            rlink = None if r is None else LinkObserved(
                r.name, r.kind, None, r.mtu, bool(r.flags & IFF_UP), r.mac, r.index)
            lo = nslinks.get("lo")
            obs.routers[name] = RouterObserved(rlink, frozenset(addrs),
                                               fwd.get(str(path)) == "1",
                                               bool(lo and lo.flags & IFF_UP))
        return obs

    def apply(self, a: NetworkAction) -> None:
        try:
            self._apply(a)
        except OSError as exc:  # NetlinkError is an OSError
            raise TemporaryError(f"{type(a).__name__} {_subject(a)}: {exc}") from None

    def _apply(self, a: NetworkAction) -> None:
        if isinstance(a, CreateBridge):
            with netlink.handle() as ipr:
                found = ipr.link_lookup(ifname=a.name)
                if not found:
                    ipr.link("add", ifname=a.name, kind="bridge", mtu=a.mtu, state="up")
                    faults.point("network.bridge_added")
                    ipr.link("set", ifname=a.name, ifalias="miniecs")
                else:
                    ipr.link("set", index=found[0], mtu=a.mtu, state="up")
            log.info("bridge %s up (mtu %d)", a.name, a.mtu)
        elif isinstance(a, ConfigureLink):
            with netlink.handle() as ipr:
                idx = ipr.link_lookup(ifname=a.name)[0]
                kw = {"mtu": a.mtu, "state": "up"}
                if a.master:
                    kw["master"] = ipr.link_lookup(ifname=a.master)[0]
                ipr.link("set", index=idx, **kw)
        elif isinstance(a, CreateRouterNs):
            faults.point("network.before_router_ns")
            netlink.create_netns(self.ns_path(a.name))
            faults.point("network.router_ns_created")
            log.info("router namespace %s created", a.name)
        elif isinstance(a, CreateVethPair):
            self._create_veth(a.network)
        elif isinstance(a, ConfigureRouterLink):
            self._configure_router_link(a.network)
        elif isinstance(a, SetRouterAddresses):
            net = a.network
            with netlink.handle(self.ns_path(net.router_ns)) as ns:
                idx = ns.link_lookup(ifname=net.veth_router_side)[0]
                for cidr in a.remove:
                    ip, plen = cidr.split("/")
                    ns.addr("del", index=idx, address=ip, prefixlen=int(plen))
                faults.point("network.router_addresses")
                for cidr in a.add:
                    ip, plen = cidr.split("/")
                    ns.addr("add", index=idx, address=ip, prefixlen=int(plen))
            log.info("router %s gateways: +%s -%s", net.router_ns, list(a.add), list(a.remove))
        elif isinstance(a, EnableForwarding):
            faults.point("network.before_forwarding")
            netlink.sysctl_in_netns(self.ns_path(a.router_ns), "net.ipv4.ip_forward", "1")
        elif isinstance(a, RemoveLink):
            with netlink.handle() as ipr:
                faults.point("network.before_remove_link")
                for idx in ipr.link_lookup(ifname=a.name):
                    ipr.link("del", index=idx)
            log.info("removed link %s", a.name)
        elif isinstance(a, RemoveRouterNs):
            faults.point("network.before_remove_router_ns")
            netlink.remove_netns(self.ns_path(a.name))
            log.info("removed router namespace %s", a.name)
        else:  # pragma: no cover
            raise TypeError(a)

    def _create_veth(self, net: NetworkSpec) -> None:
        path = self.ns_path(net.router_ns)
        with netlink.handle() as ipr:
            for name in (net.veth_bridge_side, net.veth_router_side):
                for idx in ipr.link_lookup(ifname=name):
                    ipr.link("del", index=idx)
            # one request: the bridge end on its bridge and up, the router end born
            # inside the namespace with its MAC and MTU
            fd = os.open(netlink.open_path(path), os.O_RDONLY)
            try:
                ipr.link("add", ifname=net.veth_bridge_side, kind="veth", mtu=net.mtu,
                         master=ipr.link_lookup(ifname=net.bridge)[0], state="up",
                         peer={"ifname": net.veth_router_side, "net_ns_fd": fd,
                               "address": net.router_mac, "mtu": net.mtu})
            finally:
                os.close(fd)
            faults.point("network.veth_added")
        self._configure_router_link(net)
        log.info("veth %s <-> %s (in %s)", net.veth_bridge_side, net.veth_router_side, net.router_ns)

    def _configure_router_link(self, net: NetworkSpec) -> None:
        with netlink.handle(self.ns_path(net.router_ns)) as ns:
            ns.link("set", index=1, state="up")  # lo is ifindex 1 in every namespace
            ns.link("set", ifname=net.veth_router_side, address=net.router_mac, mtu=net.mtu,
                    state="up")


def plan_taps(nics: list[NicSpec], links: dict[str, LinkObserved]) -> list[ConfigureLink]:
    """Re-plug guest taps that lost their bridge (pure).

    libvirt joins a tap to its bridge only when the domain starts; a bridge
    that was deleted and made again (a host's network flushed, a crash) would
    leave running guests cut off until their next boot. Taps that do not
    exist (domain not running) are libvirt's business.
    """
    acts = []
    for n in nics:
        tap, br = links.get(n.tap), links.get(n.bridge)
        if tap is not None and br is not None and (tap.master != n.bridge or not tap.up):
            acts.append(ConfigureLink(n.tap, n.mtu, master=n.bridge))
    return acts


def observe_taps(nics: list[NicSpec]) -> dict[str, LinkObserved]:
    """The taps of ``nics`` and their bridges, as they are now."""
    wanted = {n.tap for n in nics} | {n.bridge for n in nics}
    if not wanted:
        return {}
    return {k: v for k, v in links_from_json(netlink.host_links()).items() if k in wanted}


def _subject(a: NetworkAction) -> str:
    for attr in ("name", "router_ns"):
        if hasattr(a, attr):
            return getattr(a, attr)
    return a.network.vpc_id  # type: ignore[union-attr]
