"""Crash points of the agent's storage steps, on real qcow2 files with real qemu-img.

For each point (agent/faults.py) the agent's disk reconciler runs one pass in a child
process (tests/integration/disk_driver.py) that SIGKILLs itself at that point; the test
checks that what it left is "as before or as after" (every file passes ``qemu-img check``,
every disk and snapshot reads back with the sha256 it had before or must have after), then
runs a pass again, as a restarted agent would, and checks that the operation completed
(or was reported failed) and that every byte is where it belongs. Disk contents are
pseudo-random data, read back independently with ``qemu-img convert`` to raw.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.spec import HostDiskSpec, HostSpec, SnapshotSpec, StorageOperationSpec

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-utils missing")]

PROJECT = Path(__file__).resolve().parents[2]
MIB = 1 << 20
SIZE = 16 * MIB
D, D2, D3 = "d-crashaaaaaaaaaaaaaaa", "d-crashbbbbbbbbbbbbbbb", "d-crashccccccccccccccc"
S1, S2, S3 = "s-crash1111111111111a", "s-crash2222222222222b", "s-crash3333333333333c"
OP = "op-crash0000000000000"


@dataclass
class Host:
    """A state directory driven by driver passes, with the test playing the controller."""

    root: Path
    content: dict[str, str] = field(default_factory=dict)  # "A"/"B"/"C" -> sha256
    store_dir: Path | None = None  # the controller's store (default: <root>/store)

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def store(self) -> Path:
        return self.store_dir or self.root / "store"

    def disk(self, disk_id: str) -> Path:
        return self.state / "disks" / f"{disk_id}.qcow2"

    def retained(self, disk_id: str) -> Path:
        return self.state / "snapshots" / f"{disk_id}.qcow2"

    def run(self, spec: HostSpec, fault: str | None = None, expect_errors: bool = False
            ) -> dict | None:
        """One pass; None when the fault point killed it (checked that it did)."""
        spec_file, report = self.root / "spec.json", self.root / "report.json"
        spec_file.write_text(spec.model_dump_json())
        report.unlink(missing_ok=True)
        fault_log = self.root / "faults.log"
        fault_log.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINIECS_AGENT_FAULT")}
        if fault:
            env.update(MINIECS_AGENT_FAULT=fault, MINIECS_AGENT_FAULT_LOG=str(fault_log))
        proc = subprocess.run([sys.executable, "-m", "tests.integration.disk_driver",
                               str(self.state), str(spec_file), str(report), str(self.store)],
                              cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)
        if fault:
            assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
            assert fault_log.read_text().split() == [fault.split("@")[0]]
            return None
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(report.read_text())
        assert expect_errors or out["errors"] == [], out["errors"]
        return out

    def write(self, disk_id: str, label: str) -> None:
        """Fill the whole (offline) disk with fresh pseudo-random data, as a guest would."""
        raw = self.root / "pattern.raw"
        data = os.urandom(SIZE)
        raw.write_bytes(data)
        subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "qcow2", str(raw),
                        str(self.disk(disk_id))], check=True, capture_output=True)
        raw.unlink()
        self.content[label] = hashlib.sha256(data).hexdigest()

    def read(self, path: Path, snapshot: str | None = None) -> str | None:
        """sha256 of the disk (or of one of its snapshots) read independently; None if absent."""
        raw = self.root / "read.raw"
        argv = ["qemu-img", "convert", "-U", "-f", "qcow2"]
        if snapshot:
            argv += ["-l", f"snapshot.name={snapshot}"]
        proc = subprocess.run([*argv, "-O", "raw", str(path), str(raw)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            return None
        digest = hashlib.sha256(raw.read_bytes()[:SIZE]).hexdigest()
        raw.unlink()
        return digest

    def label(self, path: Path, snapshot: str | None = None) -> str | None:
        digest = self.read(path, snapshot)
        names = [k for k, v in self.content.items() if v == digest]
        return names[0] if names else (None if digest is None else "corrupt")

    def snapshots(self, path: Path) -> set[str]:
        info = json.loads(subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", "-f", "qcow2", str(path)],
            check=True, capture_output=True, text=True).stdout)
        return {s["name"] for s in info.get("snapshots", [])}

    def check_all(self, allow_leaks: bool = False) -> None:
        """Every qcow2 the host or the store holds passes ``qemu-img check`` (no leak either,
        unless ``allow_leaks``: exit 3, clusters allocated but unused, "no harm to data")."""
        files = [*self.state.rglob("*.qcow2"), *(p for p in self.store.iterdir() if p.is_file())]
        for p in files:
            proc = subprocess.run(["qemu-img", "check", "-U", "-f", "qcow2", str(p)],
                                  capture_output=True, text=True)
            ok = (0, 3) if allow_leaks else (0,)
            assert proc.returncode in ok, f"{p}: {proc.stdout}{proc.stderr}"

    def leftovers(self) -> list[str]:
        return sorted(str(p.relative_to(self.state)) for p in self.state.rglob(".*.tmp")) + \
            sorted(str(p.relative_to(self.state)) for p in (self.state / "exports").glob("*")
                   if (self.state / "exports").exists())


def base_spec(gen: int, disks=(D,), snaps=((S1, "accomplished"), (S2, "accomplished")),
              ops=()) -> HostSpec:
    return HostSpec(host_id="h-crash", generation=gen,
                    disks=[d if isinstance(d, HostDiskSpec) else HostDiskSpec(id=d, size_bytes=SIZE)
                           for d in disks],
                    snapshots=[SnapshotSpec(id=s, disk_id=D, state=st) for s, st in snaps],
                    storage_operations=list(ops))


@pytest.fixture
def host(tmp_path) -> Host:
    """Disk D holding C, with snapshot S1 holding A and S2 holding B."""
    h = Host(tmp_path)
    h.store.mkdir()
    h.run(base_spec(1, snaps=()))
    h.write(D, "A")
    h.run(base_spec(2, snaps=((S1, "progressing"),)))
    h.write(D, "B")
    h.run(base_spec(3, snaps=((S1, "accomplished"), (S2, "progressing"))))
    h.write(D, "C")
    h.check_all()
    return h


def assert_untouched_snapshots(h: Host, path: Path) -> None:
    assert h.label(path, S1) == "A" and h.label(path, S2) == "B"


@pytest.mark.parametrize("point", ["storage.snapshot.before_take", "storage.snapshot.after_take"])
def test_snapshot_create_killed(host, point):
    spec = base_spec(4, snaps=((S1, "accomplished"), (S2, "accomplished"), (S3, "progressing")))
    host.run(spec, fault=point)
    host.check_all()
    assert host.label(host.disk(D)) == "C"
    assert host.label(host.disk(D), S3) in (None, "C")  # not taken yet, or taken whole
    report = host.run(spec)  # the restarted agent
    assert {s["id"]: s["state"] for s in report["snapshots"]}[S3] == "accomplished"
    host.check_all()
    assert host.label(host.disk(D)) == "C" and host.label(host.disk(D), S3) == "C"
    assert_untouched_snapshots(host, host.disk(D))
    assert host.snapshots(host.disk(D)) == {S1, S2, S3}


@pytest.mark.parametrize("point", ["storage.reset.before_apply", "storage.reset.after_apply"])
def test_rollback_killed(host, point):
    op = StorageOperationSpec(id=OP, kind="reset_disk", disk_id=D, snapshot_id=S1)
    spec = base_spec(4, ops=[op])
    host.run(spec, fault=point)
    host.check_all()
    assert host.label(host.disk(D)) == ("C" if point.endswith("before_apply") else "A")
    report = host.run(spec)
    assert [(r["id"], r["ok"]) for r in report["storage_operations"]] == [(OP, True)]
    host.check_all()
    assert host.label(host.disk(D)) == "A"
    assert_untouched_snapshots(host, host.disk(D))
    # recorded: a later pass with the operation still in the spec never rolls back again
    host.write(D, "D")
    host.run(spec)
    assert host.label(host.disk(D)) == "D"


@pytest.mark.parametrize("point", ["storage.snapshot_delete.before",
                                   "storage.snapshot_delete.after"])
def test_snapshot_delete_killed(host, point):
    spec = base_spec(4, snaps=((S2, "accomplished"),))
    host.run(spec, fault=point)
    host.check_all()
    assert host.snapshots(host.disk(D)) == ({S1, S2} if point.endswith("before") else {S2})
    host.run(spec)
    host.check_all()
    assert host.snapshots(host.disk(D)) == {S2}
    assert host.label(host.disk(D)) == "C" and host.label(host.disk(D), S2) == "B"


@pytest.mark.parametrize("point", ["storage.disk_delete.before", "storage.disk_delete.after"])
def test_disk_delete_killed(host, point):
    # deleted while its snapshots remain: the file is kept as their holder
    spec = base_spec(4, disks=())
    host.run(spec, fault=point)
    host.check_all()
    held = host.retained(D) if host.retained(D).exists() else host.disk(D)
    assert host.disk(D).exists() != host.retained(D).exists()  # one name, never both or none
    assert_untouched_snapshots(host, held)
    host.run(spec)
    host.check_all()
    assert not host.disk(D).exists() and host.retained(D).exists()
    assert_untouched_snapshots(host, host.retained(D))
    # the last snapshots go too: the holder is removed, killed or not
    spec = base_spec(5, disks=(), snaps=())
    host.run(spec, fault=point)
    host.run(spec)
    assert not host.retained(D).exists() and not host.disk(D).exists()
    assert host.leftovers() == []


@pytest.mark.parametrize("point", ["storage.export.after_copy", "storage.export.after_upload"])
def test_image_export_killed(host, point):
    image = "m-crashimage000000000"
    op = StorageOperationSpec(id=OP, kind="export_snapshot", disk_id=D, snapshot_id=S1,
                              upload_url=f"/api/v1/agent/images/{image}/data")
    spec = base_spec(4, ops=[op])
    host.run(spec, fault=point)
    host.check_all()
    uploaded = host.store / image
    assert uploaded.exists() == point.endswith("after_upload")
    if uploaded.exists():
        # the controller published it on receipt and took the operation out of the spec
        spec = base_spec(5)
    report = host.run(spec)
    if spec.storage_operations:
        assert [(r["id"], r["ok"]) for r in report["storage_operations"]] == [(OP, True)]
    host.check_all()
    assert host.label(uploaded) == "A"
    assert host.leftovers() == []  # the flattened copy is gone from the host
    assert host.label(host.disk(D)) == "C"
    assert_untouched_snapshots(host, host.disk(D))


def test_disk_from_snapshot_killed_before_publish(host):
    copy = HostDiskSpec(id=D2, size_bytes=SIZE, source_snapshot_id=S2, source_disk_id=D)
    spec = base_spec(4, disks=(D, copy))
    host.run(spec, fault="storage.disk_copy.before_publish")
    host.check_all()
    assert not host.disk(D2).exists()  # never a half-made disk under its real name
    host.run(spec)
    host.check_all()
    assert host.label(host.disk(D2)) == "B" and host.snapshots(host.disk(D2)) == set()
    assert host.leftovers() == []
    # killed again, then the new disk is deleted before the restart: nothing stays
    spec = base_spec(5, disks=(D, HostDiskSpec(id=D3, size_bytes=SIZE, source_snapshot_id=S1,
                                               source_disk_id=D)))
    host.run(spec, fault="storage.disk_copy.before_publish")
    host.run(base_spec(6, disks=(D,)))
    assert not host.disk(D3).exists() and host.leftovers() == []
    assert host.label(host.disk(D)) == "C"
    assert_untouched_snapshots(host, host.disk(D))


def test_data_disk_create_killed_before_publish(host):
    spec = base_spec(4, disks=(D, D3))
    host.run(spec, fault="storage.disk_create.before_publish")
    assert not host.disk(D3).exists()
    report = host.run(spec)
    assert {d["id"]: d["size_bytes"] for d in report["disks"]}[D3] == SIZE
    host.check_all()
    assert host.leftovers() == []


def test_disk_from_another_hosts_snapshot_killed_before_publish(host, tmp_path):
    """Host A exports S1 into the store; host B makes a disk from the copy (sha256 checked)."""
    import hashlib as _h

    from agent.spec import ImageSpec
    image = "m-crashtransfer000000"
    op = StorageOperationSpec(id=OP, kind="export_snapshot", disk_id=D, snapshot_id=S1,
                              upload_url=f"/api/v1/agent/images/{image}/data")
    host.run(base_spec(4, ops=[op]))
    stored = host.store / image
    digest = _h.sha256(stored.read_bytes()).hexdigest()
    b = Host(tmp_path / "host-b", content=host.content, store_dir=host.store)
    b.root.mkdir()

    def spec_b(gen: int, sha: str = digest) -> HostSpec:
        src = ImageSpec(id=image, sha256=sha, format="qcow2", size_bytes=stored.stat().st_size,
                        virtual_size_bytes=SIZE, url=f"/api/v1/agent/images/{image}/data")
        return HostSpec(host_id="h-crashb", generation=gen, disks=[HostDiskSpec(
            id=D2, size_bytes=2 * SIZE, source_snapshot_id=S1, source_image=src)])

    # a wrong digest: refused, nothing published, reported as the disk's error
    report = b.run(spec_b(1, sha="0" * 64), expect_errors=True)
    seen = {d["id"]: d for d in report["disks"]}[D2]
    assert seen["exists"] is False and "sha256 mismatch" in seen["error"]
    assert not b.disk(D2).exists() and b.leftovers() == []
    # killed after the verified download, before the rename; the restart publishes it
    b.run(spec_b(2), fault="storage.disk_transfer.before_publish")
    assert not b.disk(D2).exists()
    report = b.run(spec_b(2))
    assert {d["id"]: d["size_bytes"] for d in report["disks"]}[D2] == 2 * SIZE
    b.check_all()
    assert b.label(b.disk(D2)) == "A" and b.leftovers() == []
