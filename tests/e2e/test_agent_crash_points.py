"""Crash safety of the agent: SIGKILL at injected points, restart, converge, nothing leaked.

One rig host, one real guest (``g1``, VPC A) that must keep running (same QEMU
pid) and keep answering on port 22 through everything. Each scenario makes
one change (an instance in a new VPC, its deletion, an instance in VPC A, a
forced stop, an EIP, host drift) while the agent is down, then walks a chain
of crash points in the order one reconcile pass reaches them: the agent is
started with ``MINIECS_AGENT_FAULT=<point>`` and must SIGKILL itself there
(the fault log proves the point was reached), so every later run starts from
the wreck the previous one left. After the chain the agent starts normally
and the host must converge to its spec: exactly the spec's domains, disk and
seed files, bridges, VXLAN devices, veths, taps, router namespaces, dnsmasq
daemons, iptables/ebtables chains (line for line, no duplicated rule) and
ipsets — nothing more, nothing twice. The module ends with every resource
deleted (itself through a crash) and the rig back to its state before the
test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from agent import faults
from agent.firewall_render import (EB_TABLE, SPOOF_TABLE, parse_ipset_save, parse_save,
                                   parse_spoof_json, render)
from agent.nft import Nft
from agent.overlay import EBT_CHAIN, EBT_RULES
from agent.spec import HostSpec
from agent.uplink import HOST_NAT_CHAIN, router_rules
from tests.e2e.conftest import TINY_IMAGE
from tests.rig.leaks import snapshot, wait_no_leaks
from tests.rig.rig import _pid_alive

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

RIG_HOSTS = 1
LINK_PREFIXES = ("mbr", "mgw", "mvx", "mup", "mtap")

# Every point the module must kill the agent at (checked at the end).
REQUIRED: set[str] = set()


# ---- helpers ----------------------------------------------------------------------

def run(argv: list[str], check: bool = True) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and out.returncode != 0:
        raise AssertionError(f"{argv} failed: {out.stderr}")
    return out.stdout


class Crasher:
    """Runs the host's agent with a fault, and normally; checks the host against its spec."""

    def __init__(self, cloud, region) -> None:
        self.cloud = cloud
        self.region = region
        self.host = next(iter(cloud.rig.hosts.values()))
        self.host_id = cloud.get("/hosts")["items"][0]["id"]
        self.log = cloud.path / "faults.log"
        self.hit: list[str] = []

    # -- agent ------------------------------------------------------------------------
    def stop(self) -> None:
        self.host.stop_agent()

    def start(self) -> None:
        self.host.start_agent()
        self.cloud.rig.save()

    def crash_at(self, point: str, timeout: float = 40.0) -> None:
        """Start the agent with the fault set; it must kill itself at ``point``."""
        REQUIRED.add(point)
        before = self.log.read_text().splitlines() if self.log.exists() else []
        os.environ[faults.ENV] = point
        os.environ[faults.LOG_ENV] = str(self.log)
        try:
            pid = self.host.start_agent()
        finally:
            del os.environ[faults.ENV], os.environ[faults.LOG_ENV]
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            try:
                got, st = os.waitpid(pid, os.WNOHANG)
                if got == pid:
                    status = st
                    break
            except ChildProcessError:
                if not _pid_alive(pid):
                    break
            time.sleep(0.02)
        else:
            self.host.stop_agent(signal.SIGKILL)
            tail = self.host.agent_log.read_text()[-3000:]
            raise AssertionError(f"agent never reached crash point {point}:\n{tail}")
        self.host.agent_pid = None
        if status is not None:
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
                f"agent ended with status {status}, not SIGKILL, waiting for {point}"
        after = self.log.read_text().splitlines()
        assert after[len(before):] == [point], f"fault log: {after[len(before):]} (want {point})"
        self.hit.append(point)

    def chain(self, points: list[str]) -> None:
        for p in points:
            self.crash_at(p)

    # -- convergence ------------------------------------------------------------------
    def converge(self, statuses: dict[str, str], gone: tuple[str, ...] = (),
                 timeout: float = 120.0) -> HostSpec:
        """Start the agent normally; wait for the spec applied and ``statuses``; check reality."""
        self.start()
        deadline = time.monotonic() + timeout
        while True:
            h = self.cloud.get(f"/hosts/{self.host_id}")
            have = {i: self.cloud.get(f"/instances/{i}")["status"] for i in statuses}
            left = [i for i in gone
                    if self.cloud.request("GET", f"/instances/{i}", ok=False).get("status")
                    not in (None, "Deleted")]
            if h["generation_applied"] == h["generation"] and have == statuses and not left:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no convergence: host {h['generation_applied']}/{h['generation']}, "
                    f"instances {have} (want {statuses}), not gone {left}\n"
                    + self.host.agent_log.read_text()[-3000:])
            time.sleep(0.2)
        deadline = time.monotonic() + 20
        while True:
            spec = self.spec(h["generation"])
            problems = self.diff(spec)
            if not problems:
                return spec
            if time.monotonic() > deadline:
                raise AssertionError("host does not match its spec after the crash:\n  "
                                     + "\n  ".join(problems))
            time.sleep(0.5)

    def spec(self, generation: int) -> HostSpec:
        deadline = time.monotonic() + 20
        while True:
            data = json.loads((self.host.agent_state_dir / "spec.json").read_text())
            spec = HostSpec.model_validate(data["spec"])
            if spec.generation >= generation or time.monotonic() > deadline:
                return spec
            time.sleep(0.1)

    def netns(self, *argv: str) -> str:
        return run(["ip", "netns", "exec", self.host.netns, *argv])

    def diff(self, spec: HostSpec) -> list[str]:  # noqa: C901 - one list of checks
        """Everything on the host that differs from ``spec`` (empty: converged, nothing extra)."""
        p: list[str] = []
        host, state = self.host, self.host.agent_state_dir

        def same(what: str, have, want) -> None:
            if have != want:
                p.append(f"{what}: have {sorted(have)}, want {sorted(want)}")

        # domains
        names = set(host.virsh("list", "--all", "--name").stdout.split())
        same("domains", names, {i.id for i in spec.instances})
        running = set(host.virsh("list", "--state-running", "--name").stdout.split())
        same("running domains", running, {i.id for i in spec.instances if i.power == "running"})
        # files: per instance its system disk(s), seed and console log; nothing else anywhere
        inst_dir = state / "instances"
        have_dirs = {d.name for d in inst_dir.iterdir()} if inst_dir.exists() else set()
        same("instance dirs", have_dirs, {i.id for i in spec.instances})
        for inst in spec.instances:
            d = inst_dir / inst.id
            files = {f.name for f in d.iterdir()} if d.exists() else set()
            want = {f"{x.id}.qcow2" for x in inst.disks if x.role == "system"} | {"seed.iso"}
            same(f"files of {inst.id}", files - {"console.log"}, want)
        for sub in ("disks", "snapshots"):
            extra = [str(f) for f in (state / sub).rglob("*") if f.is_file()] \
                if (state / sub).exists() else []
            same(sub, set(extra), set())
        images = state / "images"
        partial = {f.name for f in images.iterdir() if not f.name.endswith((".qcow2", ".raw"))} \
            if images.exists() else set()
        same("partial images", partial, set())
        # links of the host's namespace
        links = json.loads(run(["ip", "-n", host.netns, "-j", "-d", "link", "show"]))
        mine = {link["ifname"]: link for link in links if link["ifname"].startswith(LINK_PREFIXES)}
        kinds = Counter()
        for link in mine.values():
            kinds[(link.get("linkinfo") or {}).get("info_kind", "")] += 1
        nets = spec.networks
        want_links = {n.bridge for n in nets} | {n.veth_bridge_side for n in nets}
        want_links |= {n.overlay.device for n in nets if n.overlay}
        want_links |= {n.uplink.veth_host_side for n in nets if n.uplink}
        taps = {nic.tap: nic.bridge for i in spec.instances if i.power == "running" for nic in i.nics}
        same("links", set(mine), want_links | set(taps))
        for tap, br in taps.items():
            if tap in mine and mine[tap].get("master") != br:
                p.append(f"tap {tap} on {mine[tap].get('master')}, want {br}")
        # router namespaces and their DHCP servers
        netns_dir = state / "netns"
        same("router namespaces", set(os.listdir(netns_dir)) if netns_dir.exists() else set(),
             {n.router_ns for n in nets})
        dhcp_dir = state / "dhcp"
        same("dhcp dirs", set(os.listdir(dhcp_dir)) if dhcp_dir.exists() else set(),
             {n.router_ns for n in nets})
        daemons = Counter()
        for pid in (x for x in os.listdir("/proc") if x.isdigit()):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            for arg in cmd:
                if arg.startswith(f"--conf-file={dhcp_dir}/".encode()):
                    daemons[arg.decode().split("/")[-2]] += 1
        same("dnsmasq daemons", dict(daemons), {n.router_ns: 1 for n in nets})
        for n in nets:
            if n.uplink is None or not netns_dir.joinpath(n.router_ns).exists():
                continue
            saved = run(["nsenter", f"--net={netns_dir / n.router_ns}", "--", "iptables-save"])
            table, rules = "", {}
            for line in saved.splitlines():
                if line.startswith("*"):
                    table = line[1:]
                elif line.startswith("-A "):
                    rules.setdefault(table, []).append(line)
            for t, want_rules in router_rules(n.uplink).items():
                same(f"router {n.router_ns} {t} rules", rules.get(t, []), want_rules)
        # firewall: our chains line for line, no rule twice, the sets the rules name
        desired = render([nic for i in spec.instances for nic in i.nics], spec.address_sets)
        for key, argv in (("filter", ["iptables-save", "-t", "filter"]),
                          ("raw", ["iptables-save", "-t", "raw"]),
                          ("eb", ["ebtables-save", "-t", EB_TABLE])):
            text = self.netns(*argv)
            obs = parse_save(text)
            if obs.chains != getattr(desired, key):
                p.append(f"{key} chains differ: have {sorted(obs.chains)}, "
                         f"want {sorted(getattr(desired, key))}")
            dup = [line for line, c in Counter(x for x in text.splitlines()
                                               if x.startswith("-A ")).items() if c > 1]
            if dup:
                p.append(f"{key}: duplicated rules {dup}")
        sets = parse_ipset_save(self.netns("ipset", "save"))
        same("ipsets", set(sets), set(desired.sets))
        # anti-spoofing: one (tap, MAC, IP) entry per filtered NIC, no more, no less
        nft = Nft(host.netns)
        try:
            spoof = parse_spoof_json(nft.list_json(f"table bridge {SPOOF_TABLE}"))
        finally:
            nft.close()
        if desired.spoof:
            if spoof is None:
                p.append("anti-spoofing table missing")
            else:
                same("anti-spoofing (tap, MAC, IP)", spoof.addrs, set(desired.spoof))
                same("anti-spoofing (tap, MAC)", spoof.macs,
                     {(t, m) for t, m, _ip in desired.spoof})
                same("anti-spoofing taps", spoof.taps, {t for t, _m, _ip in desired.spoof})
        eb = self.netns("ebtables-save", "-t", "filter")
        guard = [x for x in eb.splitlines() if x.startswith(f"-A {EBT_CHAIN} ")]
        jumps = [x for x in eb.splitlines() if x == f"-A FORWARD -j {EBT_CHAIN}"]
        have_guard = (len(guard), len(jumps))
        same("ARP guard (rules, jumps)", have_guard,
             (len(EBT_RULES), 1) if any(n.overlay for n in nets) else (0, 0))
        nat = self.netns("iptables-save", "-t", "nat").splitlines()
        host_nat = (sum(x.startswith(f"-A {HOST_NAT_CHAIN} ") for x in nat),
                    sum(x == f"-A POSTROUTING -j {HOST_NAT_CHAIN}" for x in nat))
        same("host NAT (rules, jumps)", host_nat,
             (1, 1) if any(n.uplink for n in nets) else (0, 0))
        proxies = {x.split()[0] for x in run(["ip", "-n", host.netns, "-4", "neigh", "show",
                                              "proxy"]).splitlines() if x.strip()}
        same("proxy ARP", proxies, {e.public_ip for n in nets if n.uplink for e in n.uplink.eips})
        return p

    # -- the guest that must live through it all ---------------------------------------
    def qemu_pid(self, iid: str) -> int:
        return int((self.host.path / "run" / "qemu" / f"{iid}.pid").read_text())

    def answers(self, inst: dict, timeout: float = 60.0) -> None:
        """The guest's SSH server answers through its VPC's router namespace."""
        ns = self.cloud.router_netns(inst)
        script = f"exec 3<>/dev/tcp/{inst['private_ip_address']}/22; head -c 4 <&3"
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(["nsenter", f"--net={ns}", "--", "timeout", "5", "bash", "-c",
                                  script], capture_output=True, text=True)
            if out.stdout == "SSH-":
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{inst['id']} does not answer on port 22: {out.stderr}")
            time.sleep(1)


# ---- region ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def region(cloud):
    image = json.loads(cloud.cli("image", "import", "tiny", "--file", str(TINY_IMAGE),
                                 "--wait", "-o", "json").stdout)
    # a second image with other bytes, so an instance makes the agent fetch again
    other = cloud.path / "tiny-b.qcow2"
    run(["qemu-img", "convert", "-O", "qcow2", "-o", "cluster_size=32768", str(TINY_IMAGE),
         str(other)])
    image_b = json.loads(cloud.cli("image", "import", "tiny-b", "--file", str(other),
                                   "--wait", "-o", "json").stdout)
    key_file = cloud.path / "crash-key.pem"
    keypair = cloud.post("/key-pairs", {"name": "crash-key"})
    key_file.write_text(keypair["private_key"])
    key_file.chmod(0o600)
    out = {"image": image, "image_b": image_b, "keypair": keypair, "key_file": key_file}
    for tag, cidr in (("a", "10.31"), ("b", "10.32")):
        vpc = cloud.post("/vpcs", {"name": f"crash-{tag}", "cidr_block": f"{cidr}.0.0/16"})
        vsw = cloud.post("/vswitches", {"name": f"crash-{tag}", "vpc_id": vpc["id"],
                                        "zone_id": "zone-a", "cidr_block": f"{cidr}.1.0/24"})
        sg = cloud.post("/security-groups", {"name": f"crash-{tag}", "vpc_id": vpc["id"]})
        cloud.post(f"/security-groups/{sg['id']}/rules",
                   {"direction": "ingress", "protocol": "tcp", "port_range": "22/22",
                    "peer_cidr": f"{cidr}.1.1/32"})
        # a source-group rule: the agent keeps an ipset of the group's members
        cloud.post(f"/security-groups/{sg['id']}/rules",
                   {"direction": "ingress", "protocol": "tcp", "port_range": "80/80",
                    "peer_group_id": sg["id"]})
        out[tag] = {"vpc": vpc, "vswitch": vsw, "sg": sg}
    return out


def create(cloud, region, name: str, tag: str, image: str = "image") -> dict:
    return cloud.post("/instances", {
        "name": name, "instance_type": "ecs.t1.nano", "image_id": region[image]["id"],
        "vswitch_id": region[tag]["vswitch"]["id"], "security_group_ids": [region[tag]["sg"]["id"]],
        "key_pair_id": region["keypair"]["id"], "hostname": name})


# ---- the test ----------------------------------------------------------------------------

def test_agent_killed_at_every_point_converges_without_leaks(cloud, region):
    before = snapshot(cloud.rig)
    c = Crasher(cloud, region)
    g1 = create(cloud, region, "g1", "a")
    g1 = cloud.wait_status(f"/instances/{g1['id']}", {"Running"}, timeout=120)
    c.answers(g1, timeout=120)
    pid = c.qemu_pid(g1["id"])

    def g1_intact() -> None:
        assert c.qemu_pid(g1["id"]) == pid, "g1 was restarted"
        c.answers(g1)

    # 1. an instance in a new VPC from an image the host does not have: network, overlay,
    #    uplink, DHCP, firewall (new ipset, chains, conntrack zone), image fetch, seed.
    #    A chain only holds points the recovery still passes: once the seed is published,
    #    no later run writes it again, so seed.after_publish ends this chain.
    c.stop()
    y1 = create(cloud, region, "y1", "b", image="image_b")
    c.chain(["network.bridge_added", "network.router_ns_created", "network.veth_added",
             "network.router_addresses", "network.before_forwarding",
             "overlay.vxlan_added", "uplink.veth_added", "uplink.before_router_rules",
             "dhcp.hosts_before_publish", "dhcp.started", "firewall.after_ipsets",
             "firewall.after_restore", "storage.before_fetch_image",
             "storage.after_fetch_image", "seed.after_publish"])
    c.converge({g1["id"]: "Running", y1["id"]: "Running"})
    g1_intact()

    # 2. that instance deleted, and with it the VPC's network on this host
    c.stop()
    cloud.delete(f"/instances/{y1['id']}", force="true")
    c.chain(["dhcp.stopped", "firewall.after_restore", "firewall.before_destroy_ipset",
             "compute.remove.after_destroy", "compute.remove.after_undefine",
             "storage.before_remove_instance_files", "storage.after_remove_instance_files",
             "network.before_remove_link", "network.before_remove_router_ns"])
    c.converge({g1["id"]: "Running"}, gone=(y1["id"],))
    g1_intact()

    # 3. an instance beside g1: disk, seed, domain (and the end of every pass)
    c.stop()
    y2 = create(cloud, region, "y2", "a")
    c.chain(["storage.after_create_disk", "storage.before_write_seed", "seed.before_publish",
             "storage.after_write_seed", "compute.before_define", "compute.after_define",
             "compute.before_start", "compute.after_start", "reconcile.before_report"])
    c.converge({g1["id"]: "Running", y2["id"]: "Running"})
    g1_intact()

    # 4. a forced stop
    c.stop()
    cloud.post(f"/instances/{y2['id']}/stop", {"force": True})
    c.chain(["compute.after_power_off"])
    c.converge({g1["id"]: "Running", y2["id"]: "Stopped"})
    g1_intact()

    # 5. an EIP onto g1: proxy ARP, host routes, DNAT rules; flows judged on restart
    c.stop()
    eip = cloud.post("/eips", {})
    cloud.post(f"/eips/{eip['id']}/associate", {"instance_id": g1["id"]})
    c.chain(["firewall.before_cut_flows", "uplink.proxy_arp_added"])
    c.converge({g1["id"]: "Running", y2["id"]: "Stopped"})
    g1_intact()

    # 6. host drift while the agent is down: host NAT chain and ARP guard flushed
    c.stop()
    nat = ["ip", "netns", "exec", c.host.netns, "iptables", "-t", "nat"]
    run([*nat, "-D", "POSTROUTING", "-j", HOST_NAT_CHAIN])
    run([*nat, "-F", HOST_NAT_CHAIN])
    run([*nat, "-X", HOST_NAT_CHAIN])
    ebt = ["ip", "netns", "exec", c.host.netns, "ebtables", "-t", "filter"]
    run([*ebt, "-D", "FORWARD", "-j", EBT_CHAIN])
    run([*ebt, "-F", EBT_CHAIN])
    run([*ebt, "-X", EBT_CHAIN])
    c.chain(["overlay.arp_guard_rule", "uplink.host_nat_chain"])
    c.converge({g1["id"]: "Running", y2["id"]: "Stopped"})
    g1_intact()

    # 7. everything deleted: the last VPC's network, the ARP guard, host NAT go too
    c.stop()
    cloud.post(f"/eips/{eip['id']}/disassociate")
    cloud.delete(f"/eips/{eip['id']}")
    for inst in (g1, y2):
        cloud.delete(f"/instances/{inst['id']}", force="true")
    c.chain(["overlay.arp_guard_unhooked"])
    c.converge({}, gone=(g1["id"], y2["id"]))
    wait_no_leaks(cloud.rig, before, timeout=30)

    assert c.hit == [p for p in c.hit if p in REQUIRED]
    areas = Counter(p.split(".")[0] for p in set(c.hit))
    assert len(set(c.hit)) >= 30, sorted(set(c.hit))
    for area in ("compute", "storage", "network", "firewall"):
        assert areas[area] >= 3, areas


def test_rekeyed_host_agent_takes_the_new_token_from_its_config(cloud):
    """`miniecs host rekey`: the old token is refused at once; the agent carries on with
    the token put into its config — after a restart, and while running."""
    import httpx

    host = next(iter(cloud.rig.hosts.values()))
    host_id = cloud.get("/hosts")["items"][0]["id"]
    url = f"{cloud.url}/api/v1/agent/spec"

    def spec_status(token: str) -> int:
        return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code

    def heartbeat_after(t0: str, token: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            stored = json.loads((host.agent_state_dir / "host.json").read_text())
            h = cloud.get(f"/hosts/{host_id}")
            if stored["host_token"] == token and (h["last_heartbeat"] or "") > t0 \
                    and h["state"] == "ready":
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"agent did not carry on with the new token: {h}\n"
                                     + host.agent_log.read_text()[-2000:])
            time.sleep(0.3)

    # 1. agent stopped: re-key, token into the config (no enrolment token), start
    host.stop_agent()
    old = json.loads((host.agent_state_dir / "host.json").read_text())["host_token"]
    assert spec_status(old) == 200
    new = json.loads(cloud.cli("host", "rekey", host.name, "-o", "json").stdout)
    assert new["host_id"] == host_id and new["host_token"] != old
    assert spec_status(old) == 401 and spec_status(new["host_token"]) == 200
    host.write_agent_config(cloud.url, "", host_token=new["host_token"])
    t0 = cloud.get(f"/hosts/{host_id}")["last_heartbeat"] or ""
    host.start_agent()
    heartbeat_after(t0, new["host_token"])

    # 2. agent running: re-key, then the config; it picks the token up without a restart
    pid = host.agent_pid
    newer = json.loads(cloud.cli("host", "rekey", host_id, "-o", "json").stdout)["host_token"]
    assert spec_status(new["host_token"]) == 401
    host.write_agent_config(cloud.url, "", host_token=newer)
    t1 = cloud.get(f"/hosts/{host_id}")["last_heartbeat"] or ""
    heartbeat_after(t1, newer)
    assert host.agent_pid == pid and _pid_alive(pid), "the agent was restarted"
    assert spec_status(newer) == 200
