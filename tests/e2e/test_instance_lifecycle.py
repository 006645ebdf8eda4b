"""Foundation end to end: real guests on a real libvirtd in the rig, checked over SSH."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from agent.nft import Nft
from tests.e2e.conftest import TINY_IMAGE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def region(cloud):
    """Image, key pair, VPC, vSwitch and security group shared by this module's tests."""
    image = json.loads(cloud.cli("image", "import", "tiny", "--file", str(TINY_IMAGE),
                                 "--wait", "-o", "json").stdout)
    assert image["status"] == "Available"
    key_file = cloud.path / "e2e-key.pem"
    keypair = cloud.post("/key-pairs", {"name": "e2e-key"})
    key_file.write_text(keypair["private_key"])
    key_file.chmod(0o600)
    vpc = cloud.post("/vpcs", {"name": "e2e-vpc", "cidr_block": "10.20.0.0/16"})
    vsw = cloud.post("/vswitches", {"name": "e2e-vsw", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                    "cidr_block": "10.20.1.0/24"})
    sg = cloud.post("/security-groups", {"name": "e2e-sg", "vpc_id": vpc["id"]})
    # SSH comes from the router namespace, i.e. from the vSwitch gateway: security groups
    # treat it like any source, and a normal group drops ingress from non-members.
    cloud.post(f"/security-groups/{sg['id']}/rules",
               {"direction": "ingress", "protocol": "tcp", "port_range": "22/22",
                "peer_cidr": "10.20.1.1/32", "description": "ssh from the router"})
    return {"image": image, "keypair": keypair, "key_file": key_file, "vpc": vpc,
            "vswitch": vsw, "sg": sg}


def launch(cloud, region, name: str, hostname: str, **extra) -> dict:
    body = {"name": name, "instance_type": "ecs.t1.nano", "image_id": region["image"]["id"],
            "vswitch_id": region["vswitch"]["id"], "security_group_ids": [region["sg"]["id"]],
            "key_pair_id": region["keypair"]["id"], "hostname": hostname, **extra}
    inst = cloud.post("/instances", body)
    assert inst["status"] == "Pending"
    return cloud.wait_status(f"/instances/{inst['id']}", {"Running"}, timeout=120)


def ssh_ok(cloud, region, inst: dict, command: str) -> str:
    proc = cloud.ssh(inst, command, region["key_file"])
    assert proc.returncode == 0, f"ssh {command!r} failed: {proc.stdout}{proc.stderr}"
    return proc.stdout


def destroy(cloud, inst: dict) -> None:
    cloud.delete(f"/instances/{inst['id']}", force="true")
    cloud.wait_gone(f"/instances/{inst['id']}")


def qemu_pid(cloud, inst: dict) -> int:
    host = cloud.host_of(inst)
    return int((host.path / "run" / "qemu" / f"{inst['id']}.pid").read_text())


def test_boot_ssh_hostname_file_survives_stop_start_and_delete_cleans_up(cloud, region, no_leaks):
    created = json.loads(cloud.cli(
        "instance", "create", "web-1", "--type", "ecs.t1.nano", "--image", region["image"]["id"],
        "--vswitch", region["vswitch"]["id"], "--sg", region["sg"]["id"],
        "--keypair", region["keypair"]["id"], "--hostname", "web-one", "--wait", "-o", "json").stdout)
    assert created["status"] == "Running"
    inst = cloud.get(f"/instances/{created['id']}")
    host = cloud.host_of(inst)
    assert host.virsh("domstate", inst["id"]).stdout.strip() == "running"

    out = ssh_ok(cloud, region, inst, "hostname; ip -4 -o addr show eth0; cat /sys/class/net/eth0/mtu")
    lines = out.split("\n")
    assert lines[0] == "web-one"
    assert f"inet {inst['private_ip_address']}/24" in lines[1]
    assert lines[2] == "1450"
    deadline = time.monotonic() + 30  # the agent pushes console output after its reports
    while "miniecs-tiny: ready" not in cloud.cli("instance", "console", inst["id"]).stdout:
        assert time.monotonic() < deadline, "console log never reached the controller"
        time.sleep(0.5)

    ssh_ok(cloud, region, inst, "echo precious-$(hostname) > /root/persist && sync")
    cloud.post(f"/instances/{inst['id']}/stop")
    cloud.wait_status(f"/instances/{inst['id']}", {"Stopped"}, timeout=90)
    assert host.virsh("domstate", inst["id"]).stdout.strip() == "shut off"
    cloud.post(f"/instances/{inst['id']}/start")
    inst = cloud.wait_status(f"/instances/{inst['id']}", {"Running"}, timeout=90)
    assert ssh_ok(cloud, region, inst, "cat /root/persist").strip() == "precious-web-one"

    instance_dir = host.agent_state_dir / "instances" / inst["id"]
    assert instance_dir.exists()
    destroy(cloud, inst)
    assert host.virsh("domstate", inst["id"], check=False).returncode != 0
    deadline = time.monotonic() + 30
    while instance_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not instance_dir.exists(), "disk and seed left behind"


def test_reboot_restarts_the_guest(cloud, region, no_leaks):
    inst = launch(cloud, region, "reboot-1", "reboot-one")
    boot_id = ssh_ok(cloud, region, inst, "cat /proc/sys/kernel/random/boot_id").strip()
    op = cloud.post(f"/instances/{inst['id']}/reboot", {"force": True})
    deadline = time.monotonic() + 60
    while cloud.get(f"/operations/{op['id']}")["outcome"] == "pending":
        assert time.monotonic() < deadline, "reboot operation never completed"
        time.sleep(0.2)
    assert cloud.get(f"/operations/{op['id']}")["outcome"] == "succeeded"
    after = ssh_ok(cloud, region, inst, "cat /proc/sys/kernel/random/boot_id").strip()
    assert after and after != boot_id
    destroy(cloud, inst)


def test_a_guest_poweroff_is_stopped_not_restarted_and_starts_again(cloud, region, no_leaks):
    """`poweroff` inside the guest: the instance is Stopped, as ECS shows it (its desired
    power becomes stopped, with the reason and an event), the agent leaves the domain
    off, and `instance start` boots it again."""
    inst = launch(cloud, region, "off-1", "off-one")
    host = cloud.host_of(inst)
    path = f"/instances/{inst['id']}"
    boot_id = ssh_ok(cloud, region, inst, "cat /proc/sys/kernel/random/boot_id").strip()
    ssh_ok(cloud, region, inst, "(sleep 1; poweroff) >/dev/null 2>&1 </dev/null &")
    stopped = cloud.wait_status(path, {"Stopped"}, timeout=90)
    assert stopped["desired_power"] == "stopped", stopped
    assert "powered itself off" in stopped["status_reason"]
    assert host.virsh("domstate", "--reason", inst["id"]).stdout.strip() == \
        "shut off (shutdown)"
    # the agent has applied the spec that says stopped, and passes since leave it off
    deadline = time.monotonic() + 30
    while (h := cloud.get(f"/hosts/{inst['host_id']}"))["generation_applied"] < \
            h["generation"]:
        assert time.monotonic() < deadline, "the agent never applied the stopped spec"
        time.sleep(0.3)
    time.sleep(3)
    assert host.virsh("domstate", inst["id"]).stdout.strip() == "shut off"
    assert cloud.get(path)["status"] == "Stopped"
    events = cloud.get("/events", resource_id=inst["id"])["items"]
    assert any(e.get("new_status") == "Stopped" and "powered itself off" in e["message"]
               for e in events), events

    started = json.loads(cloud.cli("instance", "start", inst["id"], "--wait",
                                   "-o", "json").stdout)
    assert started["status"] == "Running"
    after = ssh_ok(cloud, region, cloud.get(path), "cat /proc/sys/kernel/random/boot_id")
    assert after.strip() and after.strip() != boot_id
    destroy(cloud, inst)


def test_agent_sigkill_leaves_guest_running_and_readopts_it(cloud, region, no_leaks):
    inst = launch(cloud, region, "adopt-1", "adopt-one")
    host = cloud.host_of(inst)
    pid_before = qemu_pid(cloud, inst)
    boot_id = ssh_ok(cloud, region, inst, "cat /proc/sys/kernel/random/boot_id").strip()
    seen = cloud.get(f"/hosts/{inst['host_id']}")["last_heartbeat"]

    host.stop_agent(signal.SIGKILL)
    cloud.start_agent(host)
    deadline = time.monotonic() + 30
    while cloud.get(f"/hosts/{inst['host_id']}")["last_heartbeat"] == seen:
        assert time.monotonic() < deadline, "restarted agent never reported"
        time.sleep(0.2)
    time.sleep(4)  # a couple of reconcile passes of the new agent
    assert qemu_pid(cloud, inst) == pid_before, "the guest was restarted"
    assert ssh_ok(cloud, region, inst, "cat /proc/sys/kernel/random/boot_id").strip() == boot_id
    assert cloud.get(f"/instances/{inst['id']}")["status"] == "Running"

    # adopted, not merely left alone: the new agent still manages it
    cloud.post(f"/instances/{inst['id']}/stop", {"force": True})
    cloud.wait_status(f"/instances/{inst['id']}", {"Stopped"}, timeout=60)
    destroy(cloud, inst)


def test_controller_restart_keeps_state(cloud, region, no_leaks):
    inst = launch(cloud, region, "keep-1", "keep-one")
    before = {k: cloud.get(f"/{k}") for k in ("instances", "vpcs", "vswitches", "images", "hosts")}

    cloud.stop_controller(signal.SIGKILL)
    cloud.start_controller()
    for key, listing in before.items():
        after = cloud.get(f"/{key}")
        assert [i["id"] for i in after["items"]] == [i["id"] for i in listing["items"]], key
    again = cloud.get(f"/instances/{inst['id']}")
    assert again["private_ip_address"] == inst["private_ip_address"]
    assert again["host_id"] == inst["host_id"]
    assert again["status"] == "Running"
    # the agent resumes against the restarted controller: a new instance still converges
    second = launch(cloud, region, "keep-2", "keep-two")
    assert second["private_ip_address"] != inst["private_ip_address"]
    assert ssh_ok(cloud, region, second, "hostname").strip() == "keep-two"
    destroy(cloud, inst)
    destroy(cloud, second)


def _spoof_listing(host) -> str:
    """The anti-spoofing table's set elements, as nft lists them ("" when it is absent)."""
    nft = Nft(host.netns)
    try:
        objs = nft.list_json("table bridge mecs-spoof") or []
    finally:
        nft.close()
    return json.dumps(sorted(json.dumps(o["set"].get("elem", []), sort_keys=True)
                             for o in objs if "set" in o))


def _host_reboot(host) -> None:
    """What a hypervisor reboot does to miniecs's state: guests gone, network and rules flushed."""
    for dom in host.virsh("list", "--name").stdout.split():
        host.virsh("destroy", dom)
    ns = ["ip", "netns", "exec", host.netns]
    links = json.loads(subprocess.run(["ip", "-n", host.netns, "-j", "link", "show"],
                                      capture_output=True, text=True, check=True).stdout)
    for link in links:
        if link["ifname"].startswith(("mbr-", "mgw", "mvx-", "mup", "mtap")):
            subprocess.run(["ip", "-n", host.netns, "link", "delete", link["ifname"]], check=False)
    netns_dir = host.agent_state_dir / "netns"
    for entry in netns_dir.iterdir() if netns_dir.exists() else []:
        subprocess.run(["umount", "-l", str(entry)], check=False)
        entry.unlink()
    for table in ("filter", "raw", "nat", "mangle"):
        saved = subprocess.run([*ns, "iptables-save", "-t", table], capture_output=True,
                               text=True, check=True).stdout
        kept = "\n".join(line for line in saved.splitlines() if "mecs-" not in line
                         and "miniecs" not in line) + "\n"
        subprocess.run([*ns, "iptables-restore", "-T", table], input=kept, text=True, check=True)
    saved = subprocess.run([*ns, "ebtables-save"], capture_output=True, text=True).stdout
    if saved:
        kept = "\n".join(line for line in saved.splitlines() if "mecs-" not in line
                         and "miniecs" not in line) + "\n"
        subprocess.run([*ns, "ebtables-restore"], input=kept, text=True, check=False)
    subprocess.run([*ns, "ipset", "destroy"], check=False)
    nft = Nft(host.netns)
    try:
        for t in nft.list_json("tables") or []:
            table = t.get("table") or {}
            if table.get("name", "").startswith(("mecs", "miniecs")):
                nft.run(f"delete table {table['family']} {table['name']}")
    finally:
        nft.close()


def test_host_reboot_brings_back_guests_network_and_rules(cloud, region, no_leaks):
    inst = launch(cloud, region, "boot-1", "boot-one")
    host = cloud.host_of(inst)
    boot_id = ssh_ok(cloud, region, inst, "cat /proc/sys/kernel/random/boot_id").strip()
    ns = ["ip", "netns", "exec", host.netns]
    rules_before = subprocess.run([*ns, "iptables-save", "-t", "filter"], capture_output=True,
                                  text=True).stdout.count("mecs-")
    assert rules_before, "no security-group rules on the host to begin with"
    spoof_before = _spoof_listing(host)
    assert inst["mac_address"].lower() in spoof_before, "no anti-spoofing entry to begin with"

    host.stop_agent(signal.SIGKILL)
    _host_reboot(host)
    assert host.virsh("domstate", inst["id"]).stdout.strip() == "shut off"
    assert "mecs-" not in subprocess.run([*ns, "iptables-save", "-t", "filter"],
                                         capture_output=True, text=True).stdout
    cloud.start_agent(host)

    inst = cloud.wait_status(f"/instances/{inst['id']}", {"Running"}, timeout=120)
    deadline = time.monotonic() + 60
    while host.virsh("domstate", inst["id"]).stdout.strip() != "running":
        assert time.monotonic() < deadline, "the guest was not started again"
        time.sleep(0.5)
    after = ssh_ok(cloud, region, inst, "cat /proc/sys/kernel/random/boot_id").strip()
    assert after != boot_id, "the guest should have booted afresh"
    rules_after = subprocess.run([*ns, "iptables-save", "-t", "filter"], capture_output=True,
                                 text=True).stdout.count("mecs-")
    assert rules_after == rules_before, "security-group rules not restored exactly"
    assert _spoof_listing(host) == spoof_before, "anti-spoofing entries not restored exactly"
    destroy(cloud, inst)
