"""Migration end to end: host maintenance, live and cold migration, drain — real guests.

Two rig hosts. Two tiny guests are made on h1 while h2 is in maintenance (so
maintenance is shown to keep new instances off h2):

* ``mover`` serves HTTP on 8080 (allowed by its group from anywhere) and 8081
  (not allowed), and runs a loop appending ``<counter> <epoch>`` to a file
  every 0.5 s; it has an EIP;
* ``probe`` is another guest of the VPC, the "other guest" of the
  security-group checks.

Then: bad input changes nothing; ``mover`` live-migrates to h2 (its loop never
stops, SSH on the same IP, its group applies there, the EIP follows, h1 keeps
nothing of it); stopped, it cold-migrates back to h1 with its disk intact;
finally h1 is drained (``probe`` live, ``mover`` cold) and holds nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from agent.firewall_render import suffix
from tests.e2e.conftest import TINY_IMAGE
from tests.rig.cloud import ApiError
from tests.rig.leaks import snapshot, wait_no_leaks

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

RIG_HOSTS = 2
GATEWAY = "10.33.1.1"
COUNTER = "/root/counter"
MOVER_DATA = f"""#!/bin/sh
mkdir -p /www && echo mig-ok > /www/index.html
httpd -p 8080 -h /www
httpd -p 8081 -h /www
setsid sh -c 'i=0; while true; do i=$((i+1)); echo "$i $(date +%s)" >> {COUNTER}; sleep 0.5; done' \
    >/dev/null 2>&1 &
"""
INET_PORT = 8080
READ_VDB = "dd if=/dev/vdb bs=1M count=8 2>/dev/null | sha256sum"
WRITE_VDB = "dd if=/dev/urandom of=/dev/vdb bs=1M count=8 2>/dev/null && sync"


@pytest.fixture(scope="module")
def region(cloud):
    image = json.loads(cloud.cli("image", "import", "tiny", "--file", str(TINY_IMAGE),
                                 "--wait", "-o", "json").stdout)
    key_file = cloud.path / "mig-key.pem"
    keypair = cloud.post("/key-pairs", {"name": "mig-key"})
    key_file.write_text(keypair["private_key"])
    key_file.chmod(0o600)
    vpc = cloud.post("/vpcs", {"name": "mig-vpc", "cidr_block": "10.33.0.0/16"})
    vsw = cloud.post("/vswitches", {"name": "mig-vsw", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                    "cidr_block": "10.33.1.0/24"})
    sg = cloud.post("/security-groups", {"name": "mig-sg", "vpc_id": vpc["id"]})
    # the probe in a group of its own: members of one group reach each other on every port
    probe_sg = cloud.post("/security-groups", {"name": "probe-sg", "vpc_id": vpc["id"]})
    for name in ("mig-sg", "probe-sg"):
        cloud.cli("sg", "rule", "add", name, "--protocol", "tcp", "--port", "22/22",
                  "--peer", f"{GATEWAY}/32", "--description", "ssh from the router")
    cloud.cli("sg", "rule", "add", "mig-sg", "--protocol", "tcp", "--port", "8080/8080",
              "--peer", "0.0.0.0/0", "--description", "web from anywhere")
    hosts = {h["name"]: h for h in cloud.get("/hosts")["items"]}
    baseline = snapshot(cloud.rig)
    # maintenance keeps new instances off h2
    cloud.cli("host", "maintenance", "h2", "--on")
    body = {"instance_type": "ecs.t1.nano", "image_id": image["id"], "vswitch_id": vsw["id"],
            "key_pair_id": keypair["id"], "security_group_ids": [sg["id"]]}
    made = [cloud.post("/instances", {**body, "name": "mover", "hostname": "mover",
                                      "user_data": MOVER_DATA}),
            cloud.post("/instances", {**body, "name": "probe", "hostname": "probe",
                                      "security_group_ids": [probe_sg["id"]]})]
    eip = None
    snapshots: list[dict] = []
    try:
        guests = {i["name"]: cloud.wait_status(f"/instances/{i['id']}", {"Running"}, timeout=300)
                  for i in made}
        eip = json.loads(cloud.cli("eip", "allocate", "--name", "mig-eip", "-o", "json").stdout)
        cloud.cli("eip", "associate", eip["id"], "--instance", guests["mover"]["id"])
        for g in guests.values():
            ssh_ok(cloud, key_file, g, "true", timeout=180)
        # a data disk on the mover: live migration copies it, cold migration moves its file
        disk = cloud.post("/disks", {"name": "mover-data", "size_gib": 1,
                                     "instance_id": guests["mover"]["id"],
                                     "delete_with_instance": True})
        cloud.wait_status(f"/disks/{disk['id']}", {"In_use"}, timeout=60)
        assert eventually(lambda: ssh_ok(cloud, key_file, guests["mover"],
                                         "test -e /sys/block/vdb && echo yes").strip() == "yes")
        yield {"key_file": key_file, "hosts": hosts, "guests": guests, "eip": eip,
               "baseline": baseline, "sg": sg, "disk": disk, "snapshots": snapshots}
    finally:
        for snap in snapshots:
            cloud.request("DELETE", f"/snapshots/{snap['id']}", ok=False)
        if eip:
            cloud.request("POST", f"/eips/{eip['id']}/disassociate", ok=False)
            cloud.request("DELETE", f"/eips/{eip['id']}", ok=False)
        for inst in made:
            cloud.request("DELETE", f"/instances/{inst['id']}", ok=False, force="true")
        for inst in made:
            cloud.wait_gone(f"/instances/{inst['id']}")
        for h in hosts.values():
            cloud.request("POST", f"/hosts/{h['id']}/maintenance", ok=False, on="false")
        wait_no_leaks(cloud.rig, baseline, timeout=90)


# ---- helpers ------------------------------------------------------------------------------

def fresh(cloud, inst: dict) -> dict:
    return cloud.get(f"/instances/{inst['id']}")


def ssh_ok(cloud, key_file, inst: dict, command: str, timeout: float = 90.0) -> str:
    proc = cloud.ssh(fresh(cloud, inst), command, key_file, timeout=timeout)
    assert proc.returncode == 0, f"{inst['name']}: {command!r}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def tcp_from(cloud, key_file, src: dict, ip: str, port: int) -> bool:
    """Can guest ``src`` open a new TCP connection (HTTP) to ``ip:port``?"""
    out = ssh_ok(cloud, key_file, src,
                 f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}; true")
    return "mig-ok" in out


def inet_fetch(cloud, ip: str, port: int = INET_PORT) -> str | None:
    probe = ("import sys,urllib.request;print(urllib.request.urlopen("
             f"'http://{ip}:{port}/', timeout=3).read().decode().strip())")
    proc = subprocess.run(cloud.rig.internet_argv([sys.executable, "-c", probe]),
                          capture_output=True, text=True, timeout=20)
    return proc.stdout.strip() if proc.returncode == 0 else None


def eventually(fn, timeout: float = 30.0, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_migration(cloud, migration: dict, timeout: float = 600.0) -> dict:
    deadline = time.monotonic() + timeout
    while not migration["is_final"]:
        assert time.monotonic() < deadline, f"migration still {migration['state']}"
        time.sleep(0.2)
        migration = cloud.get(f"/migrations/{migration['id']}")
    return migration


def traces_on(cloud, host_name: str, inst: dict) -> list[str]:
    """Everything of ``inst`` on a rig host: domain, disk files, tap, firewall lines."""
    host = cloud.rig.hosts[host_name]
    tap = tap_of(cloud, inst)
    disks = [d["id"] for d in cloud.get("/disks", instance_id=inst["id"])["items"]]
    marks = [inst["id"], tap, suffix(tap), *disks]
    found = [item for item in snapshot(cloud.rig) if item.startswith(f"{host_name}:")
             and any(m in item for m in marks)]
    for argv in (["iptables-save"], ["ebtables-save"]):
        out = subprocess.run(host.netns_argv(argv), capture_output=True, text=True).stdout
        found += [f"{argv[0]}: {line}" for line in out.splitlines()
                  if tap in line or suffix(tap) in line]
    return found


def tap_of(cloud, inst: dict) -> str:
    nic = fresh(cloud, inst)["nics"][0]
    return "mtap" + nic["id"].split("-", 1)[1][:11]


def counter_lines(cloud, key_file, inst) -> list[tuple[int, int]]:
    out = ssh_ok(cloud, key_file, inst, f"cat {COUNTER}")
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            rows.append((int(parts[0]), int(parts[1])))
    return rows


def host_id(region, name: str) -> str:
    return region["hosts"][name]["id"]


# ---- tests --------------------------------------------------------------------------------

def test_maintenance_keeps_new_instances_off(cloud, region):
    for g in region["guests"].values():
        assert fresh(cloud, g)["host_id"] == host_id(region, "h1")
    h2 = cloud.get(f"/hosts/{host_id(region, 'h2')}")
    assert h2["state"] == "maintenance" and h2["maintenance"] is True


def test_bad_input_changes_nothing(cloud, region):
    mover = region["guests"]["mover"]
    before = {h: cloud.get(f"/hosts/{region['hosts'][h]['id']}")["allocated"]
              for h in ("h1", "h2")}
    cases = [
        (f"/instances/{mover['id']}/migrate", {"host_id": host_id(region, "h1")}, 400,
         "InvalidHostId.SameAsSource"),
        (f"/instances/{mover['id']}/migrate", {"host_id": host_id(region, "h2")}, 409,
         "IncorrectHostStatus.Maintenance"),
        (f"/instances/{mover['id']}/migrate", {}, 409, "OperationDenied.NoStock"),
        (f"/instances/{mover['id']}/migrate", {"host_id": "h-nosuchhost0000000000"}, 404,
         "InvalidHostId.NotFound"),
        ("/instances/i-nosuchinstance000000/migrate", {}, 404, "InvalidInstanceId.NotFound"),
        (f"/instances/{mover['id']}/migrate", {"host_id": host_id(region, "h2"), "x": 1}, 400,
         None),
    ]
    for path, body, status, code in cases:
        with pytest.raises(ApiError) as exc:
            cloud.post(path, body)
        assert exc.value.status_code == status, (path, body, exc.value.body)
        if code:
            assert exc.value.body["code"] == code, exc.value.body
    # the CLI says the same
    proc = cloud.cli("instance", "migrate", "mover", "--host", "h1", check=False)
    assert proc.returncode != 0 and "InvalidHostId.SameAsSource" in proc.stderr + proc.stdout
    assert cloud.get("/migrations")["items"] == []
    assert fresh(cloud, mover)["host_id"] == host_id(region, "h1")
    assert {h: cloud.get(f"/hosts/{region['hosts'][h]['id']}")["allocated"]
            for h in ("h1", "h2")} == before


def test_live_migration_keeps_the_guest_running(cloud, region):
    key, mover, probe = region["key_file"], region["guests"]["mover"], region["guests"]["probe"]
    ip = mover["private_ip_address"]
    eip = region["eip"]["ip_address"]
    assert tcp_from(cloud, key, probe, ip, 8080) and not tcp_from(cloud, key, probe, ip, 8081)
    assert eventually(lambda: inet_fetch(cloud, eip)) == "mig-ok"
    assert len(counter_lines(cloud, key, mover)) > 2
    data_sum = ssh_ok(cloud, key, mover, f"{WRITE_VDB} && {READ_VDB}").split()[0]
    cloud.cli("host", "maintenance", "h2", "--off")

    # outside view of the outage: HTTP from h1's router namespace, every 0.2 s
    router_ns = cloud.router_netns(fresh(cloud, mover))
    gaps: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        code = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], 8080),"
                " timeout=1).close(); print('up')\nexcept OSError: print('down')")
        last_up = time.monotonic()
        while not stop.is_set():
            out = subprocess.run(["nsenter", f"--net={router_ns}", "--", sys.executable, "-c",
                                  code, ip], capture_output=True, text=True, timeout=20).stdout
            if out.strip() == "up":
                gaps.append(time.monotonic() - last_up)
                last_up = time.monotonic()
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    out = cloud.cli("instance", "migrate", "mover", "--wait", "-o", "json")
    took = time.monotonic() - t0
    migration = json.loads(out.stdout)
    time.sleep(3)
    stop.set()
    watcher.join(30)
    print(f"\nlive migration of a tiny guest: {took:.1f}s end to end (CLI), "
          f"{migration['duration_s']}s recorded, agent: {migration['message']!r}; "
          f"longest HTTP outage seen from h1's router: {max(gaps, default=0):.1f}s")
    assert migration["state"] == "completed" and migration["kind"] == "live"
    assert migration["target_host_id"] == host_id(region, "h2")
    moved = fresh(cloud, mover)
    assert moved["host_id"] == host_id(region, "h2") and moved["status"] == "Running"
    assert moved["private_ip_address"] == ip
    assert moved["nics"][0]["mac_address"] == mover["nics"][0]["mac_address"]
    h2 = cloud.rig.hosts["h2"]
    assert mover["id"] in h2.virsh("list", "--name").stdout

    # the loop never stopped: consecutive counter, no gap of more than a few seconds
    time.sleep(2)
    rows = counter_lines(cloud, key, mover)
    counters = [c for c, _ in rows]
    assert counters == list(range(1, len(counters) + 1)), "the loop restarted or lost lines"
    biggest = max(b[1] - a[1] for a, b in zip(rows, rows[1:]))
    assert biggest <= 4, f"a {biggest}s gap in the guest's loop"
    # and it still runs on h2
    n = len(rows)
    assert eventually(lambda: len(counter_lines(cloud, key, mover)) > n + 2, timeout=20)

    # the data disk came along, content and all
    assert ssh_ok(cloud, key, mover, READ_VDB).split()[0] == data_sum
    assert cloud.get(f"/disks/{region['disk']['id']}")["host_id"] == host_id(region, "h2")

    # security group applies on the new host: 8080 open, 8081 closed, from the other guest
    assert eventually(lambda: tcp_from(cloud, key, probe, ip, 8080), timeout=30)
    assert not tcp_from(cloud, key, probe, ip, 8081)
    # the EIP follows
    assert eventually(lambda: inet_fetch(cloud, eip) == "mig-ok", timeout=30)
    # the old host holds nothing of it
    deadline = time.monotonic() + 60
    while (left := traces_on(cloud, "h1", mover)) and time.monotonic() < deadline:
        time.sleep(1)
    assert left == [], f"h1 still holds: {left}"


def test_cold_migration_moves_a_stopped_instance_with_its_data(cloud, region):
    key, mover = region["key_file"], region["guests"]["mover"]
    digest = ssh_ok(cloud, key, mover, "dd if=/dev/urandom of=/root/payload bs=1M count=4 "
                    "2>/dev/null && sync && sha256sum /root/payload").split()[0]
    data_sum = ssh_ok(cloud, key, mover, READ_VDB).split()[0]
    # a snapshot of the data disk: live migration cannot carry it and says so
    snap = cloud.post("/snapshots", {"disk_id": region["disk"]["id"], "name": "before-move"})
    region["snapshots"].append(snap)
    cloud.wait_status(f"/snapshots/{snap['id']}", {"accomplished"}, timeout=60)
    with pytest.raises(ApiError) as refused:
        cloud.post(f"/instances/{mover['id']}/migrate", {"host_id": host_id(region, "h1")})
    assert (refused.value.status_code, refused.value.body["code"]) == \
        (409, "OperationDenied.DiskHasSnapshots")
    ssh_ok(cloud, key, mover, "dd if=/dev/urandom of=/dev/vdb bs=1M count=8 2>/dev/null; sync")
    cloud.cli("instance", "stop", "mover", "--wait")
    migration = json.loads(cloud.cli("instance", "migrate", "mover", "--host", "h1", "--wait",
                                     "-o", "json").stdout)
    print(f"\ncold migration of a tiny guest: {migration['duration_s']}s")
    assert migration["state"] == "completed" and migration["kind"] == "cold"
    moved = fresh(cloud, mover)
    assert moved["host_id"] == host_id(region, "h1") and moved["status"] == "Stopped"
    # the snapshot came inside the data disk's file: it follows the disk and rolls it back
    snap_now = cloud.get(f"/snapshots/{snap['id']}")
    assert (snap_now["status"], snap_now["host_id"]) == ("accomplished", host_id(region, "h1"))
    op = cloud.post(f"/disks/{region['disk']['id']}/reset", {"snapshot_id": snap["id"]})
    op = eventually(lambda: (o := cloud.get(f"/disk-operations/{op['id']}"))["is_final"] and o,
                    timeout=60)
    assert op and op["outcome"] == "succeeded", op
    cloud.cli("instance", "start", "mover", "--wait")
    assert ssh_ok(cloud, key, mover, "sha256sum /root/payload", timeout=180).split()[0] == digest
    assert ssh_ok(cloud, key, mover, READ_VDB).split()[0] == data_sum
    assert mover["id"] in cloud.rig.hosts["h1"].virsh("list", "--name").stdout
    deadline = time.monotonic() + 60
    while (left := traces_on(cloud, "h2", mover)) and time.monotonic() < deadline:
        time.sleep(1)
    assert left == [], f"h2 still holds: {left}"


def test_drain_moves_everything_off_the_host(cloud, region):
    key, mover, probe = region["key_file"], region["guests"]["mover"], region["guests"]["probe"]
    cloud.cli("instance", "stop", "mover", "--wait")  # one cold, one live
    proc = cloud.cli("host", "drain", "h1", "--wait", "-o", "json")
    status = json.loads(proc.stdout)
    assert status["done"] and status["instances_left"] == [] and status["maintenance"]
    kinds = sorted(m["kind"] for m in status["migrations"])
    assert kinds == ["cold", "live"], status["migrations"]
    for g in (mover, probe):
        assert fresh(cloud, g)["host_id"] == host_id(region, "h2")
    assert ssh_ok(cloud, key, probe, "hostname").strip() == "probe"
    # h1 holds nothing of either
    for g in (mover, probe):
        deadline = time.monotonic() + 60
        while (left := traces_on(cloud, "h1", g)) and time.monotonic() < deadline:
            time.sleep(1)
        assert left == [], f"h1 still holds: {left}"
    # maintenance keeps a new instance off the drained host
    assert cloud.get(f"/hosts/{host_id(region, 'h1')}")["state"] == "maintenance"
