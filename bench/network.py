"""Network benchmark: the agent's network converge vs one `ip` command per object.

In a scratch network namespace (nothing leaves it), build 20 VPCs with 10
ports each (200 ports; half of each VPC's ports "remote" behind a second fake
VTEP, so FDB entries exist) and time:

1. the agent's reconcilers (bridge, router namespace, veth pair, gateways,
   forwarding, VXLAN device, static FDB, router neighbours) converging the
   whole spec from nothing, plus the 100 local ports as plain taps joined to
   their bridges (what libvirt would do for guests);
2. one added port (a new remote port in one VPC: FDB entry + neighbour), a
   second pass;
3. the same end state built the way shell scripts do it: one `ip`/`bridge`
   command per object;

prints the figures and ratio, and ends with a HEADLINE line. Run as root:
``.venv/bin/python bench/network.py`` (re-executes itself inside the scratch
namespace; everything it makes is removed at the end).

``--cross-host`` instead boots a 2-host rig (under the guests lock, e.g.
``flock /tmp/miniecs-guests.lock``) and times an instance reaching Running on
host B until a guest on host A gets an ICMP reply from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import netlink  # noqa: E402
from agent.network import NetworkReconciler, plan_network  # noqa: E402
from agent.overlay import OverlayReconciler, plan_overlay  # noqa: E402
from agent.spec import GatewaySpec, NetworkSpec, OverlaySpec, PortSpec, UplinkSpec  # noqa: E402
from agent.uplink import UplinkReconciler, remove_host_nat  # noqa: E402

VPCS = int(os.environ.get("BENCH_VPCS", "20"))
PORTS = int(os.environ.get("BENCH_PORTS_PER_VPC", "10"))
LOCAL_VTEP, REMOTE_VTEP = "198.18.0.11", "198.18.0.12"
NS = f"mb-net-{os.getpid()}"


def spec(extra_port: bool = False, uplink: bool = False) -> list[NetworkSpec]:
    nets = []
    for v in range(VPCS):
        vid = f"vpc-bench{v:02d}"
        ports = []
        for p in range(PORTS):
            ports.append(PortSpec(mac=f"52:54:00:{v:02x}:00:{p:02x}", ip=f"10.{v}.1.{10 + p}",
                                  vtep=REMOTE_VTEP if p % 2 else None))
        if extra_port and v == 0:
            ports.append(PortSpec(mac="52:54:00:00:01:ff", ip="10.0.1.250", vtep=REMOTE_VTEP))
        nets.append(NetworkSpec(
            vpc_id=vid, vni=1000 + v, bridge=f"mbr-b{v:02d}", router_ns=f"mrt-b{v:02d}",
            veth_bridge_side=f"mgwb{v:02d}b", veth_router_side=f"mgwb{v:02d}r",
            router_mac=f"02:00:00:00:{v:02x}:01", mtu=1450,
            gateways=[GatewaySpec(vswitch_id=f"vsw-b{v}", cidr=f"10.{v}.1.0/24",
                                  gateway_ip=f"10.{v}.1.1")],
            overlay=OverlaySpec(device=f"mvx-b{v:02d}", local_vtep=LOCAL_VTEP,
                                remote_vteps=[REMOTE_VTEP]),
            uplink=UplinkSpec(veth_host_side=f"mupb{v:02d}h", veth_router_side=f"mupb{v:02d}r",
                              transit_ip=f"100.64.0.{10 + v}", nat_cidrs=[f"10.{v}.1.0/24"])
            if uplink else None,
            ports=ports))
    return nets


def taps(nets: list[NetworkSpec]) -> list[tuple[str, str]]:
    return [(f"mtapb{v:02d}p{p:02d}", n.bridge) for v, n in enumerate(nets)
            for p, port in enumerate(n.ports) if port.vtep is None]


def agent_pass(nets, network: NetworkReconciler, overlay: OverlayReconciler,
               uplink: UplinkReconciler | None = None) -> int:
    """What the agent's pass does for networks (agent/reconcile.py, steps 1 and 1a)."""
    acts = plan_network(nets, network.observe(nets))
    for a in acts:
        network.apply(a)
    routers = network.live_routers()
    oacts = plan_overlay(nets, overlay.observe(nets, routers), routers)
    for a in oacts:
        overlay.apply(a)
    if uplink is not None:
        errors = uplink.reconcile(nets, routers)
        assert not errors, errors
    return len(acts) + len(oacts)


def plug_taps(pairs: list[tuple[str, str]]) -> None:
    """What libvirt does for each guest NIC (in C): a tap joined to the bridge, up.

    One ``ip -batch`` stands in for libvirt, so the figure measures the agent,
    not a Python imitation of libvirt.
    """
    text = "".join(f"tuntap add dev {tap} mode tap\nlink set {tap} mtu 1450 master {bridge} up\n"
                   for tap, bridge in pairs)
    subprocess.run(["ip", "-batch", "-"], input=text, text=True, check=True)


def shell_build(nets: list[NetworkSpec], nsdir: Path) -> int:
    """The same end state, one command per object. Returns the number of commands."""
    cmds: list[list[str]] = []
    for n in nets:
        ns = str(nsdir / n.router_ns)
        nsx = ["nsenter", f"--net={ns}", "--"]
        gw = n.gateways[0]
        plen = gw.cidr.split("/")[1]
        cmds += [["ip", "link", "add", n.bridge, "mtu", "1450", "type", "bridge"],
                 ["ip", "link", "set", n.bridge, "up"],
                 ["touch", ns], ["unshare", f"--net={ns}", "true"],
                 ["ip", "link", "add", n.veth_bridge_side, "type", "veth", "peer", "name",
                  n.veth_router_side],
                 ["ip", "link", "set", n.veth_router_side, "address", n.router_mac, "mtu", "1450"],
                 ["ip", "link", "set", n.veth_router_side, "netns", ns],
                 ["ip", "link", "set", n.veth_bridge_side, "mtu", "1450", "master", n.bridge, "up"],
                 [*nsx, "ip", "link", "set", "lo", "up"],
                 [*nsx, "ip", "link", "set", n.veth_router_side, "up"],
                 [*nsx, "ip", "addr", "add", f"{gw.gateway_ip}/{plen}", "dev", n.veth_router_side],
                 [*nsx, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                 ["ip", "link", "add", n.overlay.device, "type", "vxlan", "id", str(n.vni),
                  "local", LOCAL_VTEP, "dstport", "4789", "nolearning"],
                 ["ip", "link", "set", n.overlay.device, "mtu", "1450", "master", n.bridge, "up"],
                 ["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", n.overlay.device,
                  "dst", REMOTE_VTEP]]
        for p in n.ports:
            if p.vtep:
                cmds.append(["bridge", "fdb", "append", p.mac, "dev", n.overlay.device,
                             "dst", p.vtep])
            cmds.append([*nsx, "ip", "neigh", "replace", p.ip, "lladdr", p.mac, "dev",
                         n.veth_router_side, "nud", "permanent"])
    for tap, bridge in taps(nets):
        cmds += [["ip", "tuntap", "add", "dev", tap, "mode", "tap"],
                 ["ip", "link", "set", tap, "mtu", "1450", "master", bridge, "up"]]
    for c in cmds:
        subprocess.run(c, check=True, stdout=subprocess.DEVNULL)
    return len(cmds)


def clean(nets: list[NetworkSpec], nsdir: Path) -> None:
    with netlink.ipr() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            if name.startswith(("mbr-b", "mvx-b", "mgwb", "mtapb", "mupb")):
                try:
                    ipr.link("del", index=link["index"])
                except OSError:
                    pass
    for n in nets:
        path = nsdir / n.router_ns
        if os.path.lexists(path):
            subprocess.run(["umount", str(path)], check=False, stderr=subprocess.DEVNULL)
            path.unlink()
    netlink.drop_all()
    # the agent's namespace code makes the directory a bind mount of itself
    for _ in range(3):
        if subprocess.run(["umount", str(nsdir)], stderr=subprocess.DEVNULL).returncode:
            break


def converge(nsdir: Path, with_uplink: bool) -> dict[str, float | int]:
    """Full converge, a steady pass and one added port with fresh reconcilers (a new agent)."""
    nets = spec(uplink=with_uplink)
    network = NetworkReconciler(nsdir)
    overlay = OverlayReconciler(network.ns_path)
    uplink = UplinkReconciler(network.ns_path, UPLINK, nsdir / "uplink.json") \
        if with_uplink else None
    t0 = time.perf_counter()
    n_acts = agent_pass(nets, network, overlay, uplink)
    plug_taps(taps(nets))
    full = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = agent_pass(nets, network, overlay, uplink)
    steady = time.perf_counter() - t0
    t0 = time.perf_counter()
    added_acts = agent_pass(spec(extra_port=True, uplink=with_uplink), network, overlay, uplink)
    added = time.perf_counter() - t0
    with netlink.ipr() as ipr:
        idx = ipr.link_lookup(ifname="mvx-b00")[0]
        fdb = {(e.get_attr("NDA_LLADDR"), e.get_attr("NDA_DST"))
               for e in ipr.fdb("dump", ifindex=idx) if e["ifindex"] == idx}
    assert ("52:54:00:00:01:ff", REMOTE_VTEP) in fdb, "added port missing from the FDB"
    assert again == 0, f"converged spec still planned {again} actions"
    if with_uplink:
        saved = subprocess.run(["nsenter", f"--net={nsdir / 'mrt-b07'}", "--", "iptables-save"],
                               capture_output=True, text=True, check=True).stdout
        assert "-j SNAT --to-source 100.64.0.17" in saved, "NAT rules missing"
    return {"full": full, "steady": steady, "added": added, "acts": n_acts,
            "added_acts": added_acts}


UPLINK = "mbup0"  # an empty bridge in the scratch namespace: nothing leaves it


def inside() -> None:
    nsdir = Path(tempfile.mkdtemp(prefix="miniecs-bench-net-"))
    nets = spec()
    try:
        core = converge(nsdir, with_uplink=False)
        clean(nets, nsdir)
        t0 = time.perf_counter()
        n_cmds = shell_build(nets, nsdir)
        shell = time.perf_counter() - t0
        clean(nets, nsdir)
        subprocess.run(["ip", "link", "add", UPLINK, "type", "bridge"], check=True)
        subprocess.run(["ip", "link", "set", UPLINK, "up"], check=True)
        nat = converge(nsdir, with_uplink=True)
    finally:
        clean(nets, nsdir)
        remove_host_nat()
        subprocess.run(["ip", "link", "del", UPLINK], check=False, stderr=subprocess.DEVNULL)
        shutil.rmtree(nsdir, ignore_errors=True)
    ports = VPCS * PORTS
    full, steady, added = core["full"], core["steady"], core["added"]
    print(f"spec: {VPCS} VPCs, {ports} ports ({len(taps(nets))} local taps, "
          f"{ports - len(taps(nets))} remote), 1 remote VTEP")
    print(f"agent full converge: {full:.3f} s ({core['acts']} actions + taps)")
    print(f"agent steady-state pass (nothing to do): {steady * 1000:.1f} ms")
    print(f"agent one added port: {added * 1000:.1f} ms ({core['added_acts']} actions)")
    print(f"one command per object: {shell:.3f} s ({n_cmds} commands)")
    print(f"with outbound NAT legs (uplink veth, routes, router iptables) in every VPC: "
          f"full {nat['full']:.3f} s, steady pass {nat['steady'] * 1000:.1f} ms, "
          f"one added port {nat['added'] * 1000:.1f} ms")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    print(f"HEADLINE: {ports} ports / {VPCS} VPCs converge in {full:.2f} s "
          f"(target < 2 s) vs {shell:.2f} s with one ip command per object "
          f"({shell / full:.1f}x); one added port applied in {added * 1000:.0f} ms; "
          f"with NAT legs {nat['full']:.2f} s / {nat['added'] * 1000:.0f} ms")


def cross_host() -> None:
    """2-host rig: from instance B Running until a guest on host A gets an ICMP reply from it."""
    import json
    import threading

    from tests.e2e.conftest import TINY_IMAGE
    from tests.e2e.test_vpc_overlay import _launch_on
    from tests.rig.cloud import Cloud

    c = Cloud(name="bnet")
    c.up(hosts=2)
    try:
        image = json.loads(c.cli("image", "import", "tiny", "--file", str(TINY_IMAGE), "--wait",
                                 "-o", "json").stdout)
        key_file = c.path / "key.pem"
        kp = c.post("/key-pairs", {"name": "bench"})
        key_file.write_text(kp["private_key"])
        key_file.chmod(0o600)
        vpc = c.post("/vpcs", {"name": "bench", "cidr_block": "10.40.0.0/16"})
        vsw = c.post("/vswitches", {"name": "b", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                    "cidr_block": "10.40.1.0/24"})
        sg = c.post("/security-groups", {"name": "b", "vpc_id": vpc["id"]})
        c.post(f"/security-groups/{sg['id']}/rules", {"direction": "ingress", "protocol": "all",
                                                       "peer_cidr": "10.40.1.0/24"})
        body = {"instance_type": "ecs.t1.nano", "image_id": image["id"], "vswitch_id": vsw["id"],
                "security_group_ids": [sg["id"]], "key_pair_id": kp["id"]}
        a = _launch_on(c, "h1", {**body, "name": "a", "private_ip_address": "10.40.1.10"})
        a = c.wait_status(f"/instances/{a['id']}", {"Running"}, timeout=180)
        assert c.ssh(a, "true", key_file).returncode == 0
        seen: dict[str, float] = {}

        def probe() -> None:
            c.ssh(a, "ping -i 0.1 -w 170 10.40.1.11 | grep -m1 'bytes from'", key_file,
                  timeout=200)
            seen["reply"] = time.monotonic()

        t = threading.Thread(target=probe)
        t.start()
        time.sleep(2)
        h1 = c.rig.hosts["h1"]
        created = time.monotonic()
        b = _launch_on(c, "h2", {**body, "name": "b", "private_ip_address": "10.40.1.11"})
        returned = time.monotonic()
        mac = b["mac_address"].lower()
        fdb_at = None
        while fdb_at is None and time.monotonic() - created < 30:
            out = subprocess.run(["ip", "netns", "exec", h1.netns, "bridge", "fdb", "show"],
                                 capture_output=True, text=True).stdout.lower()
            if any(line.startswith(mac) and " dst " in line for line in out.splitlines()):
                fdb_at = time.monotonic()
            else:
                time.sleep(0.01)
        while c.get(f"/instances/{b['id']}")["status"] != "Running":
            time.sleep(0.02)
        running = time.monotonic()
        t.join()
        port = f"{fdb_at - created:.2f} s" if fdb_at else "not within 30 s"
        print(f"cross-host: instance created on h2 (the API call, with h1 put in maintenance "
              f"and back, took {returned - created:.2f} s) -> its port's FDB entry on h1: "
              f"{port} (controller, spec long-poll, agent pass on h1)")
        print(f"cross-host: instance on h2 Running -> first ICMP reply to a guest on h1: "
              f"{seen['reply'] - running:.2f} s (guest boot included: the tiny guest answers "
              f"once its init configured eth0)")
        print(f"HEADLINE: one added port visible across hosts (FDB on the other host) in "
              f"{port} (target < 1 s); first ICMP reply {seen['reply'] - running:.1f} s after "
              "Running (guest boot included)")
    finally:
        c.down()


def main() -> int:
    if os.geteuid() != 0:
        print("run as root (network namespaces)", file=sys.stderr)
        return 2
    if "--cross-host" in sys.argv:
        cross_host()
        return 0
    if os.environ.get("MINIECS_BENCH_INSIDE") == NS.rsplit("-", 1)[0]:
        inside()
        return 0
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        env = dict(os.environ, MINIECS_BENCH_INSIDE=NS.rsplit("-", 1)[0])
        return subprocess.run(["nsenter", f"--net=/run/netns/{NS}", "--", sys.executable,
                               os.path.abspath(__file__)], env=env).returncode
    finally:
        subprocess.run(["ip", "netns", "delete", NS], check=False)


if __name__ == "__main__":
    sys.exit(main())
