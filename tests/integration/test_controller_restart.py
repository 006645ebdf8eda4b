"""A restarted controller (a new process on the same database) keeps all state, and a
second controller process on the same database serves the same region."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.controller_factories import database_url  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ControllerProcess:
    """``miniecs-controller serve`` as its own process; stopped by its pid only."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.server_cli", "serve",
             "--listen", f"127.0.0.1:{self.port}", "--log-level", "warning"],
            env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError("controller did not start:\n" + log.read_text()[-3000:])
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def env(database_url, tmp_path):
    env = {**os.environ, "MINIECS_STATE_DIR": str(tmp_path / "state"),
           "MINIECS_DATABASE_URL": database_url}
    out = subprocess.run([sys.executable, "-m", "controller.server_cli", "init", "--json"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return env, json.loads(out.stdout), tmp_path / "controller.log"


def _build_region(url: str, tokens: dict) -> dict:
    api = httpx.Client(base_url=url + "/api/v1", timeout=30,
                       headers={"Authorization": f"Bearer {tokens['admin_token']}"})
    enrol = {"Authorization": f"Bearer {tokens['enrolment_token']}"}
    host = httpx.post(url + "/api/v1/agent/register", headers=enrol, timeout=30, json={
        "name": "hv-01", "zone": "zone-a", "underlay_address": "192.0.2.11",
        "virt_type": "qemu", "capacity": {"vcpus": 4, "memory_mib": 8192, "disk_gib": 100}}).json()
    agent = {"Authorization": f"Bearer {host['host_token']}"}
    assert httpx.post(url + "/api/v1/agent/report", headers=agent, json={
        "host_id": host["host_id"], "generation_applied": -1, "generation_seen": -1}
    ).status_code == 204
    vpc = api.post("/vpcs", json={"name": "v", "cidr_block": "10.0.0.0/16"}).json()
    vsw = api.post("/vswitches", json={"name": "s", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                       "cidr_block": "10.0.1.0/24"}).json()
    sg = api.post("/security-groups", json={"name": "g", "vpc_id": vpc["id"]}).json()
    kp = api.post("/key-pairs", json={"name": "k"}).json()
    return {"api": api, "host": host, "agent": agent, "vpc": vpc, "vsw": vsw, "sg": sg, "kp": kp}


def test_restart_keeps_all_state(env, tmp_path):
    environ, tokens, log = env
    # A real qcow2 imported through the API needs qemu-img; a raw file does not.
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * 1024 * 1024)
    first = ControllerProcess(environ, log)
    try:
        r = _build_region(first.url, tokens)
        api = r["api"]
        image = api.post("/images", json={"name": "raw", "format": "raw",
                                           "source_path": str(raw)}).json()
        for _ in range(100):
            if api.get(f"/images/{image['id']}").json()["status"] == "Available":
                break
            time.sleep(0.1)
        inst = api.post("/instances", json={
            "name": "web", "instance_type": "ecs.t1.small", "image_id": image["id"],
            "vswitch_id": r["vsw"]["id"], "security_group_ids": [r["sg"]["id"]],
            "key_pair_id": r["kp"]["id"], "client_token": "once"}).json()
        spec = httpx.get(first.url + "/api/v1/agent/spec", params={"after": -1},
                         headers=r["agent"]).json()
        httpx.post(first.url + "/api/v1/agent/report", headers=r["agent"], json={
            "host_id": r["host"]["host_id"], "generation_applied": spec["generation"],
            "generation_seen": spec["generation"],
            "instances": [{"id": inst["id"], "power": "running"}]})
        before = {p: api.get(p).json() for p in ("/vpcs", "/vswitches", "/security-groups",
                                                 "/key-pairs", "/images", "/instances", "/zones")}
        host_before = api.get(f"/hosts/{r['host']['host_id']}").json()
        assert before["/instances"]["items"][0]["status"] == "Running"
    finally:
        first.stop(signal.SIGKILL)  # no graceful shutdown: nothing may depend on one

    second = ControllerProcess(environ, log)
    try:
        api = httpx.Client(base_url=second.url + "/api/v1", timeout=30,
                           headers={"Authorization": f"Bearer {tokens['admin_token']}"})
        after = {p: api.get(p).json() for p in before}
        assert after == before
        host_after = api.get(f"/hosts/{r['host']['host_id']}").json()
        for key in ("generation", "allocated", "capacity", "state", "generation_applied"):
            assert host_after[key] == host_before[key], key
        # The host token and the client token still work against the new process.
        again = httpx.get(second.url + "/api/v1/agent/spec", params={"after": -1},
                          headers=r["agent"])
        assert again.status_code == 200 and again.json() == spec
        retry = api.post("/instances", json={
            "name": "web", "instance_type": "ecs.t1.small", "image_id": image["id"],
            "vswitch_id": r["vsw"]["id"], "security_group_ids": [r["sg"]["id"]],
            "client_token": "once"})
        assert retry.status_code == 200 and retry.json()["id"] == inst["id"]
    finally:
        second.stop()


def test_second_process_long_poll_sees_changes_made_by_the_first(env, tmp_path):
    """Two controllers on one database: an agent long-polling one sees a create made on the
    other within the DB re-check period (the in-process notifier cannot help here)."""
    environ, tokens, log = env
    environ = {**environ, "MINIECS_SPEC_POLL_INTERVAL_S": "0.3"}
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * 1024 * 1024)
    a = ControllerProcess(environ, log)
    b = ControllerProcess(environ, log)
    try:
        r = _build_region(a.url, tokens)
        image = r["api"].post("/images", json={"name": "raw", "format": "raw",
                                                "source_path": str(raw)}).json()
        for _ in range(100):
            if r["api"].get(f"/images/{image['id']}").json()["status"] == "Available":
                break
            time.sleep(0.1)
        current = httpx.get(b.url + "/api/v1/agent/spec", params={"after": -1},
                            headers=r["agent"]).json()["generation"]
        out: dict = {}

        def poll() -> None:
            t0 = time.monotonic()
            out["spec"] = httpx.get(b.url + "/api/v1/agent/spec", timeout=30,
                                    params={"after": current, "wait": 20},
                                    headers=r["agent"]).json()
            out["elapsed"] = time.monotonic() - t0

        thread = threading.Thread(target=poll)
        thread.start()
        time.sleep(0.5)
        inst = r["api"].post("/instances", json={
            "name": "web", "instance_type": "ecs.t1.nano", "image_id": image["id"],
            "vswitch_id": r["vsw"]["id"], "security_group_ids": [r["sg"]["id"]]}).json()
        thread.join(25)
        assert out["spec"]["generation"] > current
        assert [i["id"] for i in out["spec"]["instances"]] == [inst["id"]]
        assert out["elapsed"] < 5
    finally:
        a.stop()
        b.stop()
