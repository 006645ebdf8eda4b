"""Tables for the overlay plan, the uplink's rules and the EIP pool (no root, no subprocess)."""

from __future__ import annotations

from agent import nlbatch
from agent.overlay import (FLOOD_MAC, CreateVxlan, ForgetLearned, InstallArpGuard,
                           OverlayObserved, RemoveArpGuard, SyncFdb, SyncNeighbours,
                           VxlanObserved, plan_overlay, vxlans_from_json)
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


def test_port_that_moved_here_is_forgotten_where_the_bridge_learned_it_remotely():
    """A port that lived on another host (the bridge learned its MAC on the VXLAN device)
    and is now on this host: its remote FDB entry goes, and so does the learned entry,
    which would otherwise keep sending its traffic across the overlay until it aged out."""
    was_remote = LOCAL.model_copy(update={"vtep": "198.18.0.12"})
    vx = VxlanObserved("mvx-a", 5000, "198.18.0.11", 4789, "mbr-a", 1450, True,
                       frozenset({(FLOOD_MAC, "198.18.0.12"), (LOCAL.mac, "198.18.0.12"),
                                  (REMOTE.mac, "198.18.0.12")}),
                       learned=frozenset({LOCAL.mac, REMOTE.mac, "52:54:00:00:00:99"}))
    obs = OverlayObserved(vxlans={"mvx-a": vx}, guard=True, neighbours={"mrt-a": frozenset(
        {(LOCAL.ip, LOCAL.mac), (REMOTE.ip, REMOTE.mac)})})
    # still remote: the learned entries are the bridge doing its job
    assert plan_overlay([net([was_remote, REMOTE])], obs, {"mrt-a"}) == []
    acts = plan_overlay([net([LOCAL.model_copy(update={"mac": LOCAL.mac.upper()}), REMOTE])],
                        obs, {"mrt-a"})
    assert acts == [SyncFdb("mvx-a", (), ((LOCAL.mac, "198.18.0.12"),)),
                    ForgetLearned("mvx-a", (LOCAL.mac,))]
    # a device made afresh has nothing learned
    assert not [a for a in plan_overlay([net([LOCAL])], OverlayObserved(), {"mrt-a"})
                if isinstance(a, ForgetLearned)]


def test_learned_entries_are_read_apart_from_static_ones():
    links = [{"ifname": "mvx-a", "flags": ["UP"], "mtu": 1450, "master": "mbr-a",
              "linkinfo": {"info_kind": "vxlan",
                           "info_data": {"id": 5000, "local": "198.18.0.11", "port": 4789}}}]
    fdb = [
        {"mac": "00:00:00:00:00:00", "ifname": "mvx-a", "dst": "198.18.0.12", "flags": ["self"],
         "state": "permanent"},
        {"mac": "52:54:00:00:00:02", "ifname": "mvx-a", "dst": "198.18.0.12",
         "flags": ["self"], "state": "permanent"},
        {"mac": "52:54:00:00:00:01", "ifname": "mvx-a", "master": "mbr-a", "flags": [],
         "state": ""},  # learned
        {"mac": "52:54:00:00:00:03", "ifname": "mvx-a", "master": "mbr-a", "flags": [],
         "state": "static"},  # someone's static entry: not ours to judge
        {"mac": "6e:eb:a4:94:a4:a6", "ifname": "mvx-a", "master": "mbr-a", "flags": [],
         "state": "permanent"},  # the device's own address
        {"mac": "52:54:00:00:00:04", "ifname": "mtapx", "master": "mbr-a", "flags": [],
         "state": ""},
    ]
    vx = vxlans_from_json(links, fdb)["mvx-a"]
    assert vx.fdb == {(FLOOD_MAC, "198.18.0.12"), ("52:54:00:00:00:02", "198.18.0.12")}
    assert vx.learned == {"52:54:00:00:00:01"}


def test_batch_encodes_a_bridge_entry_delete_without_destination():
    msg = nlbatch.encode(nlbatch.Entry("fdb-del-master", 7, "52:54:00:00:00:01", ""), 42)
    length, mtype, flags, seq, _ = nlbatch._HDR.unpack_from(msg)
    assert (length, mtype, seq) == (len(msg), nlbatch.RTM_DELNEIGH, 42)
    assert flags == nlbatch.NLM_F_REQUEST | nlbatch.NLM_F_ACK
    family, _, _, ifindex, _, ndm_flags, _ = nlbatch._ND.unpack_from(msg, nlbatch._HDR.size)
    assert (family, ifindex, ndm_flags) == (nlbatch.AF_BRIDGE, 7, nlbatch.NTF_MASTER)
    attrs = nlbatch._attrs(msg, nlbatch._HDR.size + nlbatch._ND.size, len(msg))
    assert attrs == {nlbatch.NDA_LLADDR: bytes.fromhex("525400000001")}
