"""Instance operations end to end: one real tiny guest in the rig, reused by every test.

Console streaming, security groups replaced on a running instance (real traffic from
the router namespace), deletion protection, type change (the guest counts its vCPUs
and memory), host name change, system disk re-initialisation and replacement (files
written since launch are gone; the new image carries a marker file), and batch-create
refusals that leave nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import TINY_IMAGE
from tests.rig.cloud import BIN
from tests.rig.leaks import snapshot, wait_no_leaks

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

GATEWAY = "10.41.1.1"
USER_DATA = """#!/bin/sh
mkdir -p /www && echo ops-ok > /www/index.html
httpd -p 80 -h /www
"""
MARKER = "/etc/miniecs-variant"


def build_variant_image(directory: Path) -> Path:
    """The tiny image with a marker file in its root file system (loop mount of a raw copy)."""
    raw = directory / "variant.raw"
    out = directory / "variant.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(TINY_IMAGE), str(raw)],
                   check=True)
    table = json.loads(subprocess.run(["sfdisk", "-J", str(raw)], capture_output=True,
                                      text=True, check=True).stdout)
    start = table["partitiontable"]["partitions"][0]["start"] * 512
    loop = subprocess.run(["losetup", "-f", "--show", "-o", str(start), str(raw)],
                          capture_output=True, text=True, check=True).stdout.strip()
    mnt = directory / "variant-mnt"
    mnt.mkdir(exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "ext4", loop, str(mnt)], check=True)
        try:
            (mnt / MARKER.lstrip("/")).write_text("variant-b\n")
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)],
                   check=True)
    raw.unlink()
    return out


@pytest.fixture(scope="module")
def region(cloud):
    image = json.loads(cloud.cli("image", "import", "tiny", "--file", str(TINY_IMAGE),
                                 "--wait", "-o", "json").stdout)
    variant = json.loads(cloud.cli("image", "import", "tiny-variant", "--file",
                                   str(build_variant_image(cloud.path)), "--wait",
                                   "-o", "json").stdout)
    assert image["id"] != variant["id"]
    key_file = cloud.path / "ops-key.pem"
    keypair = cloud.post("/key-pairs", {"name": "ops-key"})
    key_file.write_text(keypair["private_key"])
    key_file.chmod(0o600)
    vpc = cloud.post("/vpcs", {"name": "ops-vpc", "cidr_block": "10.41.0.0/16"})
    vsw = cloud.post("/vswitches", {"name": "ops-vsw", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                    "cidr_block": "10.41.1.0/24"})
    other_vpc = cloud.post("/vpcs", {"name": "ops-other", "cidr_block": "10.42.0.0/16"})
    groups = {name: cloud.post("/security-groups", {"name": name, "vpc_id": vpc["id"]})
              for name in ("ops-ssh", "ops-web")}
    groups["ops-foreign"] = cloud.post("/security-groups",
                                       {"name": "ops-foreign", "vpc_id": other_vpc["id"]})
    cloud.cli("sg", "rule", "add", "ops-ssh", "--protocol", "tcp", "--port", "22/22",
              "--peer", f"{GATEWAY}/32", "--description", "ssh from the router")
    cloud.cli("sg", "rule", "add", "ops-web", "--protocol", "tcp", "--port", "80/80",
              "--peer", f"{GATEWAY}/32", "--description", "http from the router")
    for type_id, vcpus, memory in (("ecs.ops.one", 1, 256), ("ecs.ops.two", 2, 384)):
        cloud.post("/instance-types", {"id": type_id, "vcpus": vcpus, "memory_mib": memory})
    baseline = snapshot(cloud.rig)
    inst = cloud.post("/instances", {
        "name": "ops-1", "hostname": "ops-one", "instance_type": "ecs.ops.one",
        "image_id": image["id"], "vswitch_id": vsw["id"],
        "security_group_ids": [groups["ops-ssh"]["id"]], "key_pair_id": keypair["id"],
        "user_data": USER_DATA})
    try:
        inst = cloud.wait_status(f"/instances/{inst['id']}", {"Running"}, timeout=240)
        wait_ssh(cloud, key_file, inst)
        yield {"image": image, "variant": variant, "key_file": key_file, "groups": groups,
               "inst": inst, "vsw": vsw}
    finally:
        cloud.request("PATCH", f"/instances/{inst['id']}", {"deletion_protection": False},
                      ok=False)
        cloud.request("DELETE", f"/instances/{inst['id']}", ok=False, force="true")
        cloud.wait_gone(f"/instances/{inst['id']}")
    # no domain, disk file (the replaced system disk included), tap or chain left behind
    wait_no_leaks(cloud.rig, baseline, timeout=60)


def wait_ssh(cloud, key_file, inst, timeout: float = 180.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        proc = cloud.ssh(inst, "hostname", key_file, timeout=60)
        if proc.returncode == 0:
            return proc.stdout.strip()
        assert time.monotonic() < deadline, f"no ssh to {inst['id']}: {proc.stdout}{proc.stderr}"
        time.sleep(2)


def ssh(cloud, region, command: str) -> str:
    proc = cloud.ssh(region["inst"], command, region["key_file"])
    assert proc.returncode == 0, f"ssh {command!r}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def http_from_router(cloud, inst) -> bool:
    code = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])),"
            " timeout=3); print('open')\nexcept OSError: print('closed')")
    out = subprocess.run(["nsenter", f"--net={cloud.router_netns(inst)}", "--", sys.executable,
                          "-c", code, inst["private_ip_address"], "80"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip() == "open"


def eventually(check, expected, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while check() != expected:
        assert time.monotonic() < deadline, f"still not {expected!r} after {timeout}s"
        time.sleep(0.3)


def cli_error(cloud, *args: str) -> str:
    proc = cloud.cli(*args, check=False)
    assert proc.returncode != 0, f"miniecs {' '.join(args)} was accepted: {proc.stdout}"
    return proc.stderr


def restart(cloud, region, *, between=None) -> dict:
    """Stop the guest, run ``between`` while it is Stopped, start it and wait for SSH."""
    iid = region["inst"]["id"]
    cloud.cli("instance", "stop", iid, "--wait")
    if between is not None:
        between()
    cloud.cli("instance", "start", iid, "--wait")
    region["inst"] = cloud.get(f"/instances/{iid}")
    wait_ssh(cloud, region["key_file"], region["inst"])
    return region["inst"]


def test_console_follow_streams_new_lines(cloud, region):
    iid = region["inst"]["id"]
    # the guest prints "ready" a moment after sshd listens, so SSH answering (the fixture's
    # wait) does not mean the line is in the log yet: ask until it is
    eventually(lambda: "miniecs-tiny: ready" in cloud.cli("instance", "console", iid).stdout,
               True, timeout=60)
    env = dict(os.environ, MINIECS_ENDPOINT=cloud.url, MINIECS_TOKEN=cloud.admin_token,
               MINIECS_CONFIG=str(cloud.path / "cli.toml"), PYTHONUNBUFFERED="1",
               PYTHONFAULTHANDLER="1")  # SIGABRT prints its stacks (a hang, below)
    # Ctrl-C as at a terminal: a run started in the background of a non-interactive shell
    # (`… &`, nohup) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt
    follower = subprocess.Popen([str(BIN / "miniecs"), "instance", "console", iid, "--follow"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.set_blocking(follower.stdout.fileno(), False)
    seen = b""

    def read_until(needle: bytes, timeout: float) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while needle not in seen:
            assert follower.poll() is None, f"follower exited: {follower.stderr.read()}"
            assert time.monotonic() < deadline, f"{needle!r} not streamed; got {seen[-500:]!r}"
            chunk = follower.stdout.read()
            seen += chunk or b""
            time.sleep(0.1)

    try:
        read_until(b"miniecs-tiny: ready", 30)  # the log so far comes first
        for n in range(2):
            marker = f"ops-console-marker-{n}-{time.time_ns()}".encode()
            ssh(cloud, region, f"echo {marker.decode()} > /dev/ttyS0")
            read_until(marker, 30)  # then each new line, live
    finally:
        follower.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            follower.wait(timeout=30)
        except subprocess.TimeoutExpired:  # say where it hung, and leave no process behind
            follower.send_signal(signal.SIGABRT)
            try:
                _out, err = follower.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                follower.kill()
                _out, err = follower.communicate()
            raise AssertionError(f"Ctrl-C did not end the follower in 30 s: {err.decode()}")
    assert follower.returncode == 0, follower.stderr.read()


def test_security_groups_replaced_on_a_running_instance(cloud, region):
    inst, g = region["inst"], region["groups"]
    assert ssh(cloud, region, "timeout 5 wget -q -O - http://127.0.0.1/").strip() == "ops-ok"
    assert not http_from_router(cloud, inst), "ops-ssh admits only 22"
    cloud.cli("instance", "modify", inst["id"], "--sg", "ops-ssh", "--sg", "ops-web")
    eventually(lambda: http_from_router(cloud, inst), True)
    shown = cloud.get(f"/instances/{inst['id']}")
    assert shown["security_group_ids"] == [g["ops-ssh"]["id"], g["ops-web"]["id"]]
    err = cli_error(cloud, "instance", "modify", inst["id"], "--sg", "ops-ssh",
                    "--sg", g["ops-foreign"]["id"])
    assert "InvalidSecurityGroupId.VpcMismatch" in err
    assert http_from_router(cloud, inst), "a refused change leaves the firewall as it was"
    cloud.cli("instance", "modify", inst["id"], "--sg", "ops-ssh")
    eventually(lambda: http_from_router(cloud, inst), False)
    ssh(cloud, region, "true")  # SSH (ops-ssh) still admitted


def test_deletion_protection_blocks_delete(cloud, region):
    iid = region["inst"]["id"]
    cloud.cli("instance", "modify", iid, "--deletion-protection")
    err = cli_error(cloud, "instance", "delete", iid, "--force")
    assert "InvalidOperation.DeletionProtection" in err
    assert cloud.get(f"/instances/{iid}")["status"] == "Running"
    cloud.cli("instance", "modify", iid, "--no-deletion-protection")
    assert cloud.get(f"/instances/{iid}")["deletion_protection"] is False


def _meminfo_mib(text: str) -> int:
    line = next(ln for ln in text.splitlines() if ln.startswith("MemTotal:"))
    return int(line.split()[1]) // 1024


def test_type_change_and_hostname_seen_by_the_guest(cloud, region):
    iid = region["inst"]["id"]
    assert ssh(cloud, region, "grep -c ^processor /proc/cpuinfo").strip() == "1"
    assert _meminfo_mib(ssh(cloud, region, "cat /proc/meminfo")) < 256
    err = cli_error(cloud, "instance", "change-type", iid, "--type", "ecs.ops.two")
    assert "IncorrectInstanceStatus" in err
    assert cloud.get(f"/instances/{iid}")["instance_type"] == "ecs.ops.one"

    def change():
        cloud.cli("instance", "change-type", iid, "--type", "ecs.ops.two")
        cloud.cli("instance", "modify", iid, "--hostname", "ops-renamed")

    inst = restart(cloud, region, between=change)
    assert (inst["instance_type"], inst["vcpus"], inst["memory_mib"]) == ("ecs.ops.two", 2, 384)
    assert ssh(cloud, region, "grep -c ^processor /proc/cpuinfo").strip() == "2"
    assert 256 < _meminfo_mib(ssh(cloud, region, "cat /proc/meminfo")) <= 384
    assert ssh(cloud, region, "hostname").strip() == "ops-renamed"


def test_reinit_loses_files_written_since_launch(cloud, region):
    iid = region["inst"]["id"]
    ssh(cloud, region, "echo written > /root/since-launch && sync")
    disk_before = region["inst"]["disks"][0]["id"]
    err = cli_error(cloud, "instance", "reinit-disk", iid)
    assert "IncorrectInstanceStatus" in err

    def reinit():
        op = json.loads(cloud.cli("instance", "reinit-disk", iid, "--wait", "-o", "json").stdout)
        assert op["outcome"] == "succeeded", op

    inst = restart(cloud, region, between=reinit)
    assert inst["disks"][0]["id"] == disk_before, "ReInitDisk keeps the disk"
    assert ssh(cloud, region, "test -e /root/since-launch && echo kept || echo gone").strip() \
        == "gone"
    assert ssh(cloud, region, "hostname").strip() == "ops-renamed", "the seed applies again"


def test_replace_system_disk_boots_the_new_image_on_the_same_nic(cloud, region):
    before = region["inst"]
    ssh(cloud, region, "echo old > /root/before-replace && sync")
    assert ssh(cloud, region, f"cat {MARKER} 2>/dev/null || echo none").strip() == "none"

    def replace():
        cloud.cli("instance", "replace-system-disk", before["id"], "--image", "tiny-variant")

    inst = restart(cloud, region, between=replace)
    assert inst["disks"][0]["id"] != before["disks"][0]["id"]
    assert inst["image_id"] == region["variant"]["id"]
    assert (inst["private_ip_address"], inst["mac_address"]) == \
        (before["private_ip_address"], before["mac_address"])
    assert ssh(cloud, region, f"cat {MARKER}").strip() == "variant-b"
    assert ssh(cloud, region, "test -e /root/before-replace && echo kept || echo gone").strip() \
        == "gone"
    host = cloud.host_of(inst)
    files = {p.name for p in (host.agent_state_dir / "instances" / inst["id"]).iterdir()}
    assert f"{before['disks'][0]['id']}.qcow2" not in files, "the old system disk is released"


def test_batch_create_runs_patterned_instances_once_per_token(cloud, region):
    args = ["instance", "create", "ops-b-[1,2]", "--count", "2", "--type", "ecs.ops.one",
            "--image", "tiny", "--vswitch", region["vsw"]["id"], "--sg", "ops-ssh",
            "--hostname", "ops-b[8,1]", "--keypair", "ops-key", "--client-token", "ops-batch",
            "-o", "json"]
    made = json.loads(cloud.cli(*args).stdout)["items"]
    try:
        assert [i["name"] for i in made] == ["ops-b-01", "ops-b-02"]
        again = json.loads(cloud.cli(*args).stdout)["items"]
        assert [i["id"] for i in again] == [i["id"] for i in made], "one batch per token"
        for inst, host_name in zip(made, ("ops-b8", "ops-b9")):
            inst = cloud.wait_status(f"/instances/{inst['id']}", {"Running"}, timeout=240)
            assert wait_ssh(cloud, region["key_file"], inst) == host_name
    finally:
        for inst in made:
            cloud.request("DELETE", f"/instances/{inst['id']}", ok=False, force="true")
        for inst in made:
            cloud.wait_gone(f"/instances/{inst['id']}")


def test_batch_refusals_create_nothing(cloud, region):
    base = ["instance", "create", "--type", "ecs.ops.one", "--image", "tiny",
            "--vswitch", region["vsw"]["id"], "--sg", "ops-ssh"]
    before = {i["id"] for i in cloud.get("/instances")["items"]}
    assert "InvalidParameter.Amount" in cli_error(cloud, *base, "b-[1,2]", "--count", "101")
    err = cli_error(cloud, *base, "b-[1,2", "--count", "2")
    assert "InvalidParameter.NamePattern" in err and "name" in err
    err = cli_error(cloud, *base, "b-[1,2]", "--count", "2", "--hostname", "h-[1,9]")
    assert "InvalidParameter.HostnamePattern" in err
    assert {i["id"] for i in cloud.get("/instances")["items"]} == before
