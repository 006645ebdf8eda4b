"""``miniecs events`` against a real controller (uvicorn in a thread)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.unit.test_cli_commands import as_json, cli, live, miniecs  # noqa: F401 - fixtures


def test_events_lists_mutations_with_outcomes(cli):
    vpc = as_json("vpc", "create", "v1", "--cidr", "10.0.0.0/16")
    miniecs("vpc", "create", "v2", "--cidr", "10.0.0.0/33", code=1)
    listed = as_json("events", "--kind", "api")["items"]
    assert [(e["route"], e["status_code"]) for e in listed][-2:] == [
        ("/api/v1/vpcs", 201), ("/api/v1/vpcs", 400)]
    assert listed[-2]["resource_id"] == vpc["id"]
    table = miniecs("events", "--resource", vpc["id"]).stdout
    assert "POST /api/v1/vpcs" in table and "201" in table and vpc["id"] in table


def test_events_follow_prints_a_new_event(cli):
    env = {**os.environ, "MINIECS_ENDPOINT": cli.url, "MINIECS_TOKEN": cli.admin_token}
    proc = subprocess.Popen([sys.executable, "-m", "controller.cli.main", "events", "--follow",
                             "--kind", "api", "-o", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(3)  # the follower is waiting on its long-poll
        vpc = as_json("vpc", "create", "followed", "--cidr", "10.1.0.0/16")
        line = proc.stdout.readline()  # blocks until the follower prints
        while json.loads(line)["resource_id"] != vpc["id"]:
            line = proc.stdout.readline()
        ev = json.loads(line)
        assert (ev["route"], ev["status_code"], ev["actor_type"]) == ("/api/v1/vpcs", 201, "token")
    finally:
        proc.kill()
        proc.wait(10)


def test_status_shows_drift_until_converged(cli):
    region = cli.region
    agent = region.register_host()
    net = region.network()
    inst = region.create_instance(net, region.image())
    out = miniecs("status", "--exit-code", code=1).stdout
    assert "instances 0/1 converged" in out
    assert inst["id"] in out and "not reported" in out and "Pending" in out
    listed = as_json("status", "--type", "instance")["items"]
    assert [(i["resource_id"], i["desired"]) for i in listed] == [(inst["id"], "running")]
    agent.converge()
    out = miniecs("status", "--exit-code").stdout
    assert "instances 1/1 converged" in out and "0 resource(s) not yet as asked" in out
    assert inst["id"] in miniecs("status", "--all").stdout
