"""Events, drift view and metrics against a real guest on a real agent in the rig.

One tiny guest: its mutations and status transitions appear in the event log
in order with their outcomes; the controller's and the agent's /metrics parse
and move; while the agent is paused (SIGSTOP) a stop request shows as drift,
and once it runs again the instance converges and leaves the drift view.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import TINY_IMAGE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

AGENT_METRICS = "127.0.0.1:9464"  # inside the rig host's network namespace


def samples(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def controller_metrics(cloud) -> dict[tuple, float]:
    r = httpx.get(f"{cloud.url}/metrics", timeout=30,
                  headers={"Authorization": f"Bearer {cloud.admin_token}"})
    assert r.status_code == 200, r.text
    return samples(r.text)


def agent_metrics(host) -> dict[tuple, float]:
    code = ("import urllib.request,sys;sys.stdout.write(urllib.request.urlopen("
            f"'http://{AGENT_METRICS}/metrics',timeout=10).read().decode())")
    out = subprocess.run(["nsenter", f"--net=/run/netns/{host.netns}", "--", sys.executable,
                          "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return samples(out.stdout)


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.5)


def drift_item(cloud, rtype: str, rid: str) -> dict | None:
    view = cloud.get("/status")
    return next((i for i in view["items"]
                 if (i["resource_type"], i["resource_id"]) == (rtype, rid)), None)


@pytest.fixture(scope="module")
def region(cloud):
    host = next(iter(cloud.rig.hosts.values()))
    # the agent again, now with its metrics listener on
    host.stop_agent()
    host.write_agent_config(f"http://127.0.0.1:{cloud.port}", cloud.enrolment_token,
                            metrics_listen=AGENT_METRICS)
    host.start_agent()
    cloud.rig.save()
    cloud.wait_hosts_ready(1)
    image = json.loads(cloud.cli("image", "import", "tiny", "--file", str(TINY_IMAGE),
                                 "--wait", "-o", "json").stdout)
    vpc = cloud.post("/vpcs", {"name": "obs-vpc", "cidr_block": "10.30.0.0/16"})
    vsw = cloud.post("/vswitches", {"name": "obs-vsw", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                    "cidr_block": "10.30.1.0/24"})
    sg = cloud.post("/security-groups", {"name": "obs-sg", "vpc_id": vpc["id"]})
    return {"host": host, "image": image, "vswitch": vsw, "sg": sg}


def test_events_metrics_and_drift_with_a_real_guest(cloud, region, no_leaks):
    host = region["host"]
    c0 = controller_metrics(cloud)
    a0 = wait_for(lambda: (m := agent_metrics(host)).get(
        ("miniecs_agent_reconcile_pass_seconds_count", ())) and m, 60, "agent metrics")
    since = cloud.get("/events", newest_first="true", max_results=1)["last_id"]

    body = {"name": "obs-1", "instance_type": "ecs.t1.nano", "image_id": region["image"]["id"],
            "vswitch_id": region["vswitch"]["id"], "security_group_ids": [region["sg"]["id"]],
            "user_data": "#cloud-config\n# e2e-secret-marker\n"}
    refused = cloud.request("POST", "/instances", {**body, "image_id": "m-doesnotexist"},
                            ok=False)
    assert refused["code"].endswith("NotFound")
    inst = cloud.post("/instances", body)
    inst = cloud.wait_status(f"/instances/{inst['id']}", {"Running"}, timeout=180)

    # events: the mutations in order with outcomes, the transitions with their cause
    mine = cloud.get("/events", after=since, kind="api", max_results=100)["items"]
    assert [(e["route"], e["status_code"]) for e in mine][:2] == [
        ("/api/v1/instances", 404), ("/api/v1/instances", 202)]
    assert mine[0]["error_code"] == refused["code"] and mine[1]["resource_id"] == inst["id"]
    assert all("e2e-secret-marker" not in e["request"] for e in mine)
    transitions = cloud.get("/events", resource_id=inst["id"], kind="status")["items"]
    assert transitions[-1]["new_status"] == "Running"
    # the real agent reports on its channel
    assert transitions[-1]["cause"] == "WS /api/v1/agent/channel"
    assert transitions[-1]["actor_name"] == host.name
    listed = cloud.cli("events", "--resource", inst["id"]).stdout
    assert "POST /api/v1/instances" in listed and "-> Running" in listed

    # metrics moved: controller and agent
    c1 = controller_metrics(cloud)
    key = ("miniecs_api_request_duration_seconds_count",
           (("method", "POST"), ("route", "/api/v1/instances"), ("status_class", "2xx")))
    assert c1[key] == c0.get(key, 0) + 1
    assert c1[("miniecs_instances", (("status", "Running"),))] == 1
    assert c1[("miniecs_agent_channels", ())] >= 1  # the real agent is on its channel
    assert c1[("miniecs_agent_channel_messages_total", (("kind", "report"),))] > \
        c0[("miniecs_agent_channel_messages_total", (("kind", "report"),))]
    assert c1[("miniecs_events_recorded_total", (("kind", "status"),))] > \
        c0[("miniecs_events_recorded_total", (("kind", "status"),))]
    a1 = wait_for(lambda: (m := agent_metrics(host)).get(
        ("miniecs_agent_domains", (("state", "running"),))) == 1 and m, 60, "agent domains")
    passes = ("miniecs_agent_reconcile_pass_seconds_count", ())
    assert a1[passes] > a0[passes]
    assert a1[("miniecs_agent_firewall_apply_seconds_count", ())] > \
        a0[("miniecs_agent_firewall_apply_seconds_count", ())]
    assert a1[("miniecs_agent_disk_bytes", ())] > 0
    assert a1[("miniecs_agent_image_cache_bytes", ())] >= TINY_IMAGE.stat().st_blocks * 512 / 2
    converged_at = next(i for i in cloud.get("/status", all="true")["items"]
                        if i["resource_id"] == inst["id"])["last_converged_at"]
    assert converged_at and drift_item(cloud, "instance", inst["id"]) is None

    # drift: the agent is paused, a stop is asked
    os.kill(host.agent_pid, signal.SIGSTOP)
    try:
        cloud.post(f"/instances/{inst['id']}/stop", {"force": True})
        drifting = drift_item(cloud, "instance", inst["id"])
        assert (drifting["desired"], drifting["observed"], drifting["status"]) == (
            "stopped", "running", "Stopping")
        assert drifting["last_converged_at"] == converged_at
        assert not drift_item(cloud, "host", inst["host_id"])["converged"]
        shown = cloud.cli("status", "--exit-code", check=False)
        assert shown.returncode == 1 and inst["id"] in shown.stdout
        lag = controller_metrics(cloud)[("miniecs_host_spec_generation_lag",
                                         (("host", host.name), ("host_id", inst["host_id"])))]
        assert lag >= 1
    finally:
        os.kill(host.agent_pid, signal.SIGCONT)
    wait_for(lambda: drift_item(cloud, "instance", inst["id"]) is None, 120,
             "instance still drifting after the agent resumed")
    assert cloud.get(f"/instances/{inst['id']}")["status"] == "Stopped"
    wait_for(lambda: drift_item(cloud, "host", inst["host_id"]) is None, 60, "host converges")
    assert cloud.cli("status", "--exit-code", check=False).returncode == 0
    assert wait_for(lambda: agent_metrics(host).get(
        ("miniecs_agent_domains", (("state", "stopped"),))) == 1, 60, "agent sees it stopped")

    cloud.delete(f"/instances/{inst['id']}", force="true")
    cloud.wait_gone(f"/instances/{inst['id']}")
    story = [e["new_status"] for e in cloud.get("/events", resource_id=inst["id"],
                                                 kind="status", max_results=100)["items"]]
    assert story[-3:] == ["Stopped", "Deleting", "Deleted"]
