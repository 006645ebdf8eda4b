"""Tables for the overlay plan, the uplink's rules and the EIP pool (no root, no subprocess)."""

from __future__ import annotations

from agent.overlay import (FLOOD_MAC, CreateVxlan, InstallArpGuard, OverlayObserved,
                           RemoveArpGuard, SyncFdb, SyncNeighbours, VxlanObserved, plan_overlay)
from agent.spec import EipSpec, GatewaySpec, NetworkSpec, OverlaySpec, PortSpec, UplinkSpec
from agent.uplink import host_routes, router_rules
from controller.services.eips import pool_addresses
from controller.services.net_compile import transit_ip


def net(ports=(), remotes=("198.18.0.12",)) -> NetworkSpec:
    return NetworkSpec(
        vpc_id="vpc-a", vni=5000, bridge="mbr-a", router_ns="mrt-a", veth_bridge_side="mgwab",
        veth_router_side="mgwar", router_mac="02:00:00:00:00:01", mtu=1450,
        gateways=[GatewaySpec(vswitch_id="vsw-1", cidr="10.0.1.0/24", gateway_ip="10.0.1.1")],
        overlay=OverlaySpec(device="mvx-a", local_vtep="198.18.0.11", remote_vteps=list(remotes)),
        ports=list(ports))


LOCAL = PortSpec(mac="52:54:00:00:00:01", ip="10.0.1.2")
REMOTE = PortSpec(mac="52:54:00:00:00:02", ip="10.0.1.3", vtep="198.18.0.12")


def test_fresh_host_creates_vxlan_fdb_neighbours_and_guard():
    acts = plan_overlay([net([LOCAL, REMOTE])], OverlayObserved(), {"mrt-a"})
    kinds = [type(a) for a in acts]
    assert kinds == [CreateVxlan, SyncFdb, SyncNeighbours, InstallArpGuard]
    fdb = acts[1]
    assert set(fdb.add) == {(FLOOD_MAC, "198.18.0.12"), ("52:54:00:00:00:02", "198.18.0.12")}
    assert set(acts[2].add) == {("10.0.1.2", "52:54:00:00:00:01"), ("10.0.1.3", "52:54:00:00:00:02")}


def test_converged_host_plans_nothing_and_a_moved_port_is_replaced():
    n = net([LOCAL, REMOTE])
    vx = VxlanObserved("mvx-a", 5000, "198.18.0.11", 4789, "mbr-a", 1450, True,
                       frozenset({(FLOOD_MAC, "198.18.0.12"), ("52:54:00:00:00:02", "198.18.0.12")}))
    obs = OverlayObserved(vxlans={"mvx-a": vx}, guard=True, neighbours={"mrt-a": frozenset(
        {("10.0.1.2", "52:54:00:00:00:01"), ("10.0.1.3", "52:54:00:00:00:02")})})
    assert plan_overlay([n], obs, {"mrt-a"}) == []
    moved = net([LOCAL, REMOTE.model_copy(update={"vtep": "198.18.0.13"})], ("198.18.0.13",))
    fdb = [a for a in plan_overlay([moved], obs, {"mrt-a"}) if isinstance(a, SyncFdb)][0]
    assert set(fdb.remove) == {(FLOOD_MAC, "198.18.0.12"), ("52:54:00:00:00:02", "198.18.0.12")}
    assert set(fdb.add) == {(FLOOD_MAC, "198.18.0.13"), ("52:54:00:00:00:02", "198.18.0.13")}


def test_wrong_vni_recreates_and_last_network_drops_the_guard():
    vx = VxlanObserved("mvx-a", 4999, "198.18.0.11", 4789, "mbr-a", 1450, True)
    acts = plan_overlay([net()], OverlayObserved(vxlans={"mvx-a": vx}, guard=True), set())
    assert isinstance(acts[0], CreateVxlan)
    assert plan_overlay([], OverlayObserved(guard=True)) == [RemoveArpGuard()]


def test_router_rules_snat_eip_and_default_drop():
    up = UplinkSpec(veth_host_side="mupah", veth_router_side="mupar", transit_ip="100.64.19.140",
                    nat_cidrs=["10.0.1.0/24"],
                    eips=[EipSpec(public_ip="203.0.113.130", private_ip="10.0.2.5")])
    rules = router_rules(up)
    assert rules["nat"] == [
        "-A PREROUTING -d 203.0.113.130/32 -i mupar -j DNAT --to-destination 10.0.2.5",
        "-A POSTROUTING -s 10.0.2.5/32 -o mupar -j SNAT --to-source 203.0.113.130",
        "-A POSTROUTING -s 10.0.1.0/24 -o mupar -j SNAT --to-source 100.64.19.140"]
    assert rules["filter"][-1] == "-A FORWARD -o mupar -j DROP"
    assert "-A FORWARD -i mupar -j DROP" in rules["filter"]
    assert host_routes(up) == {("100.64.19.140/32", None), ("203.0.113.130/32", "100.64.19.140")}


def test_eip_pool_and_transit_addresses():
    assert [str(a) for a in pool_addresses("203.0.113.128/30, 198.51.100.9-198.51.100.10")] == \
        ["198.51.100.9", "198.51.100.10", "203.0.113.129", "203.0.113.130"]
    assert pool_addresses("") == []
    assert transit_ip(1000) != transit_ip(1001)
    assert transit_ip(1000).startswith("100.")


def test_half_removed_guard_is_removed_again():
    """A crash between unhooking the guard and deleting its chain leaves a chain that is
    neither a complete guard nor nothing: with no overlay left it still goes."""
    assert plan_overlay([], OverlayObserved(guard=False, guard_remnant=True)) == \
        [RemoveArpGuard()]
    assert plan_overlay([], OverlayObserved()) == []
