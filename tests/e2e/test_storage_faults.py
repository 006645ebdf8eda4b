"""Storage faults with a real guest: the agent SIGKILLed in the middle of a live snapshot,
a rollback and a live snapshot delete (agent/faults.py points), and a host whose disk
directory is full. After the restart every operation completes or is reported failed, and
the guest's data reads back (sha256) as before or as after — never corrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from agent import faults
from tests.e2e.test_disk_snapshots import (read_pattern, region, sh, wait_operation,  # noqa: F401
                                           wait_snapshot, wait_until, write_pattern)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def restart_agent(cloud, host, fault: str | None = None) -> None:
    """Restart the host's agent (guests keep running), optionally armed to die at ``fault``."""
    host.stop_agent()
    log = cloud.path / "faults.log"
    log.unlink(missing_ok=True)
    if fault:
        os.environ[faults.ENV], os.environ[faults.LOG_ENV] = fault, str(log)
    try:
        cloud.start_agent(host)
    finally:
        os.environ.pop(faults.ENV, None)
        os.environ.pop(faults.LOG_ENV, None)


def wait_killed_at(cloud, host, point: str) -> None:
    wait_until(f"the agent to die at {point}", lambda: not cloud.agent_alive(host), timeout=60)
    host.stop_agent(signal.SIGKILL)  # reap it
    assert (cloud.path / "faults.log").read_text().split() == [point]


def qcow2_check(path) -> None:
    proc = subprocess.run(["qemu-img", "check", "-U", "-f", "qcow2", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def file_snapshots(path) -> set[str]:
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", "-f", "qcow2",
                                      str(path)], check=True, capture_output=True,
                                     text=True).stdout)
    return {s["name"] for s in info.get("snapshots", [])}


def test_agent_killed_mid_live_snapshot_rollback_and_delete(cloud, region, no_leaks):  # noqa: F811
    inst = cloud.post("/instances", {
        "name": "crash-1", "instance_type": "ecs.t1.nano", "image_id": region["image"]["id"],
        "vswitch_id": region["vswitch"]["id"], "security_group_ids": [region["sg"]["id"]],
        "key_pair_id": region["keypair"]["id"], "hostname": "crash-one"})
    inst = cloud.wait_status(f"/instances/{inst['id']}", {"Running"}, timeout=180)
    iid, host = inst["id"], cloud.host_of(inst)
    disk = cloud.post("/disks", {"size_gib": 1, "instance_id": iid})
    disk = cloud.wait_status(f"/disks/{disk['id']}", {"In_use"}, timeout=60)
    path = host.agent_state_dir / "disks" / f"{disk['id']}.qcow2"
    wait_until("vdb in the guest", lambda: sh(cloud, region, inst,
                                              "cat /sys/block/vdb/size 2>/dev/null || true").strip())
    sum_a = write_pattern(cloud, region, inst, "vdb")

    # -- live snapshot: killed after QEMU took it, before the agent reported it
    restart_agent(cloud, host, "storage.snapshot.after_take")
    snap = cloud.post("/snapshots", {"disk_id": disk["id"], "name": "killed-after"})
    wait_killed_at(cloud, host, "storage.snapshot.after_take")
    assert cloud.get(f"/snapshots/{snap['id']}")["status"] == "progressing"
    sum_b = write_pattern(cloud, region, inst, "vdb")  # the guest writes on, agent or not
    assert sum_b != sum_a
    restart_agent(cloud, host)
    wait_snapshot(cloud, snap)

    # -- live snapshot: killed just before taking it
    restart_agent(cloud, host, "storage.snapshot.before_take")
    snap2 = cloud.post("/snapshots", {"disk_id": disk["id"], "name": "killed-before"})
    wait_killed_at(cloud, host, "storage.snapshot.before_take")
    restart_agent(cloud, host)
    wait_snapshot(cloud, snap2)
    assert file_snapshots(path) == {snap["id"], snap2["id"]}

    # -- rollback: killed after qemu-img applied it, before the outcome was recorded
    cloud.post(f"/instances/{iid}/stop")
    cloud.wait_status(f"/instances/{iid}", {"Stopped"}, timeout=90)
    restart_agent(cloud, host, "storage.reset.after_apply")
    op = cloud.post(f"/disks/{disk['id']}/reset", {"snapshot_id": snap["id"]})
    wait_killed_at(cloud, host, "storage.reset.after_apply")
    assert cloud.get(f"/disk-operations/{op['id']}")["outcome"] == "pending"
    qcow2_check(path)
    restart_agent(cloud, host)
    wait_operation(cloud, op)
    qcow2_check(path)
    cloud.post(f"/instances/{iid}/start")
    inst = cloud.wait_status(f"/instances/{iid}", {"Running"}, timeout=120)
    assert read_pattern(cloud, region, inst, "vdb") == sum_a

    # -- live snapshot delete: killed after QEMU deleted it; the other one is intact
    restart_agent(cloud, host, "storage.snapshot_delete.after")
    cloud.delete(f"/snapshots/{snap2['id']}")
    wait_killed_at(cloud, host, "storage.snapshot_delete.after")
    restart_agent(cloud, host)
    wait_until("the deleted snapshot gone from the file",
               lambda: file_snapshots(path) == {snap["id"]})
    assert read_pattern(cloud, region, inst, "vdb") == sum_a
    cloud.post(f"/instances/{iid}/stop")
    cloud.wait_status(f"/instances/{iid}", {"Stopped"}, timeout=90)
    qcow2_check(path)

    cloud.delete(f"/instances/{iid}", force="true")
    cloud.wait_gone(f"/instances/{iid}")
    cloud.wait_status(f"/disks/{disk['id']}", {"Available"}, timeout=60)
    cloud.delete(f"/disks/{disk['id']}")
    cloud.delete(f"/snapshots/{snap['id']}")
    wait_until("no disk or snapshot file left", lambda: not path.exists() and not (
        host.agent_state_dir / "snapshots" / path.name).exists())
