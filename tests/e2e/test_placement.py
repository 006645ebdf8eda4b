"""Placement end to end on a 3-host rig with real guests (three tiny ones in all):
deployment-set members on three different hosts, a fourth refused with a specific error
(on three hosts, then on two once a host is removed), host removal refused while a host
holds an instance, and a host whose agent is stopped (SIGSTOP) marked Down within the
heartbeat timeout with its instance shown Unknown, still running where it was, and back
to Running once the agent resumes."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from tests.e2e.conftest import TINY_IMAGE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

RIG_HOSTS = 3
HEARTBEAT_TIMEOUT_S = 24  # agents report at least every 10 s; slack for a loaded machine
WATCHDOG_PERIOD_S = max(1.0, HEARTBEAT_TIMEOUT_S / 3)


@pytest.fixture(scope="module", autouse=True)
def _heartbeat_timeout():
    """A shorter heartbeat timeout for this module's controller (autouse: set before the
    module's cloud starts; the controller takes it from its environment)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MINIECS_HEARTBEAT_TIMEOUT_S", str(HEARTBEAT_TIMEOUT_S))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def region(cloud):
    image = json.loads(cloud.cli("image", "import", "tiny", "--file", str(TINY_IMAGE),
                                 "--wait", "-o", "json").stdout)
    vpc = cloud.post("/vpcs", {"name": "pl-vpc", "cidr_block": "10.40.0.0/16"})
    vsw = cloud.post("/vswitches", {"name": "pl-vsw", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                    "cidr_block": "10.40.1.0/24"})
    sg = cloud.post("/security-groups", {"name": "pl-sg", "vpc_id": vpc["id"]})
    ds = json.loads(cloud.cli("deployment-set", "create", "ha", "-o", "json").stdout)
    return {"image": image, "vswitch": vsw, "sg": sg, "ds": ds}


def _create_args(region, name: str, *extra: str) -> list[str]:
    return ["instance", "create", name, "--type", "ecs.t1.nano", "--image",
            region["image"]["id"], "--vswitch", "pl-vsw", "--sg", "pl-sg", *extra]


@pytest.fixture(scope="module")
def members(cloud, region):
    """Three members of the set, created with the pack policy (which alone would stack them
    on one host), Running."""
    created = [json.loads(cloud.cli(*_create_args(region, f"ha-{i}", "--deployment-set", "ha",
                                                  "--placement", "pack", "-o", "json")).stdout)
               for i in range(3)]
    return [cloud.wait_status(f"/instances/{m['id']}", {"Running"}, timeout=180)
            for m in created]


def _fourth_fails(cloud, region) -> dict:
    proc = cloud.cli(*_create_args(region, "ha-4", "--deployment-set", "ha"), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "DeploymentSet.NoAvailableHost" in proc.stderr
    r = cloud.request("POST", "/instances", {
        "name": "ha-4", "instance_type": "ecs.t1.nano", "image_id": region["image"]["id"],
        "vswitch_id": region["vswitch"]["id"], "security_group_ids": [region["sg"]["id"]],
        "deployment_set_id": region["ds"]["id"], "dry_run": True}, ok=False)
    assert r["code"] == "DeploymentSet.NoAvailableHost" and r["field"] == "deployment_set_id"
    return r


def _domains(cloud) -> dict[str, list[str]]:
    return {name: sorted(h.virsh("list", "--all", "--name").stdout.split())
            for name, h in cloud.rig.hosts.items() if h.holder_pid}


def test_members_on_three_hosts_fourth_refused_and_host_removal(cloud, region, members):
    hosts = {m["host_id"] for m in members}
    assert len(hosts) == 3
    # Each guest's domain runs on its own rig host's libvirtd, one per host.
    domains = _domains(cloud)
    for m in members:
        assert domains[cloud.host_of(m).name] == [m["id"]]
    shown = cloud.get(f"/deployment-sets/{region['ds']['id']}")
    assert sorted(shown["host_ids"]) == sorted(hosts)

    explained = json.loads(cloud.cli("placement", "explain", "--type", "ecs.t1.nano", "--image",
                                     region["image"]["id"], "--vswitch", "pl-vsw",
                                     "--deployment-set", "ha", "-o", "json").stdout)
    assert explained["chosen_host_id"] is None and len(explained["hosts"]) == 3
    assert all([r["filter"] for r in h["rejected_by"]] == ["deployment_set"]
               for h in explained["hosts"])
    _fourth_fails(cloud, region)
    assert len(cloud.get("/instances")["items"]) == 3

    # A host holding an instance cannot be removed.
    third = members[2]
    rig_host = cloud.host_of(third)
    proc = cloud.cli("host", "delete", rig_host.name, check=False)
    assert proc.returncode == 1 and "DependencyViolation.Host.Instances" in proc.stderr
    assert third["id"] in proc.stderr

    # Emptied and its agent stopped, it can: the region is down to two hosts.
    cloud.delete(f"/instances/{third['id']}", force="true")
    cloud.wait_gone(f"/instances/{third['id']}")
    assert rig_host.virsh("list", "--all", "--name").stdout.split() == []
    rig_host.stop_agent()
    cloud.rig.save()
    cloud.cli("host", "delete", rig_host.name)
    remaining = cloud.get("/hosts")["items"]
    assert sorted(h["id"] for h in remaining) == sorted(hosts - {third["host_id"]})
    # A fourth member on the two-host region fails the same specific way.
    refused = _fourth_fails(cloud, region)
    assert "each of the 2 host(s)" in refused["message"]
    # The message names each host it weighed as "name: reasons"; instance ids may hold
    # any host name as a substring, so compare the names, not a search of the text.
    named = set(re.findall(r"(?:\(|; )([\w.-]+): ", refused["message"]))
    assert named == {h.name for h in map(cloud.host_of, members[:2])}
    assert len(cloud.get("/instances")["items"]) == 2


def test_stopped_agent_marks_host_down_instance_unknown_until_it_resumes(cloud, members):
    inst = members[0]
    rig_host = cloud.host_of(inst)
    host_path = f"/hosts/{inst['host_id']}"
    assert cloud.get(host_path)["state"] == "ready"
    os.kill(rig_host.agent_pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        # Down within the timeout plus one watchdog period (and slack for a loaded machine).
        limit = HEARTBEAT_TIMEOUT_S + WATCHDOG_PERIOD_S + 10
        while cloud.get(host_path)["state"] != "down":
            assert time.monotonic() - stopped_at < limit, f"not Down after {limit:.0f} s"
            time.sleep(0.5)
        took = time.monotonic() - stopped_at
        print(f"host marked Down {took:.1f} s after its agent stopped")
        shown = cloud.get(f"/instances/{inst['id']}")
        assert shown["status"] == "Unknown", shown
        assert "last reported status Running" in shown["status_reason"]
        assert shown["host_id"] == inst["host_id"]  # not evacuated
        assert [i["id"] for i in cloud.get("/instances", status="Unknown")["items"]] == \
            [inst["id"]]
        # The guest itself runs on, under its host's libvirtd.
        assert rig_host.virsh("domstate", inst["id"]).stdout.strip() == "running"
        table = cloud.cli("instance", "list").stdout
        assert "Unknown" in table
    finally:
        os.kill(rig_host.agent_pid, signal.SIGCONT)
    host = None
    deadline = time.monotonic() + 60
    while (host := cloud.get(host_path))["state"] != "ready":
        assert time.monotonic() < deadline, f"host still {host['state']} after SIGCONT"
        time.sleep(0.5)
    assert cloud.wait_status(f"/instances/{inst['id']}", {"Running"}, timeout=60)

    for m in members[:2]:
        cloud.delete(f"/instances/{m['id']}", force="true")
    for m in members[:2]:
        cloud.wait_gone(f"/instances/{m['id']}")
    assert all(d == [] for d in _domains(cloud).values())
    cloud.cli("deployment-set", "delete", "ha")
