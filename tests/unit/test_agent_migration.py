"""The agent's migration runner: what compute must leave alone, the destination XML, staging."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from agent.domain_xml import DomainPaths, render_domain_xml
from agent.migration import MigrationRunner, dest_xml
from agent.records import OperationLog
from agent.spec import DiskSpec, HostSpec, InstanceSpec, MigrationSpec
from agent.state import StateDir


def _inst(iid: str = "i-abc", disks=("d-sys",)) -> InstanceSpec:
    return InstanceSpec(id=iid, name="n", hostname="n", vcpus=1, memory_mib=256,
                        power="running", nics=[],
                        disks=[DiskSpec(id=d, role="system" if i == 0 else "data",
                                        size_bytes=1 << 30, device=f"vd{'abc'[i]}")
                               for i, d in enumerate(disks)])


def _xml(inst: InstanceSpec, root: str) -> str:
    paths = DomainPaths({d.id: Path(f"{root}/{d.id}.qcow2") for d in inst.disks},
                        Path(f"{root}/seed.iso"), Path(f"{root}/console.log"))
    return render_domain_xml(inst, paths, "qemu")


def _runner(tmp_path: Path) -> MigrationRunner:
    state = StateDir(tmp_path / "state")
    state.ensure()
    return MigrationRunner(state, conn=None, oplog=OperationLog(state.operations_json),
                           storage=None)  # type: ignore[arg-type]


def _mig(role: str, kind: str = "live", mid: str = "mig-1") -> MigrationSpec:
    return MigrationSpec(id=mid, instance_id="i-abc", kind=kind, role=role,
                         peer_address="198.18.0.11")


def test_dest_xml_keeps_the_source_abi_and_takes_this_hosts_files():
    inst = _inst(disks=("d-sys", "d-data"))
    source = ET.fromstring(_xml(inst, "/src"))
    # what libvirt adds to a live definition: expanded machine type, a backing chain
    source.find("os/type").set("machine", "pc-i440fx-7.2")
    ET.SubElement(source.find("devices/disk"), "backingStore", type="file")
    got = ET.fromstring(dest_xml(ET.tostring(source, encoding="unicode"), _xml(inst, "/dst")))
    assert got.find("os/type").get("machine") == "pc-i440fx-7.2"
    files = {d.find("target").get("dev"): d.find("source").get("file")
             for d in got.findall("devices/disk")}
    assert files == {"vda": "/dst/d-sys.qcow2", "vdb": "/dst/d-data.qcow2",
                     "hdc": "/dst/seed.iso"}
    assert got.findall("devices/disk/backingStore") == []
    assert {e.get("path") for e in got.findall("devices/serial/source")
            + got.findall("devices/console/source")} == {"/dst/console.log"}


def test_held_instances(tmp_path):
    r = _runner(tmp_path)
    base = dict(host_id="h-1", generation=3, instances=[_inst()])
    assert r.held(HostSpec(**base)) == set()
    # the source never touches a migrating domain, whatever the outcome says
    assert r.held(HostSpec(**base, migrations=[_mig("source")])) == {"i-abc"}
    assert r.held(HostSpec(**base, migrations=[_mig("source", "cold")])) == {"i-abc"}
    # the target leaves it alone until its live migration succeeded
    spec = HostSpec(**base, migrations=[_mig("target")])
    assert r.held(spec) == {"i-abc"}
    r.oplog.record("mig-1", "i-abc", False, "boom")
    assert r.held(spec) == {"i-abc"}
    r.oplog.record("mig-2", "i-abc", True, "ok")
    assert r.held(HostSpec(**base, migrations=[_mig("target", mid="mig-2")])) == set()
    assert [x.id for x in r.results(spec)] == ["mig-1"]


def test_staged_disks_are_adopted_when_the_instance_arrives(tmp_path):
    r = _runner(tmp_path)
    stage = r.state.root / "migrating" / "mig-1"
    stage.mkdir(parents=True)
    (stage / "d-sys.qcow2").write_bytes(b"system")
    (stage / "d-data.qcow2").write_bytes(b"data")
    waiting = HostSpec(host_id="h-1", generation=1,
                       migrations=[MigrationSpec(id="mig-1", instance_id="i-abc", kind="cold",
                                                 role="target", peer_address="x")])
    r.adopt_staged(waiting)
    r.cleanup(waiting)
    assert (stage / "d-sys.qcow2").exists()  # not yet: the instance is not here
    arrived = HostSpec(host_id="h-1", generation=2, instances=[_inst(disks=("d-sys", "d-data"))])
    r.adopt_staged(arrived)
    r.cleanup(arrived)
    assert r.state.disk_path("i-abc", "d-sys").read_bytes() == b"system"
    assert (r.state.root / "disks" / "d-data.qcow2").read_bytes() == b"data"
    assert not stage.exists()
