"""A port that moves between hosts, on real bridges and VXLAN: the overlay forgets where it was.

Two throwaway "hypervisor" namespaces joined by an underlay veth, each with a
bridge; the real ``OverlayReconciler`` makes their VXLAN devices and FDB from
a ``NetworkSpec`` (run inside each namespace). A "router" namespace hangs off
host A's bridge with a permanent neighbour entry for the guest, like the real
router namespace. The "guest" namespace first sits on host B and talks to the
router, so A's bridge learns the guest's MAC on the VXLAN device; then it moves
to A (a cold migration: a new tap, a guest that says nothing until spoken to —
IPv6 off, permanent neighbours). Unless the reconciler drops that learned
entry, the router's packets keep going over the overlay to B, where nobody
answers, until the entry ages out five minutes later.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agent.spec import GatewaySpec, NetworkSpec, OverlaySpec, PortSpec
from tests.rig.rig import PROJECT

pytestmark = pytest.mark.integration

TAG = f"ovm{os.getpid() % 100000}"
HOST_A, HOST_B, GUEST, ROUTER = (f"{TAG}-{x}" for x in ("a", "b", "g", "r"))
BRIDGE, VXLAN, TAP = "mbr-ovmtest01", "mvx-ovmtest01", "mtapovmtest01"
VTEP_A, VTEP_B = "198.18.99.11", "198.18.99.12"
GUEST_IP, GUEST_MAC = "10.9.99.5", "52:54:00:09:99:05"
ROUTER_IP, ROUTER_MAC = "10.9.99.1", "02:00:00:09:99:01"

RECONCILE = r"""
import json, sys
from agent.overlay import OverlayReconciler, plan_overlay
from agent.spec import NetworkSpec
net = NetworkSpec.model_validate_json(sys.argv[1])
r = OverlayReconciler(ns_path=lambda name: None)
acts = plan_overlay([net], r.observe([net], set()), set())
for a in acts:
    r.apply(a)
print(json.dumps([type(a).__name__ for a in acts]))
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


def spec(local_vtep: str, ports: list[PortSpec], remotes: list[str]) -> NetworkSpec:
    return NetworkSpec(
        vpc_id="vpc-ovm", vni=7099, bridge=BRIDGE, router_ns="mrt-ovm", veth_bridge_side="mgwovmb",
        veth_router_side="mgwovmr", router_mac=ROUTER_MAC, mtu=1450,
        gateways=[GatewaySpec(vswitch_id="vsw-ovm", cidr="10.9.99.0/24", gateway_ip=ROUTER_IP)],
        overlay=OverlaySpec(device=VXLAN, local_vtep=local_vtep, remote_vteps=remotes),
        ports=ports)


def reconcile(host_ns: str, net: NetworkSpec) -> list[str]:
    out = sh("ip", "netns", "exec", host_ns, sys.executable, "-c", RECONCILE,
             net.model_dump_json())
    return json.loads(out.stdout)


def fdb_port_of(host_ns: str, mac: str) -> str | None:
    """The bridge port the bridge's own FDB sends ``mac`` to."""
    for e in json.loads(sh("bridge", "-n", host_ns, "-j", "fdb", "show", "br", BRIDGE).stdout):
        if e.get("mac") == mac and not e.get("dst"):
            return e.get("ifname")
    return None


def plug_guest(host_ns: str) -> None:
    """The guest's NIC as a tap on ``host_ns``'s bridge (a veth; its other end in the guest)."""
    sh("ip", "-n", host_ns, "link", "add", TAP, "type", "veth", "peer", "name", "eth0",
       "netns", GUEST)
    sh("ip", "-n", host_ns, "link", "set", TAP, "mtu", "1450", "master", BRIDGE, "up")
    sh("ip", "-n", GUEST, "link", "set", "eth0", "address", GUEST_MAC, "mtu", "1450", "up")
    sh("ip", "-n", GUEST, "addr", "add", f"{GUEST_IP}/24", "dev", "eth0")
    sh("ip", "-n", GUEST, "neigh", "replace", ROUTER_IP, "lladdr", ROUTER_MAC, "dev", "eth0",
       "nud", "permanent")


def router_reaches_guest() -> bool:
    return sh("ip", "netns", "exec", ROUTER, "ping", "-c", "3", "-i", "0.3", "-W", "1", GUEST_IP,
              check=False).returncode == 0


@pytest.fixture
def hosts():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    made = []
    try:
        for ns in (HOST_A, HOST_B, GUEST, ROUTER):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # a guest that never speaks first: no IPv6 chatter (DAD, router solicitations)
        sh("ip", "netns", "exec", GUEST, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
           "net.ipv6.conf.default.disable_ipv6=1")
        sh("ip", "-n", HOST_A, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0",
           "netns", HOST_B)
        for ns, vtep in ((HOST_A, VTEP_A), (HOST_B, VTEP_B)):
            sh("ip", "-n", ns, "addr", "add", f"{vtep}/24", "dev", "ul0")
            sh("ip", "-n", ns, "link", "set", "ul0", "up")
            sh("ip", "-n", ns, "link", "add", BRIDGE, "type", "bridge")
            sh("ip", "-n", ns, "link", "set", BRIDGE, "up")
        sh("ip", "-n", HOST_A, "link", "add", "rtrport", "type", "veth", "peer", "name", "eth0",
           "netns", ROUTER)
        sh("ip", "-n", HOST_A, "link", "set", "rtrport", "mtu", "1450", "master", BRIDGE, "up")
        sh("ip", "-n", ROUTER, "link", "set", "eth0", "address", ROUTER_MAC, "mtu", "1450", "up")
        sh("ip", "-n", ROUTER, "addr", "add", f"{ROUTER_IP}/24", "dev", "eth0")
        sh("ip", "-n", ROUTER, "neigh", "replace", GUEST_IP, "lladdr", GUEST_MAC, "dev", "eth0",
           "nud", "permanent")
        yield
    finally:
        for ns in reversed(made):
            sh("ip", "netns", "delete", ns, check=False)


def test_guest_moved_to_the_routers_host_is_reached_at_once(hosts):
    router_on_a = PortSpec(mac=ROUTER_MAC, ip=ROUTER_IP)
    guest_on_b = PortSpec(mac=GUEST_MAC, ip=GUEST_IP, vtep=VTEP_B)
    # the guest on host B; the router on A
    plug_guest(HOST_B)
    assert "CreateVxlan" in reconcile(HOST_A, spec(VTEP_A, [router_on_a, guest_on_b], [VTEP_B]))
    reconcile(HOST_B, spec(VTEP_B, [router_on_a.model_copy(update={"vtep": VTEP_A}),
                                    guest_on_b.model_copy(update={"vtep": None})], [VTEP_A]))
    assert router_reaches_guest()
    # the bridge on A learned the guest's MAC behind the VXLAN device, as it should
    assert fdb_port_of(HOST_A, GUEST_MAC) == VXLAN

    # cold migration B -> A: the tap goes from B, a new one comes on A, the guest is silent
    sh("ip", "-n", HOST_B, "link", "del", TAP)
    plug_guest(HOST_A)
    acts = reconcile(HOST_A, spec(VTEP_A, [router_on_a, guest_on_b.model_copy(
        update={"vtep": None})], [VTEP_B]))
    reconcile(HOST_B, spec(VTEP_B, [router_on_a.model_copy(update={"vtep": VTEP_A})], [VTEP_A]))

    # the router's first packets find the guest (flooded on the bridge, then learned)
    assert router_reaches_guest(), f"A's bridge sends the guest to {fdb_port_of(HOST_A, GUEST_MAC)}"
    assert acts == ["SyncFdb", "ForgetLearned"], acts
    assert fdb_port_of(HOST_A, GUEST_MAC) == TAP
    # converged: nothing more to do
    assert reconcile(HOST_A, spec(VTEP_A, [router_on_a, guest_on_b.model_copy(
        update={"vtep": None})], [VTEP_B])) == []
