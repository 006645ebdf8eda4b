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
import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

from agent import faults
from agent import netlink
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

def _links(ipr) -> dict[str, LinkObserved]:
    msgs = list(ipr.get_links())
    names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in msgs}
    out = {}
    for m in msgs:
        info = m.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else ""
        master = m.get_attr("IFLA_MASTER")
        name = m.get_attr("IFLA_IFNAME")
        out[name] = LinkObserved(name, kind or "", names.get(master) if master else None,
                                 m.get_attr("IFLA_MTU") or 0, bool(m["flags"] & IFF_UP),
                                 (m.get_attr("IFLA_ADDRESS") or "").lower())
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
        with netlink.ipr() as ipr:
            links = {k: v for k, v in _links(ipr).items() if k.startswith(OWNED_LINK_PREFIXES)}
        obs = NetworkObserved(links=links)
        veth_r = {n.router_ns: n.veth_router_side for n in desired}
        for name in netlink.list_netns(self.netns_dir):
            path = self.ns_path(name)
            if not name.startswith(ROUTER_NS_PREFIX):
                continue
            if not netlink.is_netns(path):
                obs.stale_netns.add(name)
                continue
            with netlink.ipr(path) as ns:
                nslinks = _links(ns)
                rlink = nslinks.get(veth_r.get(name, ""))
                addrs: set[str] = set()
                if rlink is not None:
                    idx = ns.link_lookup(ifname=rlink.name)[0]
                    for a in ns.get_addr(family=socket.AF_INET, index=idx):
                        addrs.add(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
            fwd = netlink.sysctl_in_netns(path, "net.ipv4.ip_forward") == "1"
            lo = nslinks.get("lo")
            obs.routers[name] = RouterObserved(rlink, frozenset(addrs), fwd, bool(lo and lo.up))
        return obs

    def apply(self, a: NetworkAction) -> None:
        try:
            self._apply(a)
        except OSError as exc:  # NetlinkError is an OSError
            raise TemporaryError(f"{type(a).__name__} {_subject(a)}: {exc}") from None

    def _apply(self, a: NetworkAction) -> None:
        if isinstance(a, CreateBridge):
            with netlink.ipr() as ipr:
                if not ipr.link_lookup(ifname=a.name):
                    ipr.link("add", ifname=a.name, kind="bridge", mtu=a.mtu)
                    faults.point("network.bridge_added")
                    ipr.link("set", index=ipr.link_lookup(ifname=a.name)[0],
                             ifalias="miniecs")
                ipr.link("set", index=ipr.link_lookup(ifname=a.name)[0], mtu=a.mtu, state="up")
            log.info("bridge %s up (mtu %d)", a.name, a.mtu)
        elif isinstance(a, ConfigureLink):
            with netlink.ipr() as ipr:
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
            with netlink.ipr(self.ns_path(net.router_ns)) as ns:
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
            with netlink.ipr() as ipr:
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
        with netlink.ipr() as ipr:
            for name in (net.veth_bridge_side, net.veth_router_side):
                for idx in ipr.link_lookup(ifname=name):
                    ipr.link("del", index=idx)
            ipr.link("add", ifname=net.veth_bridge_side, kind="veth",
                     peer={"ifname": net.veth_router_side})
            faults.point("network.veth_added")
            b = ipr.link_lookup(ifname=net.veth_bridge_side)[0]
            r = ipr.link_lookup(ifname=net.veth_router_side)[0]
            ipr.link("set", index=r, address=net.router_mac, mtu=net.mtu)
            fd = os.open(netlink.open_path(path), os.O_RDONLY)
            try:
                ipr.link("set", index=r, net_ns_fd=fd)
            finally:
                os.close(fd)
            faults.point("network.veth_moved")
            ipr.link("set", index=b, mtu=net.mtu, master=ipr.link_lookup(ifname=net.bridge)[0],
                     state="up")
        self._configure_router_link(net)
        log.info("veth %s <-> %s (in %s)", net.veth_bridge_side, net.veth_router_side, net.router_ns)

    def _configure_router_link(self, net: NetworkSpec) -> None:
        with netlink.ipr(self.ns_path(net.router_ns)) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            idx = ns.link_lookup(ifname=net.veth_router_side)[0]
            ns.link("set", index=idx, address=net.router_mac, mtu=net.mtu, state="up")


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
    with netlink.ipr() as ipr:
        return {k: v for k, v in _links(ipr).items() if k in wanted}


def _subject(a: NetworkAction) -> str:
    for attr in ("name", "router_ns"):
        if hasattr(a, attr):
            return getattr(a, attr)
    return a.network.vpc_id  # type: ignore[union-attr]
