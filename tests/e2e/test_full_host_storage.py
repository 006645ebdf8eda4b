"""A host whose disk directory is full, through the real controller and agent (no guest
boots): the agent's ``disks/`` is a 48 MiB ext4 filesystem (loop mount made and removed by
the test). A data disk, a disk from a snapshot and a snapshot that cannot fit end in Error /
failed with "host storage is full", no half-made file is left, and the existing disk and its
snapshot pass ``qemu-img check`` and read back with their sha256."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from tests.e2e.test_disk_snapshots import wait_until
from tests.integration.test_disk_full import fill

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

MIB = 1 << 20


def sha_of(path, tmp, snapshot: str | None = None) -> str:
    raw = tmp / "read.raw"
    argv = ["qemu-img", "convert", "-U", "-f", "qcow2"]
    if snapshot:
        argv += ["-l", f"snapshot.name={snapshot}"]
    subprocess.run([*argv, "-O", "raw", str(path), str(raw)], check=True, capture_output=True)
    with open(raw, "rb") as f:
        digest = hashlib.sha256(f.read(16 * MIB)).hexdigest()
    raw.unlink()
    return digest


@pytest.fixture
def small_disks_dir(cloud, tmp_path):
    host = next(iter(cloud.rig.hosts.values()))
    disks = host.agent_state_dir / "disks"
    disks.mkdir(parents=True, exist_ok=True)
    assert not list(disks.iterdir()), "the host already holds data disks"
    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(48 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(img)], check=True)
    subprocess.run(["mount", "-o", "loop", str(img), str(disks)], check=True)
    try:
        (disks / "lost+found").rmdir()
        yield host, disks
    finally:
        subprocess.run(["umount", "-l", str(disks)], check=False)


def test_full_host_storage_fails_cleanly(cloud, small_disks_dir, tmp_path, no_leaks):
    host, disks = small_disks_dir
    # seen once in a full run: the host not "ready and heartbeating" at this point (409
    # NoStock "no ready host"); this test is about a full disk, so it starts from a live host
    cloud.wait_hosts_ready(1)
    disk = cloud.post("/disks", {"size_gib": 1, "zone_id": "zone-a", "name": "kept"})
    disk = cloud.wait_status(f"/disks/{disk['id']}", {"Available"}, timeout=60)
    path = disks / f"{disk['id']}.qcow2"
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 8M", "-c",
                    "write -P 0xa5 8M 8M", str(path)], check=True, capture_output=True)
    before = sha_of(path, tmp_path)
    snap = cloud.post("/snapshots", {"disk_id": disk["id"]})
    snap = cloud.wait_status(f"/snapshots/{snap['id']}", {"accomplished"}, timeout=60)
    fill(disks)

    new = cloud.post("/disks", {"size_gib": 1, "zone_id": "zone-a", "name": "no-room"})
    copy = cloud.post("/disks", {"snapshot_id": snap["id"], "name": "no-room-copy"})
    failed = cloud.post("/snapshots", {"disk_id": disk["id"]})
    for d in (new, copy):
        got = cloud.wait_status(f"/disks/{d['id']}", {"Error"}, timeout=60)
        assert "host storage is full" in got["status_reason"], got
    got = cloud.wait_status(f"/snapshots/{failed['id']}", {"failed"}, timeout=60)
    assert "host storage is full" in got["status_reason"], got
    # the CLI shows the reason
    shown = cloud.cli("disk", "show", new["id"]).stdout
    assert "Error" in shown and "host storage is full" in shown

    assert sorted(p.name for p in disks.iterdir()) == sorted([path.name, "filler"])
    check = subprocess.run(["qemu-img", "check", "-U", "-f", "qcow2", str(path)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert sha_of(path, tmp_path) == before == sha_of(path, tmp_path, snap["id"])

    for d in (new, copy, disk):
        cloud.delete(f"/disks/{d['id']}")
    cloud.delete(f"/snapshots/{failed['id']}")
    cloud.delete(f"/snapshots/{snap['id']}")
    (disks / "filler").unlink()
    wait_until("the disk files removed", lambda: not list(disks.iterdir())
               and not os.path.exists(host.agent_state_dir / "snapshots" / path.name))
