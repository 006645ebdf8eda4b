"""agent/disks.py for instance operations, on real qcow2 files (qemu-img, qemu-io):
re-initialising a system disk to its image, and releasing a replaced system disk."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from agent.disks import DiskReconciler, retained_path
from agent.records import OperationLog
from agent.spec import DiskSpec, HostSpec, InstanceSpec, SnapshotSpec, StorageOperationSpec
from agent.state import StateDir
from agent.testing import FakeLibvirt

pytestmark = pytest.mark.skipif(shutil.which("qemu-io") is None, reason="qemu-utils missing")

MIB = 1 << 20
I = "i-aaaaaaaaaaaaaaaaaaaa"
OLD, NEW = "d-oooooooooooooooooooo", "d-nnnnnnnnnnnnnnnnnnnn"
S1 = "s-1111111111111111111a"


def qemu_io(path, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(path)],
                          capture_output=True, text=True)


def holds(path, byte: int) -> bool:
    out = qemu_io(path, f"read -P {byte} 0 1M")
    return out.returncode == 0 and "verification failed" not in out.stdout + out.stderr


def system_disk(st: StateDir, disk_id: str) -> None:
    """A cached 'image' holding 0x11 and a system disk overlay on it."""
    image = st.image_path("ab" * 32, "qcow2")
    if not image.exists():
        image.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(64 * MIB)],
                       check=True)
        assert qemu_io(image, "write -P 17 0 1M").returncode == 0
    path = st.disk_path(I, disk_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image),
                    str(path), str(64 * MIB)], check=True)


def instance(disk_id: str) -> InstanceSpec:
    return InstanceSpec(id=I, name="a", hostname="a", vcpus=1, memory_mib=256, power="stopped",
                        disks=[DiskSpec(id=disk_id, size_bytes=64 * MIB, image_id="m-x")],
                        nics=[])


def pass_(dr: DiskReconciler, spec: HostSpec) -> dict:
    errors: list[str] = []
    dr.before_domains(spec, errors)
    dr.cleanup(spec, errors)
    assert errors == []
    return dr.report_fields(spec)


@pytest.fixture
def reconciler(tmp_path):
    st = StateDir(tmp_path / "state")
    st.ensure()
    return st, DiskReconciler(st, FakeLibvirt(), OperationLog(st.operations_json))


def test_reinit_brings_the_system_disk_back_to_its_image(reconciler):
    st, dr = reconciler
    system_disk(st, OLD)
    path = st.disk_path(I, OLD)
    assert qemu_io(path, "write -P 34 0 1M").returncode == 0  # written since launch
    assert holds(path, 0x22)
    op = StorageOperationSpec(id="op-1", kind="reinit_disk", disk_id=OLD, snapshot_id="")
    rep = pass_(dr, HostSpec(host_id="h", generation=1, instances=[instance(OLD)],
                             storage_operations=[op]))
    assert [(o.id, o.ok) for o in rep["storage_operations"]] == [("op-1", True)]
    assert holds(path, 0x11), "the write since launch is gone; the image shows through"
    # one-shot: a later write survives further passes with the same spec
    assert qemu_io(path, "write -P 51 0 1M").returncode == 0
    pass_(dr, HostSpec(host_id="h", generation=2, instances=[instance(OLD)],
                       storage_operations=[op]))
    assert holds(path, 0x33)


def test_reinit_refuses_a_disk_with_snapshots(reconciler):
    st, dr = reconciler
    system_disk(st, OLD)
    path = st.disk_path(I, OLD)
    assert qemu_io(path, "write -P 34 0 1M").returncode == 0
    subprocess.run(["qemu-img", "snapshot", "-c", S1, str(path)], check=True)
    op = StorageOperationSpec(id="op-2", kind="reinit_disk", disk_id=OLD, snapshot_id="")
    rep = pass_(dr, HostSpec(host_id="h", generation=1, instances=[instance(OLD)],
                             snapshots=[SnapshotSpec(id=S1, disk_id=OLD)],
                             storage_operations=[op]))
    result = rep["storage_operations"][0]
    assert not result.ok and "snapshots" in result.message
    assert holds(path, 0x22)


def test_replaced_system_disk_is_removed_or_kept_for_its_snapshots(reconciler):
    st, dr = reconciler
    system_disk(st, OLD)
    system_disk(st, NEW)
    pass_(dr, HostSpec(host_id="h", generation=1, instances=[instance(NEW)]))
    assert not st.disk_path(I, OLD).exists() and st.disk_path(I, NEW).exists()

    other = "d-pppppppppppppppppppp"
    system_disk(st, other)
    subprocess.run(["qemu-img", "snapshot", "-c", S1, str(st.disk_path(I, other))], check=True)
    pass_(dr, HostSpec(host_id="h", generation=2, instances=[instance(NEW)],
                       snapshots=[SnapshotSpec(id=S1, disk_id=other)]))
    assert not st.disk_path(I, other).exists()
    assert retained_path(st, other).exists(), "snapshots outlive the replaced disk"
    assert st.disk_path(I, NEW).exists()
