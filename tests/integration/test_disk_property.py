"""Property test of agent/disks.py on real qcow2 files: random sequences of guest writes,
snapshot, delete-snapshot, rollback, disk-from-snapshot and disk deletion, driven through
the agent's own reconciler (host specs in, files out), checked against a model of what
every disk and every snapshot must contain.

The guest's writes are simulated with ``qemu-io`` on the (offline) disk file; every
storage step goes through ``DiskReconciler`` exactly as the agent runs it. Contents are
read back independently: ``qemu-img convert`` to raw (with ``-l snapshot.name=`` for a
snapshot), compared slot by slot.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent.disks import DiskReconciler, find_disk_files
from agent.records import OperationLog
from agent.spec import HostDiskSpec, HostSpec, SnapshotSpec, StorageOperationSpec
from agent.state import StateDir
from agent.testing import FakeLibvirt

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("qemu-io") is None, reason="qemu-utils missing")]

SLOT = 64 * 1024
SLOTS = 4
SIZE = SLOT * SLOTS
Content = tuple[int, ...]  # the byte every slot is filled with (0: never written)


def qemu_io_write(path: Path, slot: int, byte: int) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                    f"write -P {byte} {slot * SLOT} {SLOT}", str(path)],
                   check=True, capture_output=True)


def read_slots(path: Path, tmp: Path, snapshot: str | None = None) -> Content:
    """What the disk (or one of its snapshots) holds, slot by slot, read independently."""
    raw = tmp / "read.raw"
    argv = ["qemu-img", "convert", "-U", "-f", "qcow2"]
    if snapshot:
        argv += ["-l", f"snapshot.name={snapshot}"]
    subprocess.run([*argv, "-O", "raw", str(path), str(raw)], check=True, capture_output=True)
    data = raw.read_bytes()
    raw.unlink()
    out = []
    for i in range(SLOTS):
        chunk = data[i * SLOT:(i + 1) * SLOT]
        out.append(chunk[0] if chunk == bytes([chunk[0]]) * SLOT else -1)  # -1: torn
    return tuple(out)


class DiskModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="mecs-prop-"))
        self.state = StateDir(self.tmp / "state")
        self.state.ensure()
        self.dr = DiskReconciler(self.state, FakeLibvirt(), OperationLog(self.state.operations_json))
        self.n = 0
        self.generation = 0
        self.disks: dict[str, HostDiskSpec] = {}  # desired (spec)
        self.content: dict[str, Content] = {}  # disk id -> model content (live disks)
        self.snaps: dict[str, tuple[str, Content]] = {}  # snapshot id -> (disk id, content)
        self.create_disk()

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers -------------------------------------------------------------
    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n:020d}"

    def _converge(self, ops: list[StorageOperationSpec] = (), progressing: set[str] = frozenset()
                  ) -> dict:
        self.generation += 1
        spec = HostSpec(
            host_id="h-prop", generation=self.generation, disks=list(self.disks.values()),
            snapshots=[SnapshotSpec(id=s, disk_id=d, state="progressing" if s in progressing
                                    else "accomplished") for s, (d, _) in self.snaps.items()],
            storage_operations=list(ops))
        errors: list[str] = []
        self.dr.before_domains(spec, errors)
        self.dr.cleanup(spec, errors)
        assert errors == []
        return self.dr.report_fields(spec)

    def _path(self, disk_id: str) -> Path:
        return find_disk_files(self.state)[disk_id].path

    # -- rules ---------------------------------------------------------------
    @precondition(lambda self: len(self.disks) < 4)
    @rule()
    def create_disk(self) -> None:
        d = self._id("d")
        self.disks[d] = HostDiskSpec(id=d, size_bytes=SIZE)
        self.content[d] = (0,) * SLOTS
        self._converge()

    @precondition(lambda self: self.disks)
    @rule(data=st.data(), slot=st.integers(0, SLOTS - 1), byte=st.integers(1, 255))
    def write(self, data, slot: int, byte: int) -> None:
        d = data.draw(st.sampled_from(sorted(self.disks)))
        qemu_io_write(self._path(d), slot, byte)
        c = list(self.content[d])
        c[slot] = byte
        self.content[d] = tuple(c)

    @precondition(lambda self: self.disks)
    @rule(data=st.data())
    def snapshot(self, data) -> None:
        d = data.draw(st.sampled_from(sorted(self.disks)))
        s = self._id("s")
        self.snaps[s] = (d, self.content[d])
        rep = self._converge(progressing={s})
        assert {x.id: x.state for x in rep["snapshots"]}[s] == "accomplished"

    @precondition(lambda self: self.snaps)
    @rule(data=st.data())
    def delete_snapshot(self, data) -> None:
        s = data.draw(st.sampled_from(sorted(self.snaps)))
        del self.snaps[s]
        self._converge()

    @precondition(lambda self: any(d in self.disks for d, _ in self.snaps.values()))
    @rule(data=st.data())
    def rollback(self, data) -> None:
        s = data.draw(st.sampled_from(sorted(s for s, (d, _) in self.snaps.items()
                                             if d in self.disks)))
        d, content = self.snaps[s]
        op = StorageOperationSpec(id=self._id("op"), kind="reset_disk", disk_id=d, snapshot_id=s)
        rep = self._converge([op])
        assert [r.ok for r in rep["storage_operations"]] == [True], rep["storage_operations"]
        self.content[d] = content

    @precondition(lambda self: self.snaps and len(self.disks) < 4)
    @rule(data=st.data())
    def disk_from_snapshot(self, data) -> None:
        s = data.draw(st.sampled_from(sorted(self.snaps)))
        src, content = self.snaps[s]  # the source disk may be deleted (file retained)
        d = self._id("d")
        self.disks[d] = HostDiskSpec(id=d, size_bytes=SIZE, source_snapshot_id=s,
                                     source_disk_id=src)
        self.content[d] = content
        rep = self._converge()
        assert next(x for x in rep["disks"] if x.id == d).chain_depth == 1

    @precondition(lambda self: self.disks)
    @rule(data=st.data())
    def delete_disk(self, data) -> None:
        d = data.draw(st.sampled_from(sorted(self.disks)))
        del self.disks[d], self.content[d]
        self._converge()

    # -- what must hold after every step -----------------------------------------
    @invariant()
    def every_disk_and_snapshot_reads_as_modelled(self) -> None:
        files = find_disk_files(self.state)
        holders = {d for d, _ in self.snaps.values()}
        assert set(files) == set(self.disks) | holders  # nothing leaked, nothing lost
        for d, content in self.content.items():
            assert read_slots(files[d].path, self.tmp) == content, f"disk {d}"
        for s, (d, content) in self.snaps.items():
            assert read_slots(files[d].path, self.tmp, s) == content, f"snapshot {s} of {d}"


DiskModel.TestCase.settings = settings(max_examples=30, stateful_step_count=12, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
test_disk_operations_match_the_model = DiskModel.TestCase
