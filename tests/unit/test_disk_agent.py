"""agent/disks.py on real qcow2 files (qemu-img, qemu-io): create, snapshot, rollback,
disk from snapshot, grow, delete with snapshots retained, delete snapshots in any order."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from agent.disks import DiskReconciler, data_disk_path, retained_path
from agent.records import OperationLog
from agent.spec import HostDiskSpec, HostSpec, SnapshotSpec, StorageOperationSpec
from agent.state import StateDir
from agent.testing import FakeLibvirt

pytestmark = pytest.mark.skipif(shutil.which("qemu-io") is None, reason="qemu-utils missing")

MIB = 1 << 20
D, D2 = "d-aaaaaaaaaaaaaaaaaaaa", "d-eeeeeeeeeeeeeeeeeeee"
S1, S2 = "s-1111111111111111111a", "s-2222222222222222222b"


def write(path, byte: int) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {byte} 0 1M", str(path)],
                   check=True, capture_output=True)


def holds(path, byte: int) -> bool:
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"read -P {byte} 0 1M", str(path)],
                         capture_output=True, text=True)
    return out.returncode == 0 and "verification failed" not in out.stdout + out.stderr


def run(dr: DiskReconciler, spec: HostSpec) -> dict:
    errors: list[str] = []
    dr.before_domains(spec, errors)
    dr.cleanup(spec, errors)
    assert errors == []
    return dr.report_fields(spec)


def test_snapshot_rollback_copy_grow_and_retention(tmp_path):
    st = StateDir(tmp_path / "state")
    st.ensure()
    dr = DiskReconciler(st, FakeLibvirt(), OperationLog(st.operations_json))
    disk = HostDiskSpec(id=D, size_bytes=64 * MIB)
    rep = run(dr, HostSpec(host_id="h-x", generation=1, disks=[disk]))
    path = data_disk_path(st, D)
    assert rep["disks"][0].size_bytes == 64 * MIB and rep["disks"][0].chain_depth == 1

    write(path, 0x11)
    snaps = [SnapshotSpec(id=S1, disk_id=D, state="progressing")]
    rep = run(dr, HostSpec(host_id="h-x", generation=2, disks=[disk], snapshots=snaps))
    assert [s.state for s in rep["snapshots"]] == ["accomplished"]
    write(path, 0x22)
    snaps = [SnapshotSpec(id=S1, disk_id=D), SnapshotSpec(id=S2, disk_id=D, state="progressing")]
    run(dr, HostSpec(host_id="h-x", generation=3, disks=[disk], snapshots=snaps))
    write(path, 0x33)

    # rollback to the first, a copy of the second, and a grow — in one pass
    grown = HostDiskSpec(id=D, size_bytes=128 * MIB)
    copy = HostDiskSpec(id=D2, size_bytes=64 * MIB, source_snapshot_id=S2, source_disk_id=D)
    snaps = [SnapshotSpec(id=S1, disk_id=D), SnapshotSpec(id=S2, disk_id=D)]
    op = StorageOperationSpec(id="op-cccccccccccccccccccc", kind="reset_disk", disk_id=D,
                              snapshot_id=S1)
    spec = HostSpec(host_id="h-x", generation=4, disks=[grown, copy], snapshots=snaps,
                    storage_operations=[op])
    rep = run(dr, spec)
    assert [r.ok for r in rep["storage_operations"]] == [True]
    assert holds(path, 0x11) and holds(data_disk_path(st, D2), 0x22)
    assert {d.id: d.size_bytes for d in rep["disks"]} == {D: 128 * MIB, D2: 64 * MIB}
    # the one-shot rollback never runs again, even after a later write
    write(path, 0x44)
    run(dr, spec)
    assert holds(path, 0x44)

    # delete the older snapshot first: the newer one is intact; delete the disk: kept
    spec = HostSpec(host_id="h-x", generation=5, disks=[copy],
                    snapshots=[SnapshotSpec(id=S2, disk_id=D)])
    run(dr, spec)
    assert not path.exists() and retained_path(st, D).exists()
    out = subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-l", f"snapshot.name={S2}",
                          "-O", "qcow2", str(retained_path(st, D)), str(tmp_path / "x.qcow2")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert holds(tmp_path / "x.qcow2", 0x22)
    run(dr, HostSpec(host_id="h-x", generation=6))
    assert list(st.root.rglob("*.qcow2")) == []


def test_disk_from_snapshot_while_the_source_is_open_elsewhere(tmp_path):
    """The source disk may be in use by a running guest (write lock held): the free-room
    check and the copy read it with force-share."""
    st = StateDir(tmp_path / "state")
    st.ensure()
    dr = DiskReconciler(st, FakeLibvirt(), OperationLog(st.operations_json))
    disk = HostDiskSpec(id=D, size_bytes=64 * MIB)
    run(dr, HostSpec(host_id="h-x", generation=1, disks=[disk]))
    path = data_disk_path(st, D)
    write(path, 0x5a)
    snaps = [SnapshotSpec(id=S1, disk_id=D, state="progressing")]
    run(dr, HostSpec(host_id="h-x", generation=2, disks=[disk], snapshots=snaps))
    holder = subprocess.Popen(["qemu-io", "-f", "qcow2", str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        copy = HostDiskSpec(id=D2, size_bytes=64 * MIB, source_snapshot_id=S1, source_disk_id=D)
        errors: list[str] = []
        dr.before_domains(HostSpec(host_id="h-x", generation=3, disks=[disk, copy],
                                   snapshots=[SnapshotSpec(id=S1, disk_id=D)]), errors)
        assert errors == []
    finally:
        holder.communicate(b"quit\n", timeout=10)
    assert holds(data_disk_path(st, D2), 0x5a)
