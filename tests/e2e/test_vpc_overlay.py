"""VPC networking across two rig hosts, with real guests and real traffic.

Two VPCs with the same block 10.30.0.0/16. VPC A: vSwitch a1 (10.30.1.0/24,
outbound NAT) and a2 (10.30.2.0/24, no NAT); VPC B: vSwitch b1
(10.30.1.0/24). Guests (each serves its hostname on :8080 with busybox httpd):

    h1: vpca-1 10.30.1.10 (a1)      vpcb-1 10.30.1.11 (b1, = vpca-2's address)
    h2: vpca-2 10.30.1.11 (a1)      vpca-3 10.30.2.10 (a2)

Security groups are opened wide where the API has rules (that feature comes
in its own issue). Probes run inside guests over SSH from the VPC's router
namespace; the "internet" is the rig's internet namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import TINY_IMAGE
from tests.rig.leaks import snapshot, wait_no_leaks
from tests.rig.rig import INTERNET_IP

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

RIG_HOSTS = 2
SERVE = ("pidof httpd >/dev/null || { mkdir -p /www && hostname > /www/index.html && "
         "httpd -p 8080 -h /www; }; pidof httpd")
INET_PORT = 8000


def _open_group(cloud, sg_id: str) -> None:
    for direction in ("ingress", "egress"):
        cloud.request("POST", f"/security-groups/{sg_id}/rules",
                      {"direction": direction, "protocol": "all", "peer_cidr": "0.0.0.0/0"},
                      ok=False)


def _launch_on(cloud, host_name: str, body: dict) -> dict:
    """Create an instance on one rig host (the others in maintenance meanwhile)."""
    hosts = cloud.get("/hosts")["items"]
    others = [h for h in hosts if h["name"] != host_name]
    try:
        for h in others:
            cloud.request("PATCH", f"/hosts/{h['id']}", {"state": "maintenance"})
        inst = cloud.post("/instances", body)
    finally:
        for h in others:
            cloud.request("PATCH", f"/hosts/{h['id']}", {"state": "ready"})
    return inst


@pytest.fixture(scope="module")
def net(cloud):
    before = snapshot(cloud.rig)
    image = json.loads(cloud.cli("image", "import", "tiny", "--file", str(TINY_IMAGE),
                                 "--wait", "-o", "json").stdout)
    key_file = cloud.path / "vpc-key.pem"
    keypair = cloud.post("/key-pairs", {"name": "vpc-key"})
    key_file.write_text(keypair["private_key"])
    key_file.chmod(0o600)
    vpc_a = cloud.post("/vpcs", {"name": "vpc-a", "cidr_block": "10.30.0.0/16"})
    vpc_b = cloud.post("/vpcs", {"name": "vpc-b", "cidr_block": "10.30.0.0/16"})
    a1 = json.loads(cloud.cli("vswitch", "create", "a1", "--vpc", vpc_a["id"], "--zone", "zone-a",
                              "--cidr", "10.30.1.0/24", "--nat", "-o", "json").stdout)
    assert a1["nat_enabled"] is True
    a2 = cloud.post("/vswitches", {"name": "a2", "vpc_id": vpc_a["id"], "zone_id": "zone-a",
                                   "cidr_block": "10.30.2.0/24"})
    b1 = cloud.post("/vswitches", {"name": "b1", "vpc_id": vpc_b["id"], "zone_id": "zone-a",
                                   "cidr_block": "10.30.1.0/24"})
    sg_a = cloud.post("/security-groups", {"name": "sg-a", "vpc_id": vpc_a["id"]})
    sg_b = cloud.post("/security-groups", {"name": "sg-b", "vpc_id": vpc_b["id"]})
    _open_group(cloud, sg_a["id"])
    _open_group(cloud, sg_b["id"])

    def body(name, vsw, sg, ip):
        return {"name": name, "hostname": name, "instance_type": "ecs.t1.nano",
                "image_id": image["id"], "vswitch_id": vsw["id"], "security_group_ids": [sg["id"]],
                "key_pair_id": keypair["id"], "private_ip_address": ip}

    wanted = {"vpca-1": ("h1", body("vpca-1", a1, sg_a, "10.30.1.10")),
              "vpcb-1": ("h1", body("vpcb-1", b1, sg_b, "10.30.1.11")),
              "vpca-2": ("h2", body("vpca-2", a1, sg_a, "10.30.1.11")),
              "vpca-3": ("h2", body("vpca-3", a2, sg_a, "10.30.2.10"))}
    created = {name: _launch_on(cloud, host, b) for name, (host, b) in wanted.items()}
    insts = {name: cloud.wait_status(f"/instances/{i['id']}", {"Running"}, timeout=180)
             for name, i in created.items()}
    for name, (host, _b) in wanted.items():
        assert cloud.host_of(insts[name]).name == host
        proc = cloud.ssh(insts[name], SERVE, key_file)
        assert proc.returncode == 0, f"{name}: httpd: {proc.stdout}{proc.stderr}"
    # an HTTP server in the internet namespace
    www = cloud.path / "inet-www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("internet-server\n")
    server = subprocess.Popen(
        cloud.rig.internet_argv([sys.executable, "-m", "http.server", str(INET_PORT),
                                 "--bind", INTERNET_IP, "--directory", str(www)]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state = {"insts": insts, "key_file": key_file, "vpc_a": vpc_a, "vpc_b": vpc_b,
             "a1": a1, "a2": a2, "b1": b1, "before": before, "image": image, "sg_a": sg_a}
    try:
        yield state
    finally:
        server.terminate()
        server.wait(timeout=10)


def sh(cloud, net, name: str, command: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return cloud.ssh(net["insts"][name], command, net["key_file"], timeout=timeout)


def ok(cloud, net, name: str, command: str) -> str:
    proc = sh(cloud, net, name, command)
    assert proc.returncode == 0, f"{name}: {command!r}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def fetch(ip: str, port: int = 8080) -> str:
    # not `wget -T`: the tiny image's busybox wget segfaults with it (the "exit 255" of old:
    # paramiko reports a command killed by a signal as status -1)
    return f"timeout 5 wget -q -O - http://{ip}:{port}/"


def inet(cloud, argv: list[str], timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(cloud.rig.internet_argv(argv), capture_output=True, text=True,
                          timeout=timeout)


def inet_fetch(cloud, ip: str, port: int = 8080) -> str | None:
    probe = ("import sys,urllib.request;print(urllib.request.urlopen("
             f"'http://{ip}:{port}/', timeout=3).read().decode().strip())")
    proc = inet(cloud, [sys.executable, "-c", probe])
    return proc.stdout.strip() if proc.returncode == 0 else None


def wait_for(fn, timeout: float = 30.0, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def test_same_vswitch_across_hosts_icmp_and_tcp_both_ways(cloud, net):
    assert "vpca-2" in ok(cloud, net, "vpca-1", f"ping -c 2 -W 3 10.30.1.11 && {fetch('10.30.1.11')}")
    assert "vpca-1" in ok(cloud, net, "vpca-2", f"ping -c 2 -W 3 10.30.1.10 && {fetch('10.30.1.10')}")


def test_different_vswitches_route_across_hosts(cloud, net):
    assert "vpca-3" in ok(cloud, net, "vpca-1", f"ping -c 2 -W 3 10.30.2.10 && {fetch('10.30.2.10')}")
    assert "vpca-1" in ok(cloud, net, "vpca-3", f"ping -c 2 -W 3 10.30.1.10 && {fetch('10.30.1.10')}")


def test_overlapping_vpcs_never_meet(cloud, net):
    # vpcb-1 holds vpca-2's address: VPC A still reaches its own 10.30.1.11
    assert ok(cloud, net, "vpca-1", fetch("10.30.1.11")).strip() == "vpca-2"
    # vpca-1 listens on TCP 9999 while vpcb-1 probes 10.30.1.10 (vpca-1's address, nobody's
    # in B); the tiny image's busybox nc has no UDP
    listen = "rm -f /tmp/got; (nc -l -p 9999 > /tmp/got 2>&1 &) ; sleep 1"
    ok(cloud, net, "vpca-1", listen)
    probe = sh(cloud, net, "vpcb-1",
               "echo leak | timeout 3 nc 10.30.1.10 9999; "
               f"ping -c 2 -W 2 10.30.1.10 || true; {fetch('10.30.1.10')}")
    assert probe.returncode != 0, "VPC B reached an address that only VPC A has"
    assert ok(cloud, net, "vpca-1", "cat /tmp/got; echo end").strip() == "end"
    # and the other way round: nothing from VPC A reaches vpcb-1 on its host
    ok(cloud, net, "vpcb-1", listen)
    sh(cloud, net, "vpca-1", "echo leak | timeout 3 nc 10.30.1.11 9999")
    assert ok(cloud, net, "vpcb-1", "cat /tmp/got; echo end").strip() == "end"
    # (vpca-1's 10.30.1.11 is vpca-2, on the other host: prove the probe itself works)
    ok(cloud, net, "vpca-2", listen)
    sh(cloud, net, "vpca-1", "echo reached | timeout 3 nc 10.30.1.11 9999")
    assert ok(cloud, net, "vpca-2", "sleep 1; cat /tmp/got").strip() == "reached"


def test_outbound_nat_only_where_enabled(cloud, net):
    got = ok(cloud, net, "vpca-1", fetch(INTERNET_IP, INET_PORT))
    assert got.strip() == "internet-server"
    assert sh(cloud, net, "vpca-3", fetch(INTERNET_IP, INET_PORT)).returncode != 0
    assert sh(cloud, net, "vpcb-1", fetch(INTERNET_IP, INET_PORT)).returncode != 0


def test_eip_reaches_instance_and_follows_association(cloud, net):
    eip = json.loads(cloud.cli("eip", "allocate", "--name", "web", "-o", "json").stdout)
    ip = eip["ip_address"]
    assert inet_fetch(cloud, ip) is None
    inst3 = net["insts"]["vpca-3"]
    cloud.cli("eip", "associate", eip["id"], "--instance", inst3["id"])
    assert wait_for(lambda: inet_fetch(cloud, ip)) == "vpca-3"
    # the EIP also carries vpca-3's own outbound traffic (its vSwitch has no NAT)
    assert ok(cloud, net, "vpca-3", fetch(INTERNET_IP, INET_PORT)).strip() == "internet-server"
    # bad input: associated twice, released while associated, outside the pool
    again = cloud.request("POST", f"/eips/{eip['id']}/associate",
                          {"instance_id": net["insts"]["vpca-1"]["id"]}, ok=False)
    assert again["code"] == "InvalidEipStatus.InUse"
    assert cloud.request("DELETE", f"/eips/{eip['id']}", ok=False)["code"] == \
        "InvalidEipStatus.InUse"
    outside = cloud.request("POST", "/eips", {"ip_address": "198.51.100.7"}, ok=False)
    assert outside["code"] == "InvalidIpAddress.NotInPool"

    cloud.cli("eip", "disassociate", eip["id"])
    assert wait_for(lambda: inet_fetch(cloud, ip) is None, timeout=20)
    # the EIP moves to an instance on the other host
    cloud.cli("eip", "associate", eip["id"], "--instance", net["insts"]["vpca-1"]["id"])
    assert wait_for(lambda: inet_fetch(cloud, ip), timeout=40) == "vpca-1"
    cloud.cli("eip", "disassociate", eip["id"])
    cloud.cli("eip", "release", eip["id"])


def test_bad_input(cloud, net):
    overl = cloud.request("POST", "/vswitches", {"name": "x", "vpc_id": net["vpc_a"]["id"],
                                                 "zone_id": "zone-a",
                                                 "cidr_block": "10.30.1.128/25"}, ok=False)
    assert overl["code"] == "InvalidVSwitchCidr.Overlapped"
    busy = cloud.request("DELETE", f"/vpcs/{net['vpc_b']['id']}", ok=False)
    assert busy["code"] == "DependencyViolation.Instance"


def test_miniecs_ssh_through_the_controller(cloud, net):
    """From the root namespace, which has no route into any VPC."""
    inst = net["insts"]["vpca-3"]
    got = cloud.cli("ssh", inst["id"], "--identity", str(net["key_file"]), "--",
                    "hostname; echo err >&2; exit 3", check=False)
    assert got.returncode == 3, got.stderr
    assert got.stdout.strip() == "vpca-3"
    assert "err" in got.stderr
    # by name, across hosts, and the VPC with the overlapping block reaches its own guest
    assert cloud.cli("ssh", "vpcb-1", "-i", str(net["key_file"]), "--",
                     "hostname").stdout.strip() == "vpcb-1"
    # only the admin token opens tunnels
    bad = subprocess.run([sys.executable, "-m", "controller.cli.main", "ssh", inst["id"],
                          "-i", str(net["key_file"]), "--", "true"],
                         env=dict(os.environ, MINIECS_ENDPOINT=cloud.url, MINIECS_TOKEN="nope",
                                  MINIECS_CONFIG=str(cloud.path / "cli.toml")),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "admin token" in bad.stderr, bad.stderr


def test_dhcp_hands_each_guest_its_own_address_from_its_own_host(cloud, net):
    for name, ip in (("vpca-1", "10.30.1.10"), ("vpca-2", "10.30.1.11"), ("vpcb-1", "10.30.1.11")):
        out = ok(cloud, net, name, "timeout 20 udhcpc -i eth0 -n -q -f -t 3 -T 2 -s /bin/true 2>&1")
        assert f"lease of {ip} obtained from" in out, out
        assert "NAK" not in out, out  # a remote router never hears the broadcast


def test_agent_rebuilds_flushed_network(cloud, net):
    inst = net["insts"]["vpca-2"]
    host = cloud.host_of(inst)
    host.stop_agent(signal.SIGKILL)
    links = json.loads(subprocess.run(["ip", "-n", host.netns, "-j", "link", "show"],
                                      capture_output=True, text=True).stdout)
    for link in links:
        if link["ifname"].startswith(("mbr-", "mvx-", "mgw", "mup")):
            subprocess.run(["ip", "-n", host.netns, "link", "del", link["ifname"]], check=False)
    netns_dir = host.agent_state_dir / "netns"
    for ns in netns_dir.iterdir():
        subprocess.run(["umount", str(ns)], check=False)
        ns.unlink()
    assert sh(cloud, net, "vpca-1", "ping -c 1 -W 2 10.30.1.11").returncode != 0
    cloud.start_agent(host)
    got = wait_for(lambda: sh(cloud, net, "vpca-1", fetch("10.30.1.11"), timeout=30).stdout.strip(),
                   timeout=60)
    assert got == "vpca-2"


def test_deleting_everything_leaves_nothing_on_any_host(cloud, net):
    for inst in net["insts"].values():
        cloud.delete(f"/instances/{inst['id']}", force="true")
    for inst in net["insts"].values():
        cloud.wait_gone(f"/instances/{inst['id']}")
    wait_no_leaks(cloud.rig, net["before"], timeout=60)
    for host in cloud.rig.hosts.values():
        fdb = subprocess.run(["ip", "netns", "exec", host.netns, "bridge", "fdb", "show"],
                             capture_output=True, text=True).stdout
        assert "mvx-" not in fdb
        nat = subprocess.run(["ip", "netns", "exec", host.netns, "iptables-save", "-t", "nat"],
                             capture_output=True, text=True).stdout
        assert "miniecs" not in nat

