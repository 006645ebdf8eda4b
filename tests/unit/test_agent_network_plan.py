"""Network plan, from tables: (desired NetworkSpecs, observed links/namespaces) -> actions."""

from __future__ import annotations

from agent.network import (REMOVALS, ConfigureLink, ConfigureRouterLink, CreateBridge,
                           CreateRouterNs, CreateVethPair, EnableForwarding, LinkObserved,
                           NetworkObserved, RemoveLink, RemoveRouterNs, RouterObserved,
                           SetRouterAddresses, plan_network)
from agent.testing import make_network

NET = make_network(gateways=(("10.0.1.0/24", "10.0.1.1"), ("10.0.2.0/25", "10.0.2.1")))
GWS = frozenset({"10.0.1.1/24", "10.0.2.1/25"})


def converged(net=NET, **router_kw) -> NetworkObserved:
    router = dict(link=LinkObserved(net.veth_router_side, "veth", None, net.mtu, True, net.router_mac),
                  addresses=GWS, forwarding=True, lo_up=True)
    router.update(router_kw)
    return NetworkObserved(
        links={net.bridge: LinkObserved(net.bridge, "bridge", None, net.mtu, True),
               net.veth_bridge_side: LinkObserved(net.veth_bridge_side, "veth", net.bridge,
                                                  net.mtu, True)},
        routers={net.router_ns: RouterObserved(**router)})


def test_from_nothing():
    assert plan_network([NET], NetworkObserved()) == [
        CreateBridge(NET.bridge, 1450), CreateRouterNs(NET.router_ns), CreateVethPair(NET),
        SetRouterAddresses(NET, tuple(sorted(GWS)), ()), EnableForwarding(NET.router_ns)]


def test_converged_is_empty():
    assert plan_network([NET], converged()) == []


def test_gateway_changes():
    obs = converged(addresses=frozenset({"10.0.1.1/24", "10.0.3.1/24"}))
    assert plan_network([NET], obs) == [SetRouterAddresses(NET, ("10.0.2.1/25",), ("10.0.3.1/24",))]


def test_repairs():
    obs = converged(forwarding=False)
    obs.links[NET.bridge] = LinkObserved(NET.bridge, "bridge", None, 1500, False)
    obs.links[NET.veth_bridge_side] = LinkObserved(NET.veth_bridge_side, "veth", None, 1450, True)
    assert plan_network([NET], obs) == [
        ConfigureLink(NET.bridge, 1450), ConfigureLink(NET.veth_bridge_side, 1450, master=NET.bridge),
        EnableForwarding(NET.router_ns)]
    obs = converged(link=LinkObserved(NET.veth_router_side, "veth", None, 1450, True, "02:00:00:00:00:01"))
    assert plan_network([NET], obs) == [ConfigureRouterLink(NET)]


def test_namespace_lost_recreates_pair():
    """After the router namespace died (and took its veth end), start the pair over."""
    obs = converged()
    del obs.routers[NET.router_ns]
    obs.stale_netns.add(NET.router_ns)
    acts = plan_network([NET], obs)
    assert acts[:3] == [CreateRouterNs(NET.router_ns), RemoveLink(NET.veth_bridge_side),
                        CreateVethPair(NET)]
    assert RemoveRouterNs(NET.router_ns) not in acts


def test_removes_only_marked_leftovers():
    old = make_network("vpc-oooooooooooooooooooo")
    obs = converged()
    for name in (old.bridge, old.veth_bridge_side, "eth0", "virbr0", "br-other", "mtapxyz"):
        obs.links[name] = LinkObserved(name)
    obs.routers[old.router_ns] = RouterObserved()
    obs.routers["someone-else"] = RouterObserved()
    obs.stale_netns.add("mrt-stale")
    acts = plan_network([NET], obs)
    assert acts == [RemoveLink(old.bridge), RemoveLink(old.veth_bridge_side),
                    RemoveRouterNs(old.router_ns), RemoveRouterNs("mrt-stale")]
    assert all(isinstance(a, REMOVALS) for a in acts)


def test_empty_spec_removes_everything_ours():
    acts = plan_network([], converged())
    assert set(acts) == {RemoveLink(NET.bridge), RemoveLink(NET.veth_bridge_side),
                         RemoveRouterNs(NET.router_ns)}
