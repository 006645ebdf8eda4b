"""Security groups with real guests: cut flows, anti-spoofing, restart + flush restore.

Three tiny guests on one host: ``a`` in group ``fla``, ``b`` and ``c`` in
group ``flb``. SSH comes from the VPC's router namespace (the vSwitch
gateway), admitted in each group by a tcp 22 rule from the gateway's /32.

* stateful cut: two long-lived TCP streams from ``a`` to ``b`` (ports 5001
  and 5002, each admitted by its own rule); removing the 5001 rule stops the
  5001 stream at once while the 5002 stream keeps flowing;
* anti-spoofing: ``a`` takes ``c``'s IP (secondary address, pings from it),
  then ``c``'s MAC; ``b`` counts the echo requests that reach it (none may),
  and ``c`` stays reachable from ``b`` while it is impersonated;
* a foreign iptables chain and rule and a foreign ebtables chain survive an
  agent SIGKILL, a flush of miniecs's chains, sets and anti-spoofing table by
  hand, and the restart that restores the exact rules.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest

from agent.firewall_render import SPOOF_TABLE
from agent.nft import Nft
from tests.e2e.conftest import TINY_IMAGE
from tests.rig.leaks import snapshot, wait_no_leaks

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

CIDR = "10.33.0.0/16"
GATEWAY = "10.33.1.1"


@pytest.fixture(scope="module")
def region(cloud):
    image = json.loads(cloud.cli("image", "import", "tiny", "--file", str(TINY_IMAGE),
                                 "--wait", "-o", "json").stdout)
    key_file = cloud.path / "flow-key.pem"
    keypair = cloud.post("/key-pairs", {"name": "flow-key"})
    key_file.write_text(keypair["private_key"])
    key_file.chmod(0o600)
    vpc = cloud.post("/vpcs", {"name": "flow-vpc", "cidr_block": CIDR})
    vsw = cloud.post("/vswitches", {"name": "flow-vsw", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                    "cidr_block": "10.33.1.0/24"})
    groups = {}
    for name in ("fla", "flb"):
        groups[name] = cloud.post("/security-groups", {"name": name, "vpc_id": vpc["id"]})
        cloud.cli("sg", "rule", "add", name, "--protocol", "tcp", "--port", "22/22",
                  "--peer", f"{GATEWAY}/32", "--description", "ssh from the router")
    rules = {}
    for port in (5001, 5002):
        rules[port] = json.loads(cloud.cli(
            "sg", "rule", "add", "flb", "--protocol", "tcp", "--port", f"{port}/{port}",
            "--peer", CIDR, "-o", "json").stdout)
    cloud.cli("sg", "rule", "add", "flb", "--protocol", "icmp", "--peer", CIDR)
    body = {"instance_type": "ecs.t1.nano", "image_id": image["id"], "vswitch_id": vsw["id"],
            "key_pair_id": keypair["id"]}
    baseline = snapshot(cloud.rig)
    plan = (("a", "fla"), ("b", "flb"), ("c", "flb"))
    made = [cloud.post("/instances", {**body, "name": n, "hostname": n,
                                      "security_group_ids": [groups[g]["id"]]}) for n, g in plan]
    guests = {}
    try:
        for inst in made:
            guests[inst["name"]] = cloud.wait_status(f"/instances/{inst['id']}", {"Running"},
                                                     timeout=300)
        for g in guests.values():
            wait_ssh(cloud, key_file, g)
        yield {"key_file": key_file, "groups": groups, "guests": guests, "rules": rules,
               "made": made, "baseline": baseline}
    finally:
        for inst in made:
            cloud.request("DELETE", f"/instances/{inst['id']}", ok=False, force="true")
        for inst in made:
            cloud.wait_gone(f"/instances/{inst['id']}")


def wait_ssh(cloud, key_file, inst, timeout=180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        proc = cloud.ssh(inst, "echo up", key_file, timeout=60)
        if proc.returncode == 0 and "up" in proc.stdout:
            return
        assert time.monotonic() < deadline, f"{inst['name']}: {proc.stdout}{proc.stderr}"
        time.sleep(2)


def sh(cloud, region, name: str, command: str, timeout: float = 90.0) -> str:
    proc = cloud.ssh(region["guests"][name], command, region["key_file"], timeout=timeout)
    assert proc.returncode == 0, f"{name}: {command!r}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def ip(region, name: str) -> str:
    return region["guests"][name]["private_ip_address"]


def mac(region, name: str) -> str:
    return region["guests"][name]["mac_address"].lower()


def in_echos(cloud, region, name: str) -> int:
    """Echo requests the guest's kernel received (``Icmp: InEchos`` of /proc/net/snmp)."""
    lines = [ln.split() for ln in sh(cloud, region, name, "grep '^Icmp:' /proc/net/snmp")
             .splitlines()]
    head, values = lines[0], lines[1]
    return int(values[head.index("InEchos")])


def ping_replies(cloud, region, src: str, dst_ip: str, count: int = 3,
                 extra: str = "") -> int:
    out = sh(cloud, region, src, f"ping -c {count} -w {count + 3} {extra} {dst_ip} 2>&1; true")
    m = re.search(r"(\d+) packets received", out)
    return int(m.group(1)) if m else 0


def sizes(cloud, region) -> tuple[int, int]:
    out = sh(cloud, region, "b", "wc -c < /tmp/in5001; wc -c < /tmp/in5002")
    first, second = out.split()
    return int(first), int(second)


def test_removing_a_rule_cuts_exactly_its_open_flows(cloud, region):
    b_ip = ip(region, "b")
    for port in (5001, 5002):
        # busybox nc -l exits once its stdin ends: give it one that never does
        sh(cloud, region, "b", f"setsid sh -c 'sleep 100000 | nc -l -p {port} > /tmp/in{port}' "
                               "</dev/null >/dev/null 2>&1 &")
    time.sleep(1)
    for port in (5001, 5002):
        sh(cloud, region, "a", "setsid sh -c 'while true; do echo flowing; sleep 0.3; done | "
                               f"nc {b_ip} {port}' </dev/null >/dev/null 2>&1 &")
    # both streams flow
    deadline = time.monotonic() + 30
    first = sizes(cloud, region)
    while True:
        time.sleep(2)
        now = sizes(cloud, region)
        if now[0] > first[0] and now[1] > first[1]:
            break
        assert time.monotonic() < deadline, f"streams not flowing: {first} -> {now}"
    cloud.cli("sg", "rule", "remove", "flb", region["rules"][5001]["id"])
    # the 5001 stream stops; the 5002 stream, admitted by a rule still present, goes on
    deadline = time.monotonic() + 30
    prev = sizes(cloud, region)
    while True:
        time.sleep(3)
        now = sizes(cloud, region)
        if now[0] == prev[0] and now[1] > prev[1]:
            break
        assert time.monotonic() < deadline, f"5001 not cut or 5002 cut: {prev} -> {now}"
        prev = now
    time.sleep(3)
    later = sizes(cloud, region)
    assert later[0] == now[0], f"the cut flow came back: {now} -> {later}"
    assert later[1] > now[1], f"the other flow stopped: {now} -> {later}"
    for name in ("a", "b"):
        sh(cloud, region, name, "kill $(pidof nc) $(pidof sleep) 2>/dev/null; true")


def test_a_guest_with_anothers_ip_reaches_nobody(cloud, region):
    b_ip, c_ip = ip(region, "b"), ip(region, "c")
    assert ping_replies(cloud, region, "a", b_ip) >= 2, "a reaches b from its own address"
    before = in_echos(cloud, region, "b")
    # a takes c's address as a second one and pings b (and the gateway) from it
    sh(cloud, region, "a", f"ip addr add {c_ip}/32 dev eth0 && "
                           f"ping -c 3 -w 4 -I {c_ip} {b_ip} > /tmp/spoof-ip 2>&1; "
                           f"ping -c 2 -w 3 -I {c_ip} {GATEWAY} >> /tmp/spoof-ip 2>&1; "
                           f"ip addr del {c_ip}/32 dev eth0; true")
    assert in_echos(cloud, region, "b") == before, "b received echo requests from the spoofer"
    out = sh(cloud, region, "a", "cat /tmp/spoof-ip")
    assert " 0 packets received" in out and "bytes from" not in out, out
    # b never learnt c's address at a's MAC, and c is unaffected
    neigh = sh(cloud, region, "b", f"ip neigh show {c_ip}; true").lower()
    assert mac(region, "a") not in neigh, neigh
    assert ping_replies(cloud, region, "b", c_ip) >= 2, "the real owner keeps working"
    assert ping_replies(cloud, region, "c", b_ip) >= 2


def test_a_guest_with_anothers_mac_reaches_nobody_and_the_owner_keeps_working(cloud, region):
    b_ip, c_ip = ip(region, "b"), ip(region, "c")
    a_mac, c_mac = mac(region, "a"), mac(region, "c")
    assert ping_replies(cloud, region, "b", c_ip) >= 2  # b knows c's MAC now
    before = in_echos(cloud, region, "b")
    setmac = ("ip link set eth0 address {m} || "
              "{{ ip link set eth0 down; ip link set eth0 address {m}; ip link set eth0 up; }}")
    script = (f"sleep 2; {setmac.format(m=c_mac)}; "
              f"ping -c 6 -w 7 {b_ip} > /tmp/spoof-mac 2>&1; "
              f"{setmac.format(m=a_mac)}; ip route add default via {GATEWAY} 2>/dev/null; "
              "echo restored >> /tmp/spoof-mac")
    sh(cloud, region, "a", f"rm -f /tmp/spoof-mac; setsid sh -c '{script}' "
                           "</dev/null >/dev/null 2>&1 &")
    # while a sends with c's MAC, b keeps reaching c (the bridge must not learn c's MAC
    # on a's port)
    time.sleep(2.5)
    got = ping_replies(cloud, region, "b", c_ip, count=8, extra="-i 0.5")
    deadline = time.monotonic() + 60
    while True:
        proc = cloud.ssh(region["guests"]["a"], "cat /tmp/spoof-mac", region["key_file"],
                         timeout=30)
        if proc.returncode == 0 and "restored" in proc.stdout:
            break
        assert time.monotonic() < deadline, "a did not come back with its own MAC"
        time.sleep(2)
    assert " 0 packets received" in proc.stdout, proc.stdout
    assert in_echos(cloud, region, "b") == before, "b received echo requests from the spoofer"
    assert got >= 7, f"c impersonated: only {got}/8 replies from c to b"
    assert ping_replies(cloud, region, "a", b_ip) >= 2, "a is back with its own MAC"


def _filter_lines(ns: list[str]) -> list[str]:
    saved = subprocess.run([*ns, "iptables-save", "-t", "filter"], capture_output=True,
                           text=True, check=True).stdout
    return [ln for ln in saved.splitlines() if "mecs-" in ln]


def test_foreign_rules_survive_agent_restart_and_flush_restore(cloud, region):
    host = cloud.host_of(region["guests"]["a"])
    ns = ["ip", "netns", "exec", host.netns]
    subprocess.run([*ns, "iptables", "-N", "FOREIGN-FLOW"], check=True)
    subprocess.run([*ns, "iptables", "-A", "FOREIGN-FLOW", "-s", "192.0.2.9/32", "-j", "DROP"],
                   check=True)
    subprocess.run([*ns, "iptables", "-A", "FORWARD", "-s", "192.0.2.9/32", "-j",
                    "FOREIGN-FLOW"], check=True)
    subprocess.run([*ns, "ebtables", "-N", "FOREIGN-EB"], check=True)
    subprocess.run([*ns, "ebtables", "-A", "FOREIGN-EB", "-s", "02:00:5e:00:00:09", "-j", "DROP"],
                   check=True)
    try:
        before = _filter_lines(ns)
        assert before
        host.stop_agent(signal.SIGKILL)
        # a "reboot" of the firewall only: miniecs's chains, jumps and sets go
        for table in ("filter", "raw"):
            saved = subprocess.run([*ns, "iptables-save", "-t", table], capture_output=True,
                                   text=True, check=True).stdout
            kept = "\n".join(ln for ln in saved.splitlines() if "mecs-" not in ln) + "\n"
            subprocess.run([*ns, "iptables-restore", "-T", table], input=kept, text=True,
                           check=True)
        saved = subprocess.run([*ns, "ebtables-save"], capture_output=True, text=True).stdout
        kept = "\n".join(ln for ln in saved.splitlines() if "mecs-" not in ln) + "\n"
        subprocess.run([*ns, "ebtables-restore"], input=kept, text=True, check=True)
        for name in subprocess.run([*ns, "ipset", "list", "-n"], capture_output=True,
                                   text=True).stdout.split():
            if name.startswith("mecs-"):
                subprocess.run([*ns, "ipset", "destroy", name], check=False)
        nft = Nft(host.netns)
        nft.run(f"delete table bridge {SPOOF_TABLE}")  # the anti-spoofing table
        assert not _filter_lines(ns) and nft.list_json(f"table bridge {SPOOF_TABLE}") is None
        cloud.start_agent(host)
        deadline = time.monotonic() + 60
        while sorted(_filter_lines(ns)) != sorted(before):
            assert time.monotonic() < deadline, "rules not restored exactly"
            time.sleep(1)
        taps = {e for o in nft.list_json(f"table bridge {SPOOF_TABLE}") or []
                if o.get("set", {}).get("name") == "taps" for e in o["set"].get("elem", [])}
        assert len(taps) == 3, taps  # a, b and c are guarded again
        nft.close()
        saved = subprocess.run([*ns, "iptables-save", "-t", "filter"], capture_output=True,
                               text=True, check=True).stdout
        assert ":FOREIGN-FLOW" in saved and "-A FOREIGN-FLOW -s 192.0.2.9/32 -j DROP" in saved
        assert "-A FORWARD -s 192.0.2.9/32 -j FOREIGN-FLOW" in saved
        eb = subprocess.run([*ns, "ebtables", "-L", "FOREIGN-EB"], capture_output=True,
                            text=True).stdout.lower()
        assert "02:00:5e:0:0:9" in eb or "02:00:5e:00:00:09" in eb, eb
        # and the restored rules let through what they allow
        assert ping_replies(cloud, region, "a", ip(region, "b")) >= 2
    finally:
        subprocess.run([*ns, "iptables", "-D", "FORWARD", "-s", "192.0.2.9/32", "-j",
                        "FOREIGN-FLOW"], check=False)
        subprocess.run([*ns, "iptables", "-F", "FOREIGN-FLOW"], check=False)
        subprocess.run([*ns, "iptables", "-X", "FOREIGN-FLOW"], check=False)
        subprocess.run([*ns, "ebtables", "-F", "FOREIGN-EB"], check=False)
        subprocess.run([*ns, "ebtables", "-X", "FOREIGN-EB"], check=False)
        if not cloud.agent_alive(host):
            cloud.start_agent(host)


def test_zz_no_leaks(cloud, region):
    for inst in region["made"]:
        cloud.delete(f"/instances/{inst['id']}", force="true")
    for inst in region["made"]:
        cloud.wait_gone(f"/instances/{inst['id']}")
    wait_no_leaks(cloud.rig, region["baseline"], timeout=60)
