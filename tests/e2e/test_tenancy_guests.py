"""Tenancy with real guests on two rig hosts: two projects, the same VPC block, the same
private address, the same key-pair name, and nothing of one reaches the other.

Project A: VPC 10.40.0.0/16, vSwitch 10.40.1.0/24; project B: the very same blocks.
Each project makes its own key pair called ``deploy`` (names belong to the project).
Guests (each serves its hostname on :8080 with busybox httpd):

    h1: a1 10.40.1.10 (A)
    h2: a2 10.40.1.11 (A)      b1 10.40.1.10 (B, a1's address, beside a2)

a2's traffic to 10.40.1.10 must cross to a1 on the other host, never to b1 on its
own; b1 must never see any of A's traffic, nor reach A's 10.40.1.11. Everything
tenant-side is done with the projects' own member keys (the admin only imports the
public image and steers placement with maintenance). Probes run inside guests over
SSH from the VPC's router namespace; ``miniecs ssh`` goes through the controller.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.e2e.conftest import TINY_IMAGE
from tests.rig.cloud import BIN
from tests.rig.leaks import snapshot, wait_no_leaks
from tests.tenancy_factories import Caller, make_project, missing_like

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

RIG_HOSTS = 2
SERVE = ("pidof httpd >/dev/null || { mkdir -p /www && hostname > /www/index.html && "
         "httpd -p 8080 -h /www; }; pidof httpd")
LISTEN = "rm -f /tmp/got; (nc -l -p 9999 > /tmp/got 2>&1 &) ; sleep 1"


def fetch(ip: str) -> str:
    return f"timeout 5 wget -q -O - http://{ip}:8080/"  # busybox `wget -T` segfaults


@pytest.fixture(scope="module")
def world(cloud):
    before = snapshot(cloud.rig)
    image = json.loads(cloud.cli("image", "import", "tiny", "--file", str(TINY_IMAGE),
                                 "--wait", "-o", "json").stdout)
    http = httpx.Client(base_url=cloud.url, timeout=60)
    admin = Caller(http, cloud.admin_token)
    projects = {"a": make_project(admin, "proj-a"), "b": make_project(admin, "proj-b")}
    nets, keys = {}, {}
    for p, caller in projects.items():
        key = caller.ok("POST", "/key-pairs", {"name": "deploy"})  # the same name in both
        keys[p] = cloud.path / f"deploy-{p}.pem"
        keys[p].write_text(key["private_key"])
        keys[p].chmod(0o600)
        vpc = caller.ok("POST", "/vpcs", {"name": "vpc", "cidr_block": "10.40.0.0/16"})
        vsw = caller.ok("POST", "/vswitches", {"name": "vsw", "vpc_id": vpc["id"],
                                               "zone_id": "zone-a", "cidr_block": "10.40.1.0/24"})
        sg = caller.ok("POST", "/security-groups", {"name": "open", "vpc_id": vpc["id"]})
        for direction in ("ingress", "egress"):
            caller.ok("POST", f"/security-groups/{sg['id']}/rules", {
                "direction": direction, "protocol": "all", "peer_cidr": "0.0.0.0/0"})
        nets[p] = {"key_pair": key["id"], "vswitch": vsw["id"], "sg": sg["id"]}

    hosts = {h["name"]: h["id"] for h in cloud.get("/hosts")["items"]}

    def launch(name: str, p: str, host: str, ip: str) -> dict:
        """As project ``p``'s member, on ``host`` (the admin parks the other host)."""
        others = [hid for hname, hid in hosts.items() if hname != host]
        try:
            for hid in others:
                cloud.request("PATCH", f"/hosts/{hid}", {"state": "maintenance"})
            return projects[p].ok("POST", "/instances", {
                "name": name, "hostname": name, "instance_type": "ecs.t1.nano",
                "image_id": image["id"], "vswitch_id": nets[p]["vswitch"],
                "security_group_ids": [nets[p]["sg"]], "key_pair_id": nets[p]["key_pair"],
                "private_ip_address": ip})
        finally:
            for hid in others:
                cloud.request("PATCH", f"/hosts/{hid}", {"state": "ready"})

    wanted = {"a1": ("a", "h1", "10.40.1.10"), "a2": ("a", "h2", "10.40.1.11"),
              "b1": ("b", "h2", "10.40.1.10")}
    created = {n: launch(n, *spec) for n, spec in wanted.items()}
    insts = {n: cloud.wait_status(f"/instances/{i['id']}", {"Running"}, timeout=300)
             for n, i in created.items()}
    state = {"insts": insts, "keys": keys, "projects": projects, "admin": admin,
             "before": before, "project_of": {n: spec[0] for n, spec in wanted.items()}}
    for name, (_p, host, _ip) in wanted.items():
        assert cloud.host_of(insts[name]).name == host
        proc = sh(cloud, state, name, SERVE)
        assert proc.returncode == 0, f"{name}: httpd: {proc.stdout}{proc.stderr}"
    try:
        yield state
    finally:
        http.close()


def sh(cloud, world, name: str, command: str, key: str | None = None,
       timeout: float = 90) -> subprocess.CompletedProcess:
    """``command`` in guest ``name`` over SSH from its VPC's router namespace, with its
    project's key (or project ``key``'s)."""
    key_file = world["keys"][key or world["project_of"][name]]
    return cloud.ssh(world["insts"][name], command, key_file, timeout=timeout)


def ok(cloud, world, name: str, command: str) -> str:
    proc = sh(cloud, world, name, command)
    assert proc.returncode == 0, f"{name}: {command!r}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def miniecs(cloud, world, p: str, *args: str) -> subprocess.CompletedProcess:
    """The real CLI with project ``p``'s member key."""
    env = dict(os.environ, MINIECS_ENDPOINT=cloud.url, MINIECS_TOKEN=world["projects"][p].key,
               MINIECS_CONFIG=str(cloud.path / f"cli-{p}.toml"))
    return subprocess.run([str(BIN / "miniecs"), *args], env=env, capture_output=True,
                          text=True, timeout=180)


def test_each_project_reaches_only_its_own_peer(cloud, world, no_leaks):
    # A across hosts, both ways: the answer is the peer's own identity
    got = ok(cloud, world, "a1", f"ping -c 2 -W 3 10.40.1.11 && {fetch('10.40.1.11')}")
    assert got.strip().splitlines()[-1] == "a2"
    # a2's 10.40.1.10 is a1 on the other host, not b1 (that address, on a2's own host)
    got = ok(cloud, world, "a2", f"ping -c 2 -W 3 10.40.1.10 && {fetch('10.40.1.10')}")
    assert got.strip().splitlines()[-1] == "a1"
    # b1's VPC has nobody at 10.40.1.11: a2 (A's) is not reached
    probe = sh(cloud, world, "b1", f"ping -c 2 -W 2 10.40.1.11 || true; {fetch('10.40.1.11')}")
    assert probe.returncode != 0 and "a2" not in probe.stdout, probe.stdout
    # and b1 answers as itself at its own address, from its own VPC
    assert ok(cloud, world, "b1", fetch("10.40.1.10")).strip() == "b1"


def test_b_never_sees_as_traffic(cloud, world, no_leaks):
    # a1 and b1 listen on the same address and port, each in its own VPC
    ok(cloud, world, "a1", LISTEN)
    ok(cloud, world, "b1", LISTEN)
    sh(cloud, world, "a2", "echo from-a2 | timeout 3 nc 10.40.1.10 9999")
    assert ok(cloud, world, "a1", "sleep 1; cat /tmp/got").strip() == "from-a2"
    assert ok(cloud, world, "b1", "cat /tmp/got; echo end").strip() == "end"
    # the other way: b1 cannot put a byte into a2 (10.40.1.11 is nobody in B)
    ok(cloud, world, "a2", LISTEN)
    sh(cloud, world, "b1", "echo from-b1 | timeout 3 nc 10.40.1.11 9999")
    assert ok(cloud, world, "a2", "cat /tmp/got; echo end").strip() == "end"


def test_project_b_cannot_get_into_as_instance(cloud, world, no_leaks):
    a1 = world["insts"]["a1"]
    a, b = world["projects"]["a"], world["projects"]["b"]
    # A's member reaches its guest through the controller, by name (its own listing)
    mine = miniecs(cloud, world, "a", "ssh", "a1", "-i", str(world["keys"]["a"]), "--",
                   "hostname")
    assert mine.returncode == 0 and mine.stdout.strip() == "a1", mine.stderr
    # B's member: the tunnel into a1 is refused exactly as one into a missing instance
    missing = missing_like(a1["id"])
    other = miniecs(cloud, world, "b", "ssh", a1["id"], "-i", str(world["keys"]["b"]), "--",
                    "hostname")
    nowhere = miniecs(cloud, world, "b", "ssh", missing, "-i", str(world["keys"]["b"]), "--",
                      "hostname")
    assert other.returncode == nowhere.returncode == 255, other.stderr
    assert "not found" in other.stderr and "a1" not in other.stdout
    assert other.stderr.replace(a1["id"], missing) == nowhere.stderr
    # by name a1 is nowhere in B's view
    by_name = miniecs(cloud, world, "b", "ssh", "a1", "-i", str(world["keys"]["b"]), "--", "true")
    assert by_name.returncode != 0 and "no instance with id or name 'a1'" in by_name.stderr
    # the console: 404 like a missing instance for B, a's own for A
    r_other = b.call("GET", f"/instances/{a1['id']}/console")
    r_missing = b.call("GET", f"/instances/{missing}/console")
    assert r_other.status_code == r_missing.status_code == 404
    assert r_other.json()["code"] == r_missing.json()["code"]
    assert a.call("GET", f"/instances/{a1['id']}/console").status_code == 200
    assert {i["id"] for i in b.ok("GET", "/instances")["items"]} == {world["insts"]["b1"]["id"]}
    # B's "deploy" key pair is not A's: its private key does not open a1, even from A's VPC
    refused = sh(cloud, world, "a1", "hostname", key="b")
    assert refused.returncode != 0 and "a1" not in refused.stdout


def test_deleting_everything_leaves_nothing(cloud, world):
    a, b = world["projects"]["a"], world["projects"]["b"]
    a1 = world["insts"]["a1"]["id"]
    assert b.call("DELETE", f"/instances/{a1}", force="true").status_code == 404
    assert a.call("GET", f"/instances/{a1}").json()["status"] == "Running"
    for name, inst in world["insts"].items():
        owner = a if world["project_of"][name] == "a" else b
        assert owner.call("DELETE", f"/instances/{inst['id']}", force="true").status_code < 300
    for inst in world["insts"].values():
        cloud.wait_gone(f"/instances/{inst['id']}", timeout=180)
    wait_no_leaks(cloud.rig, world["before"], timeout=60)
