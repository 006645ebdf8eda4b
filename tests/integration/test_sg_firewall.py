"""The agent's firewall on real iptables/ebtables/ipset/conntrack, with real traffic.

A throwaway "hypervisor" network namespace holds a bridge; each "guest" is a
namespace whose veth peer (named like a tap, ``mtap…``) joins the bridge. The
real ``FirewallReconciler`` runs with every command inside the hypervisor
namespace; probes are real TCP/UDP/ICMP between the guest namespaces. No
guest boots, so each case takes a second. Everything is deleted afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agent import proc
from agent.firewall import FirewallReconciler
from agent.firewall_render import SPOOF_TABLE
from agent.spec import AddressSetSpec, FirewallRuleSpec, NicFirewallSpec, NicSpec

pytestmark = pytest.mark.integration

TAG = f"sgi{os.getpid() % 100000}"
HOST_NS = f"{TAG}-h"
BRIDGE = "mbr-sgitest01"
SERVER = r"""
import socket, sys, threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, _ = s.accept()
        def serve(c):
            try:
                while True:
                    d = c.recv(100)
                    if not d: break
                    c.sendall(d)
            except OSError: pass
            c.close()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        d, a = s.recvfrom(100); s.sendto(d, a)
for p in sys.argv[1:]:
    kind, port = p.split(":")
    threading.Thread(target=tcp if kind == "tcp" else udp, args=(int(port),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""
PROBE = r"""
import socket, sys
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if kind == "tcp":
        s = socket.create_connection((host, port), timeout=1.0); s.sendall(b"x")
        ok = s.recv(10) == b"x"
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.0)
        s.sendto(b"x", (host, port)); ok = s.recv(10) == b"x"
except OSError:
    ok = False
print("open" if ok else "closed")
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


def in_host(argv, **kw):
    return proc.run(["ip", "netns", "exec", HOST_NS, *argv], **kw)


class Guest:
    def __init__(self, index: int) -> None:
        self.ns = f"{TAG}-g{index}"
        self.tap = f"mtapsgi{index:07d}"[:15]
        self.ip = f"10.9.1.{10 + index}"
        self.mac = f"52:54:00:09:01:{10 + index:02x}"
        self.server: subprocess.Popen | None = None

    def up(self) -> None:
        sh("ip", "netns", "add", self.ns)
        sh("ip", "-n", HOST_NS, "link", "add", self.tap, "type", "veth", "peer", "name", "eth0",
           "netns", self.ns)
        sh("ip", "-n", HOST_NS, "link", "set", self.tap, "master", BRIDGE, "up")
        sh("ip", "-n", self.ns, "link", "set", "eth0", "address", self.mac, "up")
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.ns, "addr", "add", f"{self.ip}/24", "dev", "eth0")
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-c", SERVER, "tcp:22", "tcp:80",
             "tcp:1000", "tcp:1001", "tcp:1999", "tcp:2000", "tcp:2001", "tcp:5000", "udp:53"],
            stdout=subprocess.PIPE, text=True)
        assert self.server.stdout.readline().strip() == "ready"

    def down(self) -> None:
        if self.server:
            self.server.kill()
            self.server.wait()
        sh("ip", "netns", "delete", self.ns, check=False)

    def probe(self, kind: str, target: "Guest | str", port: int) -> bool:
        host = target.ip if isinstance(target, Guest) else target
        out = sh("ip", "netns", "exec", self.ns, sys.executable, "-c", PROBE, kind, host,
                 str(port))
        return out.stdout.strip() == "open"

    def ping(self, target: "Guest") -> bool:
        return sh("ip", "netns", "exec", self.ns, "ping", "-c1", "-W1", target.ip,
                  check=False).returncode == 0

    def nic(self, fw: NicFirewallSpec | None) -> NicSpec:
        return NicSpec(id=f"eni-{self.tap}", mac=self.mac, ip=self.ip, prefix_len=24,
                       gateway="10.9.1.1", vpc_id="vpc-sgi", vswitch_id="vsw-sgi",
                       bridge=BRIDGE, tap=self.tap, firewall=fw)


def rule(rid, priority=1, policy="accept", protocol="tcp", ports=None, peer="0.0.0.0/0",
         peer_set=None, group="sg-a") -> FirewallRuleSpec:
    lo, hi = ports if ports else (None, None)
    return FirewallRuleSpec(id=rid, group_id=group, priority=priority, policy=policy,
                            protocol=protocol, port_min=lo, port_max=hi,
                            peer_cidr=None if peer_set else peer, peer_set=peer_set)


def fw(ingress=(), egress=(), egress_default="accept") -> NicFirewallSpec:
    return NicFirewallSpec(ingress=list(ingress), egress=list(egress),
                           egress_default=egress_default, ct_zone=7)


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    sh("ip", "netns", "add", HOST_NS)
    sh("ip", "-n", HOST_NS, "link", "set", "lo", "up")
    sh("ip", "-n", HOST_NS, "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "-n", HOST_NS, "link", "set", BRIDGE, "up")
    guests = [Guest(i) for i in range(3)]
    try:
        for g in guests:
            g.up()
        yield guests
    finally:
        for g in guests:
            g.down()
        sh("ip", "netns", "delete", HOST_NS, check=False)


@pytest.fixture
def fwr(lab):
    r = FirewallReconciler(run=in_host, verify_interval_s=0.0, netns=HOST_NS)
    yield r
    assert not r.sync([], [])  # everything of ours goes; foreign rules stay
    saved = in_host(["iptables-save"]).stdout + in_host(["ebtables-save"]).stdout
    assert "mecs-" not in saved
    assert "mecs-" not in in_host(["ipset", "list", "-n"]).stdout
    assert r.nft.list_json(f"table bridge {SPOOF_TABLE}") is None
    r.nft.close()


def apply(r, nics, sets=()):
    errors = r.sync(nics, list(sets))
    assert errors == []


def test_default_drop_ingress_allows_egress_and_replies(lab, fwr):
    a, b, c = lab
    apply(fwr, [a.nic(fw()), b.nic(fw()), c.nic(fw())])
    assert not b.probe("tcp", a, 22)
    assert not a.probe("tcp", b, 22)


def test_ports_protocols_and_range_edges(lab, fwr):
    a, b, c = lab
    apply(fwr, [a.nic(fw([rule("r22", ports=(22, 22)), rule("rr", ports=(1000, 2000)),
                          rule("ricmp", protocol="icmp")])), b.nic(fw())])
    assert b.probe("tcp", a, 22)
    assert not b.probe("tcp", a, 80)
    assert not b.probe("udp", a, 53)
    assert b.ping(a)
    assert not a.ping(b)
    assert [b.probe("tcp", a, p) for p in (1000, 2000, 1999, 1001)] == [True] * 4
    assert not b.probe("tcp", a, 2001)


def test_priorities_drop_wins_ties(lab, fwr):
    a, b, _ = lab
    accept10, drop5 = rule("acc", priority=10, ports=(22, 22)), rule("dr", 5, "drop", ports=(22, 22))
    apply(fwr, [a.nic(fw([drop5, accept10])), b.nic(fw())])
    assert not b.probe("tcp", a, 22)
    accept5, drop10 = rule("acc", priority=5, ports=(22, 22)), rule("dr", 10, "drop", ports=(22, 22))
    apply(fwr, [a.nic(fw([accept5, drop10])), b.nic(fw())])
    assert b.probe("tcp", a, 22)
    tie = [rule("dr", 5, "drop", ports=(22, 22)), rule("acc", 5, ports=(22, 22))]
    apply(fwr, [a.nic(fw(tie)), b.nic(fw())])
    assert not b.probe("tcp", a, 22)


def test_source_group_ipset_membership(lab, fwr):
    a, b, c = lab
    by_group = rule("rg", peer_set="mecs-g-sgitestb", ports=(5000, 5000))
    sets = [AddressSetSpec(name="mecs-g-sgitestb", group_id="sg-b", ips=[b.ip])]
    nics = [a.nic(fw([by_group])), b.nic(fw()), c.nic(fw())]
    apply(fwr, nics, sets)
    assert b.probe("tcp", a, 5000)
    assert not c.probe("tcp", a, 5000)
    before = in_host(["iptables-save", "-t", "filter"]).stdout
    sets = [AddressSetSpec(name="mecs-g-sgitestb", group_id="sg-b", ips=[b.ip, c.ip])]
    ran: list[list[str]] = []
    run = fwr.run
    fwr.run = lambda argv, **kw: (ran.append(list(argv)), run(argv, **kw))[1]
    try:
        apply(fwr, nics, sets)
    finally:
        fwr.run = run
    assert c.probe("tcp", a, 5000)
    # a member joining is one netlink message: the pass only read (iptables-save, ipset
    # save): no restore program, no ipset change and, since an accept rule's set only
    # grew, no conntrack dump
    writes = [argv for argv in ran
              if argv[0] in ("iptables-restore", "ebtables-restore", "conntrack")
              or (argv[0] == "ipset" and argv[1:2] not in (["save"], ["list"]))]
    assert writes == [], ran
    after = in_host(["iptables-save", "-t", "filter"]).stdout
    strip = lambda s: [ln for ln in s.splitlines() if not ln.startswith("#")]  # noqa: E731
    assert strip(before) == strip(after), "a membership change must only touch the ipset"


def test_enterprise_egress_rules_restrict_outbound(lab, fwr):
    a, b, _ = lab
    apply(fwr, [a.nic(fw(egress=[rule("e80", ports=(80, 80), peer=f"{b.ip}/32")],
                         egress_default="drop")),
                b.nic(fw([rule("any", protocol="all")]))])
    assert a.probe("tcp", b, 80)
    assert not a.probe("tcp", b, 22)
    assert not a.ping(b)


def test_stateful_replies_and_cut_on_rule_removal(lab, fwr):
    a, b, c = lab
    keep = rule("keep", ports=(80, 80))
    admit = rule("admit", ports=(22, 22))
    apply(fwr, [a.nic(fw([admit, keep])), b.nic(fw()), c.nic(fw())])
    # b's ingress is closed, yet replies to b's own connection come back
    script = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], 22), timeout=2); t = socket.create_connection((sys.argv[1], 80), timeout=2)
s.sendall(b"1"); assert s.recv(1) == b"1"; t.sendall(b"1"); assert t.recv(1) == b"1"
print("connected", flush=True); sys.stdin.readline()
def alive(x):
    try:
        x.settimeout(2); x.sendall(b"2"); return x.recv(1) == b"2"
    except OSError:
        return False
print(alive(s), alive(t), flush=True)
"""
    p = subprocess.Popen(["ip", "netns", "exec", b.ns, sys.executable, "-c", script, a.ip],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "connected"
        apply(fwr, [a.nic(fw([keep])), b.nic(fw()), c.nic(fw())])
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().split() == ["False", "True"], "only the :22 flow is cut"
    finally:
        p.kill()
        p.wait()


def test_member_leaving_a_source_group_cuts_its_flow_widening_reads_no_conntrack(lab):
    a, b, c = lab
    calls: list[str] = []

    def counting(argv, **kw):
        calls.append(argv[0])
        return in_host(argv, **kw)

    r = FirewallReconciler(run=counting, verify_interval_s=3600.0, netns=HOST_NS)
    by_group = rule("rg", peer_set="mecs-g-sgitestb", ports=(22, 22))
    nics = [a.nic(fw([by_group])), b.nic(fw()), c.nic(fw())]

    def members(*guests):
        return [AddressSetSpec(name="mecs-g-sgitestb", group_id="sg-b",
                               ips=[g.ip for g in guests])]
    script = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 22), timeout=2)
s.sendall(b"1"); assert s.recv(1) == b"1"
print("connected", flush=True); sys.stdin.readline()
try:
    s.settimeout(2); s.sendall(b"2"); print(s.recv(1) == b"2", flush=True)
except OSError:
    print(False, flush=True)
"""
    stream = None
    try:
        apply(r, nics, members(b))
        stream = subprocess.Popen(["ip", "netns", "exec", b.ns, sys.executable, "-c", script,
                                   a.ip], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert stream.stdout.readline().strip() == "connected"
        # c joins: the set only grows, nothing can be cut, conntrack is not read
        calls.clear()
        apply(r, nics, members(b, c))
        assert "conntrack" not in calls and "ipset" not in calls, calls
        assert c.probe("tcp", a, 22)
        # an accept rule added can only let more through: conntrack is not read either
        calls.clear()
        nics = [a.nic(fw([by_group, rule("r80", ports=(80, 80))])), b.nic(fw()), c.nic(fw())]
        apply(r, nics, members(b, c))
        assert calls == ["iptables-restore"], calls
        # b leaves: its open connection is cut
        apply(r, nics, members(c))
        assert "conntrack" in calls
        stream.stdin.write("\n")
        stream.stdin.flush()
        assert stream.stdout.readline().strip() == "False", "b's flow outlived its membership"
        assert c.probe("tcp", a, 22) and not b.probe("tcp", a, 22)
    finally:
        if stream is not None:
            stream.kill()
            stream.wait()
        assert not r.sync([], [])
        r.nft.close()


def test_anti_spoofing_ip_and_mac(lab, fwr):
    a, b, c = lab
    apply(fwr, [a.nic(fw([rule("all", protocol="all")])), b.nic(fw()), c.nic(fw())])
    assert c.probe("tcp", a, 22)
    # c takes b's address: nothing it sends with it gets through; b is unaffected
    sh("ip", "-n", c.ns, "addr", "del", f"{c.ip}/24", "dev", "eth0")
    sh("ip", "-n", c.ns, "addr", "add", f"{b.ip}/24", "dev", "eth0")
    try:
        assert not c.probe("tcp", a, 22)
        assert b.probe("tcp", a, 22)
    finally:
        sh("ip", "-n", c.ns, "addr", "flush", "dev", "eth0")
        sh("ip", "-n", c.ns, "addr", "add", f"{c.ip}/24", "dev", "eth0")
    sh("ip", "-n", c.ns, "link", "set", "eth0", "address", "52:54:00:99:99:99")
    try:
        sh("ip", "-n", a.ns, "neigh", "flush", "all")
        assert not c.probe("tcp", a, 22)
    finally:
        sh("ip", "-n", c.ns, "link", "set", "eth0", "address", c.mac)
    sh("ip", "-n", a.ns, "neigh", "flush", "all")
    assert c.probe("tcp", a, 22)
    # c takes b's MAC: its frames drop before the bridge learns from them, so b's MAC
    # stays on b's port and traffic to b never goes to c
    assert b.ping(a)
    sh("ip", "-n", c.ns, "link", "set", "eth0", "address", b.mac)
    try:
        assert not c.ping(a)
        fdb = sh("bridge", "-n", HOST_NS, "fdb", "show", "br", BRIDGE).stdout
        assert f"{b.mac} dev {c.tap} " not in fdb, fdb
        assert f"{b.mac} dev {b.tap} " in fdb, fdb
    finally:
        sh("ip", "-n", c.ns, "link", "set", "eth0", "address", c.mac)


def test_restores_after_flush_and_leaves_foreign_rules(lab, fwr):
    a, b, _ = lab
    in_host(["iptables", "-N", "FOREIGN"])
    in_host(["iptables", "-A", "FORWARD", "-s", "192.0.2.1/32", "-j", "FOREIGN"])
    try:
        nics = [a.nic(fw([rule("r22", ports=(22, 22))])), b.nic(fw())]
        apply(fwr, nics)
        want = in_host(["iptables-save", "-t", "filter"]).stdout
        # "reboot": our chains and sets vanish
        for line in want.splitlines():
            if line.startswith("-A FORWARD") and "mecs-" in line:
                in_host(["iptables", *line.replace("-A", "-D", 1).split()])
        in_host(["iptables", "-F", "mecs-sg"])
        fwr.nft.run(f"delete table bridge {SPOOF_TABLE}")
        apply(fwr, nics)
        assert b.probe("tcp", a, 22) and not b.probe("tcp", a, 80)
        assert spoof_taps(fwr) == {a.tap, b.tap}
        # the anti-spoofing chain emptied by hand: rebuilt exactly, with its elements
        fwr.nft.run(f"flush chain bridge {SPOOF_TABLE} prerouting")
        apply(fwr, nics)
        table = fwr.nft.list_json(f"table bridge {SPOOF_TABLE}")
        assert sum("rule" in o for o in table) == 5 and spoof_taps(fwr) == {a.tap, b.tap}
        got = in_host(["iptables-save", "-t", "filter"]).stdout
        strip = lambda s: sorted(ln for ln in s.splitlines() if not ln.startswith("#"))  # noqa: E731
        assert strip(got) == strip(want)
    finally:
        fwr.sync([], [])
        saved = in_host(["iptables-save", "-t", "filter"]).stdout
        assert ":FOREIGN" in saved and "-j FOREIGN" in saved
        in_host(["iptables", "-D", "FORWARD", "-s", "192.0.2.1/32", "-j", "FOREIGN"])
        in_host(["iptables", "-X", "FOREIGN"])


def spoof_taps(r) -> set[str]:
    return {e for o in r.nft.list_json(f"table bridge {SPOOF_TABLE}") or []
            if o.get("set", {}).get("name") == "taps" for e in o["set"].get("elem", [])}


def test_earlier_ebtables_layout_is_removed_and_foreign_chains_stay(lab, fwr):
    a, b, _ = lab
    old = ("*nat\n:mecs-spoof ACCEPT\n:mecs-as-old01 ACCEPT\n:FOREIGN-EB ACCEPT\n"
           "-A PREROUTING -i mtap+ -j mecs-spoof\n-A mecs-spoof -i mtapold01 -j mecs-as-old01\n"
           "-A mecs-as-old01 -j DROP\n-A FOREIGN-EB -s 02:00:5e:00:00:09 -j DROP\nCOMMIT\n")
    in_host(["ebtables-restore", "--noflush"], input_text=old)
    try:
        apply(fwr, [a.nic(fw([rule("all", protocol="all")])), b.nic(fw())])
        assert b.probe("tcp", a, 22)
        nat = in_host(["ebtables-save", "-t", "nat"]).stdout
        assert "mecs-" not in nat and "-A FOREIGN-EB -s 2:0:5e:0:0:9 -j DROP" in nat.replace(
            "02:00:5e:00:00:09", "2:0:5e:0:0:9")
        assert spoof_taps(fwr) == {a.tap, b.tap}
    finally:
        in_host(["ebtables", "-t", "nat", "-F", "FOREIGN-EB"], check=False)
        in_host(["ebtables", "-t", "nat", "-X", "FOREIGN-EB"], check=False)
