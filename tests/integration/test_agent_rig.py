"""The agent's reconcile pass against a real libvirtd and real netlink, in the namespace rig.

No controller: each step writes a handmade ``HostSpec`` and runs one pass of
the real agent (``python -m agent.main --spec FILE --once``) inside the rig
host's network namespace, then checks libvirt, the files and the links.
One guest at a time (the machine has 2 cores shared with others).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.spec import HostSpec, OperationSpec
from agent.testing import make_host_spec, make_image, make_instance, make_network
from tests.rig import Rig

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
TINY = Path(os.environ.get("MINIECS_TINY_IMAGE", PROJECT / "images/build/tiny.qcow2"))
IID = "i-agtest0000000000001"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rig():
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, libvirtd)")
    for tool in ("libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img", "nsenter"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    r = Rig(name="agi")
    try:
        r.up(1, controller_port=_free_port())
        host = r.hosts["h1"]
        host.write_agent_config("http://127.0.0.1:9", "unused")
        yield r
    finally:
        r.down()


@pytest.fixture(scope="module")
def image(rig, tmp_path_factory):
    """The tiny image when built, else an empty qcow2 (the domain still starts)."""
    if TINY.exists():
        path = TINY
    else:
        path = tmp_path_factory.mktemp("img") / "blank.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    data = path.read_bytes()
    img = make_image(sha256=hashlib.sha256(data).hexdigest(), size=len(data), virtual_size=0)
    return img.model_copy(update={"url": f"file://{path}"})


class Driver:
    def __init__(self, rig: Rig, tmp: Path) -> None:
        self.host = rig.hosts["h1"]
        self.tmp = tmp
        self.state = self.host.agent_state_dir
        self.n = 0

    def run(self, spec: HostSpec) -> tuple[dict, str]:
        """One pass of the real agent in the host's netns; (report, log)."""
        self.n += 1
        f = self.tmp / f"spec{self.n}.json"
        f.write_text(spec.model_dump_json())
        # nsenter --net keeps the process in this mount namespace, as the agent should run
        argv = ["nsenter", f"--net=/run/netns/{self.host.netns}", "--", sys.executable, "-m",
                "agent.main", "--config", str(self.host.agent_config), "--spec", str(f), "--once"]
        p = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout), p.stderr

    def virsh(self, *args: str) -> str:
        return self.host.virsh(*args).stdout.strip()

    def qemu_pid(self, name: str) -> int:
        return int((self.host.path / "run" / "qemu" / f"{name}.pid").read_text())

    def links(self) -> dict[str, dict]:
        out = subprocess.run(["ip", "-n", self.host.netns, "-j", "-d", "link", "show"],
                             capture_output=True, text=True, check=True).stdout
        return {link["ifname"]: link for link in json.loads(out)}

    def router_addrs(self, ns: str) -> set[str]:
        out = subprocess.run(["nsenter", f"--net={self.state / 'netns' / ns}", "--",
                              "ip", "-j", "-4", "addr", "show"],
                             capture_output=True, text=True, check=True).stdout
        return {f"{a['local']}/{a['prefixlen']}" for link in json.loads(out)
                for a in link.get("addr_info", [])}


def power(report: dict, iid: str = IID) -> str:
    return {i["id"]: i for i in report["instances"]}[iid]["power"]


def test_agent_lifecycle_in_rig(rig, image, tmp_path):
    d = Driver(rig, tmp_path)
    net = make_network(gateways=(("10.0.1.0/24", "10.0.1.1"), ("10.0.2.0/24", "10.0.2.1")))

    def spec(gen: int, **kw) -> HostSpec:
        inst = make_instance(IID, image=image, stop_timeout_s=kw.pop("stop_timeout_s", 2), **kw)
        return make_host_spec(gen, instances=[inst], networks=[net], images=[image])

    # 1. define + start; bridge, router namespace, veth, tap
    report, log = d.run(spec(1))
    assert report["errors"] == [] and report["generation_applied"] == 1
    assert power(report) == "running", report
    assert d.virsh("domstate", IID) == "running"
    dom_id, pid = d.virsh("domid", IID), d.qemu_pid(IID)
    links = d.links()
    tap = make_instance(IID).nics[0].tap
    assert links[net.bridge]["linkinfo"]["info_kind"] == "bridge" and links[net.bridge]["mtu"] == 1450
    assert links[tap]["master"] == net.bridge
    assert links[net.veth_bridge_side]["master"] == net.bridge
    assert d.router_addrs(net.router_ns) == {"10.0.1.1/24", "10.0.2.1/24", "127.0.0.1/8"}
    inst_dir = d.state / "instances" / IID
    assert (inst_dir / "seed.iso").exists()
    assert (inst_dir / f"{make_instance(IID).disks[0].id}.qcow2").exists()
    xml = tmp_path / "live.xml"
    xml.write_text(d.virsh("dumpxml", "--inactive", IID))
    v = subprocess.run(["virt-xml-validate", str(xml), "domain"], capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr

    # 2. a restarted agent adopts the running domain without touching it
    report, log = d.run(spec(1))
    assert power(report) == "running"
    assert "defined domain" not in log and "started domain" not in log, log
    assert (d.virsh("domid", IID), d.qemu_pid(IID)) == (dom_id, pid)

    # 3. a new generation that changes nothing for it: still untouched;
    #    a change of its definition: redefined for the next boot, never restarted
    report, log = d.run(spec(2))
    assert "defined domain" not in log and d.qemu_pid(IID) == pid
    report, log = d.run(spec(3, memory_mib=320))
    assert "defined domain" in log and "started domain" not in log
    assert (d.virsh("domid", IID), d.qemu_pid(IID)) == (dom_id, pid)
    assert "327680" in d.virsh("dumpxml", "--inactive", IID)

    # 4. reboot operation: runs once, its outcome is remembered across restarts
    op = OperationSpec(id="op-reboot-1", kind="reboot", force=True)
    report, log = d.run(spec(4, memory_mib=320, operations=[op]))
    assert report["operations"] == [{"id": op.id, "ok": True, "message": "reset"}]
    report, log = d.run(spec(4, memory_mib=320, operations=[op]))
    assert report["operations"][0]["ok"]
    assert "(operation" not in log
    ops = json.loads((d.state / "operations.json").read_text())
    assert ops["version"] == 1 and op.id in ops["completed"]

    # 5. stop: ACPI first (the shutdown start survives the agent), power-off after the timeout
    report, log = d.run(spec(5, memory_mib=320, power="stopped", stop_timeout_s=2))
    assert power(report) in ("shutting_down", "stopped"), report
    if power(report) == "shutting_down":
        rec = json.loads((d.state / "compute.json").read_text())
        assert IID in rec["shutdowns"]
        deadline = time.monotonic() + 30
        while power(report) != "stopped" and time.monotonic() < deadline:
            time.sleep(1)
            report, log = d.run(spec(5, memory_mib=320, power="stopped", stop_timeout_s=2))
    assert power(report) == "stopped" and d.virsh("domstate", IID) == "shut off"
    assert IID not in json.loads((d.state / "compute.json").read_text())["shutdowns"]

    # 6. start again (the new definition applies now)
    report, log = d.run(spec(6, memory_mib=320))
    assert power(report) == "running" and d.qemu_pid(IID) != pid

    # 7. a domain that is not ours is never touched
    foreign = tmp_path / "foreign.xml"
    foreign.write_text("<domain type='qemu'><name>foreign-1</name><memory unit='MiB'>32</memory>"
                       "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>")
    d.virsh("define", str(foreign))
    try:
        # 8. delete: domain, disk, seed, tap, bridge, veth and router namespace go
        report, log = d.run(make_host_spec(7, instances=[], networks=[], images=[image]))
        assert report["errors"] == [] and report["instances"] == []
        assert IID not in d.virsh("list", "--all", "--name").split()
        assert "foreign-1" in d.virsh("list", "--all", "--name").split()
        assert not inst_dir.exists()
        links = d.links()
        assert not {tap, net.bridge, net.veth_bridge_side} & set(links)
        assert not (d.state / "netns" / net.router_ns).exists()
    finally:
        d.virsh("undefine", "foreign-1")
