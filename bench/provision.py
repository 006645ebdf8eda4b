"""Provisioning benchmark: miniecs API vs `virt-install --import`, side by side.

On one warm rig host (image cached, VPC bridge up), launch 10 instances one
after another through the REST API and time, per instance, API call → domain
running (seen through libvirt) and API call → SSH answers (a paramiko session
that runs a command). Then boot the same guest (same cached image as a qcow2
overlay, same kind of NoCloud seed, same bridge) 10 times with
`virt-install --import` on the same libvirtd and time the same two points from
the command's start. Prints every figure, the medians, the ratios, and ends
with one headline line.

Run as root: ``make bench`` (or ``.venv/bin/python bench/provision.py``).
"""

from __future__ import annotations

import ctypes
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import libvirt  # noqa: E402
import paramiko  # noqa: E402

from agent.seed import render_seed, write_seed_iso  # noqa: E402
from agent.spec import DiskSpec, InstanceSpec, NicSpec  # noqa: E402
from tests.rig.cloud import Cloud  # noqa: E402
from tests.rig.rig import PROJECT  # noqa: E402

COUNT = int(os.environ.get("BENCH_COUNT", "10"))
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # lookups of not-yet-defined domains
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def wait_domain_running(conn: libvirt.virConnect, name: str, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if conn.lookupByName(name).isActive():
                return time.monotonic()
        except libvirt.libvirtError:
            pass
        time.sleep(0.005)
    raise TimeoutError(f"domain {name} never ran")


def ssh_probe(netns: Path, ip: str, key: paramiko.PKey, result: dict, timeout: float = 90) -> None:
    """In a thread of its own: enter the router namespace, poll until SSH runs a command."""
    fd = os.open(netns, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect(ip, username="root", pkey=key, timeout=1, banner_timeout=3,
                           auth_timeout=3, allow_agent=False, look_for_keys=False)
            _, out, _ = client.exec_command("true")
            out.channel.recv_exit_status()
            result["t"] = time.monotonic()
            return
        except (OSError, paramiko.SSHException, EOFError):
            time.sleep(0.05)
        finally:
            client.close()


def start_probe(netns: Path, ip: str, key: paramiko.PKey) -> tuple[threading.Thread, dict]:
    result: dict = {}
    t = threading.Thread(target=ssh_probe, args=(netns, ip, key, result), daemon=True)
    t.start()
    return t, result


def main() -> int:
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    image_file = PROJECT / "images" / "build" / "tiny.qcow2"
    old = Cloud.load("bench")
    if old:
        old.down()
    cloud = Cloud(name="bench")
    try:
        return run(cloud, image_file)
    finally:
        cloud.down()


def run(cloud: Cloud, image_file: Path) -> int:
    print("setting up: controller, one rig host, image, VPC ...", flush=True)
    cloud.up(hosts=1)
    host = next(iter(cloud.rig.hosts.values()))
    image = cloud.post("/images", {"name": "tiny", "format": "qcow2", "source_path": str(image_file)})
    image = cloud.wait_status(f"/images/{image['id']}", {"Available"})
    kp = cloud.post("/key-pairs", {"name": "bench"})
    key_file = cloud.path / "bench.pem"
    key_file.write_text(kp["private_key"])
    key = paramiko.Ed25519Key.from_private_key_file(str(key_file))
    vpc = cloud.post("/vpcs", {"name": "bench", "cidr_block": "10.30.0.0/16"})
    vsw = cloud.post("/vswitches", {"name": "bench", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                    "cidr_block": "10.30.1.0/24"})
    sg = cloud.post("/security-groups", {"name": "bench", "vpc_id": vpc["id"]})
    body = {"instance_type": "ecs.t1.nano", "image_id": image["id"], "vswitch_id": vsw["id"],
            "security_group_ids": [sg["id"]], "key_pair_id": kp["id"]}

    # warm the host: the image cache, the VPC's bridge and router namespace
    keeper = cloud.post("/instances", {**body, "name": "keeper", "private_ip_address": "10.30.1.250"})
    keeper = cloud.wait_status(f"/instances/{keeper['id']}", {"Running"})
    netns = cloud.router_netns(keeper)
    t, res = start_probe(netns, "10.30.1.250", key)
    t.join()
    assert "t" in res, "warm-up guest never answered SSH"
    conn = libvirt.open(host.libvirt_uri)

    print(f"\nminiecs: {COUNT} instances, one after another (API call -> ...)")
    api_dom, api_ssh = [], []
    for i in range(COUNT):
        ip = f"10.30.1.{10 + i}"
        t0 = time.monotonic()
        inst = cloud.post("/instances", {**body, "name": f"b-{i}", "private_ip_address": ip})
        probe, res = start_probe(netns, ip, key)
        t_dom = wait_domain_running(conn, inst["id"])
        probe.join()
        if "t" not in res:
            raise RuntimeError(f"{inst['id']} never answered SSH")
        api_dom.append(t_dom - t0)
        api_ssh.append(res["t"] - t0)
        print(f"  {i + 1:2d} {inst['id']}: domain running {api_dom[-1]:6.3f}s  SSH {api_ssh[-1]:6.3f}s",
              flush=True)
        cloud.delete(f"/instances/{inst['id']}", force="true")
        cloud.wait_gone(f"/instances/{inst['id']}")

    # the same guest through virt-install on the same libvirtd and bridge
    spec = cloud.get(f"/instances/{keeper['id']}")
    bridge = next(line.split(":")[1].strip().split("@")[0] for line in subprocess.run(
        ["ip", "-n", host.netns, "-o", "link", "show", "type", "bridge"],
        capture_output=True, text=True, check=True).stdout.splitlines() if "mbr-" in line)
    cached = next((host.agent_state_dir / "images").glob("*.qcow2"))
    work = cloud.path / "virt-install"
    work.mkdir(parents=True, exist_ok=True)
    print(f"\nvirt-install --import: {COUNT} guests, one after another (command start -> ...)")
    vi_dom, vi_ssh = [], []
    for i in range(COUNT):
        name, ip, mac = f"vi-{i}", f"10.30.1.{100 + i}", f"52:54:00:be:00:{i:02x}"
        disk, seed = work / f"{name}.qcow2", work / f"{name}-seed.iso"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(cached),
                        str(disk), "1G"], check=True)
        inst_spec = InstanceSpec(
            id=name, name=name, hostname=name, vcpus=1, memory_mib=256, power="running",
            disks=[DiskSpec(id="d-" + name, size_bytes=1 << 30, image_id=image["id"])],
            nics=[NicSpec(id="eni-" + name, mac=mac, ip=ip, prefix_len=24, gateway="10.30.1.1",
                          vpc_id=vpc["id"], vswitch_id=vsw["id"], bridge=bridge, tap=f"vit{i}",
                          mtu=1450)],
            ssh_authorized_keys=[kp["public_key"]])
        write_seed_iso(seed, render_seed(inst_spec))
        t0 = time.monotonic()
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "virt-install", "--connect", host.libvirt_uri,
             "--name", name, "--import", "--memory", "256", "--vcpus", "1", "--virt-type", "qemu",
             "--machine", "pc", "--osinfo", "detect=on,require=off",
             "--disk", f"path={disk},format=qcow2,bus=virtio",
             "--disk", f"path={seed},device=cdrom,bus=ide",
             "--network", f"bridge={bridge},model=virtio,mac={mac}",
             "--graphics", "none", "--serial", f"file,path={work / (name + '.log')}",
             "--noautoconsole", "--transient"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        probe, res = start_probe(netns, ip, key)
        t_dom = wait_domain_running(conn, name)
        probe.join()
        if proc.wait(timeout=60) != 0:
            raise RuntimeError(f"virt-install failed: {proc.stderr.read()}")
        if "t" not in res:
            raise RuntimeError(f"{name} never answered SSH")
        vi_dom.append(t_dom - t0)
        vi_ssh.append(res["t"] - t0)
        print(f"  {i + 1:2d} {name}: domain running {vi_dom[-1]:6.3f}s  SSH {vi_ssh[-1]:6.3f}s",
              flush=True)
        try:
            conn.lookupByName(name).destroy()
        except libvirt.libvirtError:
            pass
        disk.unlink()
        seed.unlink()

    cloud.delete(f"/instances/{keeper['id']}", force="true")
    cloud.wait_gone(f"/instances/{keeper['id']}")
    conn.close()

    md_api_dom, md_api_ssh = statistics.median(api_dom), statistics.median(api_ssh)
    md_vi_dom, md_vi_ssh = statistics.median(vi_dom), statistics.median(vi_ssh)
    print("\nmedians          miniecs   virt-install   ratio / difference")
    print(f"  domain running  {md_api_dom:6.3f}s   {md_vi_dom:6.3f}s        "
          f"ratio {md_api_dom / md_vi_dom:.2f} (target <= 1.0)")
    print(f"  SSH answers     {md_api_ssh:6.3f}s   {md_vi_ssh:6.3f}s        "
          f"{md_api_ssh - md_vi_ssh:+.3f}s (target within +1 s)")
    print(f"\nHEADLINE provision: API->domain {md_api_dom:.3f}s vs virt-install {md_vi_dom:.3f}s "
          f"(ratio {md_api_dom / md_vi_dom:.2f}); API->SSH {md_api_ssh:.3f}s vs "
          f"{md_vi_ssh:.3f}s ({md_api_ssh - md_vi_ssh:+.3f}s); n={COUNT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
