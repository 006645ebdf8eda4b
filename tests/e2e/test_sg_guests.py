"""Security groups end to end: real guests in the rig, real traffic, the real agent.

Three tiny guests each serve HTTP on 80 and 8080 (busybox httpd from user
data). SSH comes from the VPC's router namespace, i.e. from the vSwitch
gateway, which security groups treat like any other source: each group
here admits tcp 22 from the gateway's /32 (a management rule), and the
probes use other ports. The finer semantics (range edges, ties, replies,
cut flows, anti-spoofing) are also covered on namespaces in
``tests/integration/test_sg_firewall.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import TINY_IMAGE
from tests.rig.leaks import snapshot, wait_no_leaks

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

USER_DATA = """#!/bin/sh
mkdir -p /www && echo sg-ok > /www/index.html
httpd -p 80 -h /www
httpd -p 8080 -h /www
"""
GATEWAY = "10.31.1.1"


@pytest.fixture(scope="module")
def region(cloud):
    image = json.loads(cloud.cli("image", "import", "tiny", "--file", str(TINY_IMAGE),
                                 "--wait", "-o", "json").stdout)
    key_file = cloud.path / "sg-key.pem"
    keypair = cloud.post("/key-pairs", {"name": "sg-key"})
    key_file.write_text(keypair["private_key"])
    key_file.chmod(0o600)
    vpc = cloud.post("/vpcs", {"name": "sg-vpc", "cidr_block": "10.31.0.0/16"})
    vsw = cloud.post("/vswitches", {"name": "sg-vsw", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                    "cidr_block": "10.31.1.0/24"})
    groups = {}
    for name in ("sga", "sgb", "sgc"):
        groups[name] = cloud.post("/security-groups", {"name": name, "vpc_id": vpc["id"]})
        cloud.cli("sg", "rule", "add", name, "--protocol", "tcp", "--port", "22/22",
                  "--peer", f"{GATEWAY}/32", "--description", "ssh from the router")
    body = {"instance_type": "ecs.t1.nano", "image_id": image["id"], "vswitch_id": vsw["id"],
            "key_pair_id": keypair["id"], "user_data": USER_DATA}
    baseline = snapshot(cloud.rig)
    plan = (("g1", "sga"), ("g2", "sga"), ("g3", "sgb"))
    made = [cloud.post("/instances", {**body, "name": n, "hostname": n,
                                      "security_group_ids": [groups[g]["id"]]}) for n, g in plan]
    guests = {}
    try:
        for inst in made:
            guests[inst["name"]] = cloud.wait_status(f"/instances/{inst['id']}", {"Running"},
                                                     timeout=240)
        for g in guests.values():
            wait_ssh(cloud, key_file, g)
        yield {"key_file": key_file, "groups": groups, "guests": guests, "vpc": vpc,
               "made": made, "baseline": baseline}
    finally:
        for inst in made:
            cloud.request("DELETE", f"/instances/{inst['id']}", ok=False, force="true")
        for inst in made:
            cloud.wait_gone(f"/instances/{inst['id']}")


def wait_ssh(cloud, key_file, inst, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        proc = cloud.ssh(inst, "wget -q -O - http://127.0.0.1/", key_file, timeout=60)
        if proc.returncode == 0 and "sg-ok" in proc.stdout:
            return
        assert time.monotonic() < deadline, f"{inst['name']}: {proc.stdout}{proc.stderr}"
        time.sleep(1)


def http(cloud, region, src: str, dst: str, port: int = 80) -> bool:
    """Can guest ``src`` open a new HTTP connection to guest ``dst``?"""
    g = region["guests"]
    ip = g[dst]["private_ip_address"]
    # busybox nc, not wget: the tiny image's wget segfaults with -T on a remote host
    proc = cloud.ssh(g[src], f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}; true",
                     region["key_file"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    return "sg-ok" in proc.stdout


def http_from_router(cloud, region, dst: str, port: int = 80) -> bool:
    inst = region["guests"][dst]
    code = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])),"
            " timeout=3); print('open')\nexcept OSError: print('closed')")
    out = subprocess.run(["nsenter", f"--net={cloud.router_netns(inst)}", "--", sys.executable,
                          "-c", code, inst["private_ip_address"], str(port)],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip() == "open"


def eventually(check, expected: bool, timeout: float = 10.0) -> float:
    """Seconds until ``check()`` returns ``expected``; fails after ``timeout``."""
    t0 = time.monotonic()
    while True:
        if check() == expected:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"still {not expected} after {timeout}s"
        time.sleep(0.2)


def gid(region, name):
    return region["groups"][name]["id"]


def diagnostics(cloud, region) -> str:
    """The host's firewall and the agent's last words, for a failing assertion."""
    host = cloud.host_of(region["guests"]["g1"])
    out = []
    for argv in (["iptables-save", "-c"], ["ebtables-save"], ["ipset", "list"],
                 ["conntrack", "-L"]):
        out.append(subprocess.run(["ip", "netns", "exec", host.netns, *argv],
                                  capture_output=True, text=True).stdout)
    out.append(host.agent_log.read_text()[-3000:])
    out.append(json.dumps({k: (g["private_ip_address"], g["mac_address"])
                           for k, g in region["guests"].items()}))
    if os.environ.get("SG_E2E_HOLD"):  # keep the rig for a look by hand
        time.sleep(float(os.environ["SG_E2E_HOLD"]))
    return "\n".join(out)


def test_default_normal_group(cloud, region):
    assert http(cloud, region, "g2", "g1"), diagnostics(cloud, region)
    assert not http(cloud, region, "g3", "g1"), "another group's member is kept out"
    assert not http_from_router(cloud, region, "g1"), "non-members (the router) are kept out"
    assert http(cloud, region, "g1", "g2", 8080), "egress is open"
    verdict = json.loads(cloud.cli(
        "sg", "explain", "--instance", region["guests"]["g1"]["id"], "--direction", "ingress",
        "--protocol", "tcp", "--port", "80",
        "--peer", region["guests"]["g3"]["private_ip_address"], "-o", "json").stdout)
    assert (verdict["verdict"], verdict["decided_by"]) == ("drop", "default")
    verdict = json.loads(cloud.cli(
        "sg", "explain", "--instance", "g1", "--protocol", "tcp", "--port", "80",
        "--peer", region["guests"]["g2"]["private_ip_address"], "-o", "json").stdout)
    assert (verdict["verdict"], verdict["decided_by"]) == ("accept", f"inner:{gid(region, 'sga')}")


def test_inner_access_drop(cloud, region):
    cloud.cli("sg", "update", "sga", "--inner-access", "drop")
    try:
        eventually(lambda: http(cloud, region, "g2", "g1"), False)
    finally:
        cloud.cli("sg", "update", "sga", "--inner-access", "accept")
    eventually(lambda: http(cloud, region, "g2", "g1"), True)


def test_priorities_and_ports(cloud, region):
    acc = json.loads(cloud.cli("sg", "rule", "add", "sgb", "--port", "80/80", "--priority", "10",
                               "-o", "json").stdout)
    drop = json.loads(cloud.cli("sg", "rule", "add", "sgb", "--port", "80/80", "--priority", "5",
                                "--policy", "drop", "-o", "json").stdout)
    time.sleep(1.5)
    assert not http(cloud, region, "g1", "g3")
    cloud.cli("sg", "rule", "remove", "sgb", drop["id"])
    eventually(lambda: http(cloud, region, "g1", "g3"), True)
    assert not http(cloud, region, "g1", "g3", 8080), "only port 80 opened"
    hits = json.loads(cloud.cli("sg", "rule", "list", "sgb", "--hits", "-o", "json").stdout)
    deadline = time.monotonic() + 20
    while not any(r["id"] == acc["id"] and r["hits"] > 0 for r in hits["items"]):
        assert time.monotonic() < deadline, f"no hits on {acc['id']}: {hits}"
        time.sleep(1)
        hits = json.loads(cloud.cli("sg", "rule", "list", "sgb", "--hits", "-o", "json").stdout)
    cloud.cli("sg", "rule", "remove", "sgb", acc["id"])
    eventually(lambda: http(cloud, region, "g1", "g3"), False)


def test_source_group_membership_opens_within_a_second(cloud, region):
    cloud.cli("sg", "rule", "add", "sgb", "--port", "80/80", "--peer-group", "sgc")
    time.sleep(1.5)
    assert not http(cloud, region, "g1", "g3")
    cloud.cli("sg", "join", "sgc", "--instance", "g1")
    try:
        took = eventually(lambda: http(cloud, region, "g1", "g3"), True)
        assert took < 5.0  # includes an SSH round trip per probe under TCG
        assert not http(cloud, region, "g2", "g3"), "only the new member is let in"
    finally:
        cloud.cli("sg", "leave", "sgc", "--instance", "g1")
    eventually(lambda: http(cloud, region, "g1", "g3"), False)


def test_agent_restores_flushed_rules_and_keeps_foreign_ones(cloud, region):
    host = cloud.host_of(region["guests"]["g1"])
    ipt = ["ip", "netns", "exec", host.netns, "iptables"]
    subprocess.run([*ipt, "-N", "FOREIGN-SG"], check=True)
    subprocess.run([*ipt, "-A", "FORWARD", "-s", "192.0.2.7/32", "-j", "FOREIGN-SG"], check=True)
    try:
        # a "reboot": miniecs's dispatch chain loses its rules
        subprocess.run([*ipt, "-F", "mecs-sg"], check=True)
        eventually(lambda: http(cloud, region, "g3", "g1"), False, timeout=20)
        saved = subprocess.run(["ip", "netns", "exec", host.netns, "iptables-save", "-t",
                                "filter"], capture_output=True, text=True, check=True).stdout
        assert "-j mecs-i-" in saved
        assert ":FOREIGN-SG" in saved and "-s 192.0.2.7/32 -j FOREIGN-SG" in saved
    finally:
        subprocess.run([*ipt, "-D", "FORWARD", "-s", "192.0.2.7/32", "-j", "FOREIGN-SG"])
        subprocess.run([*ipt, "-X", "FOREIGN-SG"])


def test_bad_input_is_refused_with_codes(cloud, region):
    sga = gid(region, "sga")
    other_vpc = cloud.post("/vpcs", {"name": "sg-other", "cidr_block": "10.32.0.0/16"})
    try:
        foreign = cloud.post("/security-groups", {"name": "foreign", "vpc_id": other_vpc["id"]})
        cases = [
            ({"direction": "ingress", "protocol": "tcp", "port_range": "0/22"},
             "InvalidPortRange.Malformed"),
            ({"direction": "ingress", "protocol": "tcp", "port_range": "80/22"},
             "InvalidPortRange.Reversed"),
            ({"direction": "ingress", "protocol": "tcp", "port_range": "22/22", "priority": 0},
             "InvalidPriority.Malformed"),
            ({"direction": "ingress", "protocol": "tcp", "port_range": "22/22", "priority": 101},
             "InvalidPriority.Malformed"),
            ({"direction": "ingress", "protocol": "gre"}, "InvalidIpProtocol.Malformed"),
            ({"direction": "ingress", "protocol": "tcp", "port_range": "22/22",
              "peer_cidr": "10.0.0.1/8"}, "InvalidSourceCidrIp.Malformed"),
            ({"direction": "ingress", "protocol": "tcp", "port_range": "22/22",
              "peer_group_id": foreign["id"]}, "InvalidSecurityGroup.VpcMismatch"),
        ]
        before = cloud.get(f"/security-groups/{sga}/rules")["items"]
        for body, code in cases:
            with cloud.api as api:
                r = api.post(f"/security-groups/{sga}/rules", json=body)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["code"] == code, (body, r.json())
        assert cloud.get(f"/security-groups/{sga}/rules")["items"] == before
        with cloud.api as api:
            r = api.post(f"/security-groups/{foreign['id']}/join",
                         json={"instance_id": region["guests"]["g1"]["id"]})
        assert (r.status_code, r.json()["code"]) == (400, "InvalidSecurityGroupId.VpcMismatch")
        cloud.delete(f"/security-groups/{foreign['id']}")
    finally:
        cloud.delete(f"/vpcs/{other_vpc['id']}")


def test_zz_deleting_the_guests_leaves_no_chain_set_or_rule(cloud, region):
    for inst in region["made"]:
        cloud.delete(f"/instances/{inst['id']}", force="true")
    for inst in region["made"]:
        cloud.wait_gone(f"/instances/{inst['id']}")
    wait_no_leaks(cloud.rig, region["baseline"], timeout=60)
    host = next(iter(cloud.rig.hosts.values()))
    for argv in (["iptables-save"], ["ebtables-save"], ["ipset", "list", "-n"]):
        out = subprocess.run(["ip", "netns", "exec", host.netns, *argv], capture_output=True,
                             text=True).stdout
        assert "mecs-" not in out, out
