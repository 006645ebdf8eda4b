"""Image cache GC on a host (agent/disks.py) with real qcow2 files: a base that a system
disk, a retained snapshot holder or the spec needs is never removed."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from agent.disks import DiskReconciler, collect_image_cache
from agent.records import OperationLog
from agent.spec import HostSpec, ImageSpec
from agent.state import StateDir
from agent.testing import FakeLibvirt

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img missing")


def img(path, backing=None) -> None:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        argv += ["-F", "qcow2", "-b", str(backing)]
    subprocess.run([*argv, str(path), "16M"], check=True)


@pytest.fixture
def state(tmp_path):
    st = StateDir(tmp_path / "state")
    st.ensure()
    for name in ("a", "b", "c", "d"):
        img(st.images_dir / f"{name * 64}.qcow2")
    (st.images_dir / f"{'e' * 64}.qcow2.part").write_bytes(b"half")
    inst = st.instances_dir / "i-aaaaaaaaaaaaaaaaaaaa"
    inst.mkdir()
    img(inst / "d-system0000000000000.qcow2", st.images_dir / f"{'a' * 64}.qcow2")
    (st.root / "snapshots").mkdir()
    img(st.root / "snapshots" / "d-retained00000000000.qcow2",
        st.images_dir / f"{'b' * 64}.qcow2")
    (st.root / "disks").mkdir()
    img(st.root / "disks" / "d-data0000000000000000.qcow2")
    return st


def spec_with(*shas: str) -> HostSpec:
    return HostSpec(host_id="h-x", generation=1, images=[
        ImageSpec(id=f"m-{s[:8]}", sha256=s, format="qcow2", size_bytes=1,
                  virtual_size_bytes=1, url="/x") for s in shas])


def test_only_unneeded_bases_are_removed(state):
    removed = collect_image_cache(state, spec_with("c" * 64))
    assert [p.name for p in removed] == [f"{'d' * 64}.qcow2"]
    assert sorted(p.name for p in state.images_dir.iterdir()) == [
        f"{'a' * 64}.qcow2", f"{'b' * 64}.qcow2", f"{'c' * 64}.qcow2", f"{'e' * 64}.qcow2.part"]
    # the overlay and the retained snapshot holder still open through their bases
    for disk in state.root.rglob("d-*.qcow2"):
        subprocess.run(["qemu-img", "info", "-f", "qcow2", "--backing-chain", str(disk)],
                       check=True, capture_output=True)
    # once the instance and the snapshot holder are gone, their bases go too
    shutil.rmtree(state.instances_dir / "i-aaaaaaaaaaaaaaaaaaaa")
    (state.root / "snapshots" / "d-retained00000000000.qcow2").unlink()
    assert {p.name for p in collect_image_cache(state, spec_with())} == {
        f"{'a' * 64}.qcow2", f"{'b' * 64}.qcow2", f"{'c' * 64}.qcow2"}


def test_unreadable_disk_file_means_nothing_is_collected(state):
    (state.root / "disks" / "d-broken00000000000000.qcow2").write_bytes(b"not qcow2")
    assert collect_image_cache(state, spec_with()) == []
    assert len(list(state.images_dir.iterdir())) == 5


def test_reconciler_cleanup_collects_at_most_every_period(state):
    dr = DiskReconciler(state, FakeLibvirt(), OperationLog(state.operations_json))
    spec = spec_with("a" * 64, "b" * 64, "c" * 64)
    errors: list[str] = []
    # the data disk is not in this spec, so cleanup removes it (no snapshots)
    dr.cleanup(spec, errors)
    assert errors == [] and not (state.images_dir / f"{'d' * 64}.qcow2").exists()
    img(state.images_dir / f"{'d' * 64}.qcow2")
    dr.cleanup(spec, errors)
    assert (state.images_dir / f"{'d' * 64}.qcow2").exists()  # not again within the period
