"""Cancelling migrations before their switch-over — one real guest, two rig hosts.

``canc`` runs on h1 with a loop appending ``<counter> <epoch>`` to a file
every 0.5 s and a 1 GiB data disk with known content.

* live: 64 MiB written to the data disk and h1's underlay throttled to 8 Mbit/s
  (tc, inside the rig's h1 namespace) make libvirt's disk copy to h2 take
  over a minute (memory is copied only after the disks, so the guest is not
  slowed by auto-converge meanwhile); a few seconds into the copy, ``miniecs migration cancel
  --wait`` aborts it: the migration ends ``cancelled``, the guest never
  stopped running on h1 (its loop has no restart and no long gap), SSH works,
  h1's libvirt has no job left, and h2 holds nothing of it;
* cold: stopped, a cold migration cancelled in ``exporting`` leaves it Stopped
  on h1 with its disks as they were (it starts and its data is intact), h2
  and the controller's store hold nothing;
* afterwards a plain live migration still completes: a cancel leaves nothing
  stuck.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.e2e.conftest import TINY_IMAGE
from tests.rig.leaks import snapshot, wait_no_leaks

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

RIG_HOSTS = 2
GATEWAY = "10.34.1.1"
COUNTER = "/root/counter"
USER_DATA = f"""#!/bin/sh
setsid sh -c 'i=0; while true; do i=$((i+1)); echo "$i $(date +%s)" >> {COUNTER}; sleep 0.5; done' \
    >/dev/null 2>&1 &
"""
READ_VDB = "dd if=/dev/vdb bs=1M count=8 2>/dev/null | sha256sum"
WRITE_VDB = "dd if=/dev/urandom of=/dev/vdb bs=1M count=64 2>/dev/null && sync"


@pytest.fixture(scope="module")
def guest(cloud):
    image = json.loads(cloud.cli("image", "import", "tiny", "--file", str(TINY_IMAGE),
                                 "--wait", "-o", "json").stdout)
    key_file = cloud.path / "canc-key.pem"
    keypair = cloud.post("/key-pairs", {"name": "canc-key"})
    key_file.write_text(keypair["private_key"])
    key_file.chmod(0o600)
    vpc = cloud.post("/vpcs", {"name": "canc-vpc", "cidr_block": "10.34.0.0/16"})
    vsw = cloud.post("/vswitches", {"name": "canc-vsw", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                    "cidr_block": "10.34.1.0/24"})
    sg = cloud.post("/security-groups", {"name": "canc-sg", "vpc_id": vpc["id"]})
    cloud.cli("sg", "rule", "add", "canc-sg", "--protocol", "tcp", "--port", "22/22",
              "--peer", f"{GATEWAY}/32")
    hosts = {h["name"]: h for h in cloud.get("/hosts")["items"]}
    baseline = snapshot(cloud.rig)
    cloud.cli("host", "maintenance", "h2", "--on")  # the guest lands on h1
    inst = cloud.post("/instances", {
        "name": "canc", "hostname": "canc", "instance_type": "ecs.t1.nano",
        "image_id": image["id"], "vswitch_id": vsw["id"], "key_pair_id": keypair["id"],
        "security_group_ids": [sg["id"]], "user_data": USER_DATA})
    try:
        inst = cloud.wait_status(f"/instances/{inst['id']}", {"Running"}, timeout=300)
        cloud.cli("host", "maintenance", "h2", "--off")
        ssh_ok(cloud, key_file, inst, "true", timeout=180)
        disk = cloud.post("/disks", {"name": "canc-data", "size_gib": 1, "instance_id": inst["id"],
                                     "delete_with_instance": True})
        cloud.wait_status(f"/disks/{disk['id']}", {"In_use"}, timeout=60)
        assert eventually(lambda: ssh_ok(cloud, key_file, inst, "test -e /sys/block/vdb "
                                         "&& echo yes").strip() == "yes")
        h2_before = on_host(snapshot(cloud.rig), "h2")
        yield {"inst": inst, "key_file": key_file, "hosts": hosts, "h2_before": h2_before}
    finally:
        unthrottle(cloud)
        cloud.request("DELETE", f"/instances/{inst['id']}", ok=False, force="true")
        cloud.wait_gone(f"/instances/{inst['id']}")
        for h in hosts.values():
            cloud.request("POST", f"/hosts/{h['id']}/maintenance", ok=False, on="false")
        wait_no_leaks(cloud.rig, baseline, timeout=90)


# ---- helpers ------------------------------------------------------------------------------

def ssh_ok(cloud, key_file, inst: dict, command: str, timeout: float = 90.0) -> str:
    proc = cloud.ssh(cloud.get(f"/instances/{inst['id']}"), command, key_file, timeout=timeout)
    assert proc.returncode == 0, f"{command!r}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def eventually(fn, timeout: float = 30.0, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def on_host(items: set[str], host: str) -> set[str]:
    return {i for i in items if i.startswith(f"{host}:")}


def throttle(cloud) -> None:
    """Slow h1's underlay (where libvirt's copy to h2 leaves) to a crawl."""
    subprocess.run(cloud.rig.hosts["h1"].netns_argv(
        ["tc", "qdisc", "replace", "dev", "ul0", "root", "tbf", "rate", "8mbit",
         "burst", "32kb", "latency", "200ms"]), check=True, capture_output=True)


def unthrottle(cloud) -> None:
    subprocess.run(cloud.rig.hosts["h1"].netns_argv(["tc", "qdisc", "del", "dev", "ul0", "root"]),
                   capture_output=True)


def counter_rows(cloud, key_file, inst) -> list[tuple[int, int]]:
    rows = []
    for line in ssh_ok(cloud, key_file, inst, f"cat {COUNTER}").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            rows.append((int(parts[0]), int(parts[1])))
    return rows


def job_on(host, domain: str) -> str:
    out = host.virsh("domjobinfo", domain, check=False).stdout
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                 if ln.startswith("Job type")), "")


def h2_holds_nothing(cloud, guest) -> None:
    deadline = time.monotonic() + 90
    while (extra := on_host(snapshot(cloud.rig), "h2") - guest["h2_before"]) and \
            time.monotonic() < deadline:
        time.sleep(1)
    assert extra == set(), f"h2 still holds: {extra}"
    assert guest["inst"]["id"] not in cloud.rig.hosts["h2"].virsh("list", "--all", "--name").stdout


# ---- tests --------------------------------------------------------------------------------

def test_live_cancel_aborts_the_copy_and_the_guest_keeps_running(cloud, guest):
    key, inst = guest["key_file"], guest["inst"]
    h1 = cloud.rig.hosts["h1"]
    data_sum = ssh_ok(cloud, key, inst, f"{WRITE_VDB} && {READ_VDB}").split()[0]
    throttle(cloud)
    m = cloud.post(f"/instances/{inst['id']}/migrate", {"host_id": guest["hosts"]["h2"]["id"]})
    # wait for the copy to run: the migration in phase migrating, a job on h1's domain
    assert eventually(lambda: cloud.get(f"/migrations/{m['id']}")["state"] == "migrating",
                      timeout=60), cloud.get(f"/migrations/{m['id']}")
    assert eventually(lambda: job_on(h1, inst["id"]) not in ("", "None"), timeout=60)
    time.sleep(3)  # into the disk copy (64 MiB at 1 MB/s)
    t0 = time.monotonic()
    proc = cloud.cli("migration", "cancel", m["id"], "--wait", "-o", "json")
    took = time.monotonic() - t0
    done = json.loads(proc.stdout)
    unthrottle(cloud)
    print(f"\ncancel of a running live copy: {took:.1f}s to cancelled; agent: {done['message']!r}")
    assert (done["state"], done["is_final"]) == ("cancelled", True), done
    assert "abort" in done["message"]
    view = cloud.get(f"/instances/{inst['id']}")
    assert (view["host_id"], view["status"]) == (guest["hosts"]["h1"]["id"], "Running")
    # on h1 as before: running, persistent, no job left
    assert job_on(h1, inst["id"]) in ("", "None")
    assert inst["id"] in h1.virsh("list", "--name").stdout
    assert "yes" in h1.virsh("dominfo", inst["id"]).stdout.split("Persistent:")[1].splitlines()[0]
    # the guest never stopped: one unbroken loop, no long gap, still counting
    rows = counter_rows(cloud, key, inst)
    counters = [c for c, _ in rows]
    assert counters == list(range(1, len(counters) + 1)), "the loop restarted or lost lines"
    assert max(b[1] - a[1] for a, b in zip(rows, rows[1:])) <= 4
    assert eventually(lambda: len(counter_rows(cloud, key, inst)) > len(rows) + 2, timeout=20)
    assert ssh_ok(cloud, key, inst, READ_VDB).split()[0] == data_sum
    h2_holds_nothing(cloud, guest)
    # a cancelled migration is final: cancelling it again is refused
    again = cloud.cli("migration", "cancel", m["id"], check=False)
    assert again.returncode != 0 and "IncorrectMigrationStatus" in again.stderr + again.stdout


def test_cold_cancel_leaves_the_stopped_instance_and_its_disks(cloud, guest):
    key, inst = guest["key_file"], guest["inst"]
    digest = ssh_ok(cloud, key, inst, "dd if=/dev/urandom of=/root/payload bs=1M count=4 "
                    "2>/dev/null && sync && sha256sum /root/payload").split()[0]
    data_sum = ssh_ok(cloud, key, inst, READ_VDB).split()[0]
    cloud.cli("instance", "stop", "canc", "--wait")
    m = cloud.post(f"/instances/{inst['id']}/migrate", {"host_id": guest["hosts"]["h2"]["id"]})
    assert (m["kind"], m["state"]) == ("cold", "exporting")
    done = json.loads(cloud.cli("migration", "cancel", m["id"], "--wait", "-o", "json").stdout)
    assert (done["state"], done["is_final"]) == ("cancelled", True), done
    assert not (cloud.state_dir / "migrations" / m["id"]).exists()  # the controller's store
    view = cloud.get(f"/instances/{inst['id']}")
    assert (view["host_id"], view["status"]) == (guest["hosts"]["h1"]["id"], "Stopped")
    h2_holds_nothing(cloud, guest)
    staging = cloud.rig.hosts["h2"].agent_state_dir / "migrating" / m["id"]
    assert not staging.exists()
    cloud.cli("instance", "start", "canc", "--wait")
    assert ssh_ok(cloud, key, inst, "sha256sum /root/payload", timeout=180).split()[0] == digest
    assert ssh_ok(cloud, key, inst, READ_VDB).split()[0] == data_sum


def test_a_migration_after_cancels_still_completes(cloud, guest):
    key, inst = guest["key_file"], guest["inst"]
    done = json.loads(cloud.cli("instance", "migrate", "canc", "--host", "h2", "--wait",
                                "-o", "json").stdout)
    assert (done["state"], done["kind"]) == ("completed", "live")
    assert cloud.get(f"/instances/{inst['id']}")["host_id"] == guest["hosts"]["h2"]["id"]
    assert ssh_ok(cloud, key, inst, "hostname").strip() == "canc"
