"""The controller SIGKILLed in the middle of 50 concurrent creates, then deletes.

After a restart on the same database: every request that got a 2xx has its
resource and it converges; a retried request (same client token) never makes
a second instance; no IP, MAC or unit of host capacity is leaked. Runs on
SQLite, and on PostgreSQL when MINIECS_TEST_PG_URL is set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.controller_factories import FakeAgent, create_pg_database, drop_pg_database, PG_ENV
from tests.rig.cloud import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
BIN = Path(sys.executable).parent / "miniecs-controller"
N = 50


class Controller:
    def __init__(self, state: Path, db_url: str | None):
        self.env = dict(os.environ, MINIECS_STATE_DIR=str(state))
        self.env.pop("MINIECS_DATABASE_URL", None)
        if db_url:
            self.env["MINIECS_DATABASE_URL"] = db_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        out = subprocess.run([str(BIN), "init", "--json"], env=self.env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        self.tokens = json.loads(out.stdout)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([str(BIN), "serve", "--listen", f"127.0.0.1:{self.port}",
                                      "--log-level", "warning"], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("controller did not start")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/api/v1", timeout=30,
                            headers={"Authorization": f"Bearer {self.tokens['admin_token']}"})


@pytest.fixture(params=["sqlite", "postgresql"])
def controller(request, tmp_path):
    db_url = None
    if request.param == "postgresql":
        if not os.environ.get(PG_ENV):
            pytest.skip(f"{PG_ENV} not set (make test sets it)")
        db_url = create_pg_database(os.environ[PG_ENV])
    c = Controller(tmp_path / "state", db_url)
    c.start()
    try:
        yield c
    finally:
        c.stop()
        if db_url:
            drop_pg_database(db_url)


def _region(c: Controller, tmp_path: Path) -> tuple[FakeAgent, dict]:
    http = httpx.Client(base_url=c.url, timeout=30)
    reg = {"name": "hv-crash", "zone": "zone-a", "underlay_address": "198.18.0.50",
           "virt_type": "qemu", "capacity": {"vcpus": 64, "memory_mib": 262144, "disk_gib": 4000}}
    r = http.post("/api/v1/agent/register", json=reg,
                  headers={"Authorization": f"Bearer {c.tokens['enrolment_token']}"})
    assert r.status_code == 201, r.text
    agent = FakeAgent(client=http, host_id=r.json()["host_id"], token=r.json()["host_token"])
    agent.converge()
    image_file = tmp_path / "img.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image_file), "1G"], check=True)
    with c.api() as api:
        image = api.post("/images", json={"name": "img", "format": "qcow2",
                                          "source_path": str(image_file)}).json()
        for _ in range(100):
            if api.get(f"/images/{image['id']}").json()["status"] == "Available":
                break
            time.sleep(0.1)
        vpc = api.post("/vpcs", json={"name": "v", "cidr_block": "10.9.0.0/16"}).json()
        vsw = api.post("/vswitches", json={"name": "s", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                           "cidr_block": "10.9.1.0/24"}).json()
        sg = api.post("/security-groups", json={"name": "g", "vpc_id": vpc["id"]}).json()
    body = {"instance_type": "ecs.t1.nano", "image_id": image["id"], "vswitch_id": vsw["id"],
            "security_group_ids": [sg["id"]]}
    return agent, {"body": body, "vswitch": vsw}


def _fire(c: Controller, calls: list[tuple[str, str, dict | None]], kill_after: int) -> list:
    """Run the calls concurrently; SIGKILL the controller once ``kill_after`` answered.

    The thread whose answer is the ``kill_after``-th sends the signal itself: handing it
    to the main thread (a semaphore) let a busy machine's GIL delay the kill until every
    call had answered, and the test then had nothing to test."""
    results: list = [None] * len(calls)
    lock = threading.Lock()
    answered = [0]

    def one(i: int) -> None:
        method, path, body = calls[i]
        try:
            with c.api() as api:
                r = api.request(method, path, json=body)
            results[i] = r.status_code
        except httpx.HTTPError as exc:
            results[i] = exc
        with lock:
            answered[0] += 1
            if answered[0] == kill_after:
                c.proc.send_signal(signal.SIGKILL)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    c.kill()  # (already dead: this waits for it)
    return results


def test_sigkill_during_concurrent_creates_and_deletes_loses_and_leaks_nothing(controller,
                                                                                tmp_path):
    c = controller
    agent, region = _region(c, tmp_path)
    calls = [("POST", "/instances", {**region["body"], "name": f"c{i}", "client_token": f"tok-{i}"})
             for i in range(N)]
    results = _fire(c, calls, kill_after=N // 3)
    ok = [i for i, r in enumerate(results) if isinstance(r, int) and r < 300]
    assert ok, "the controller died before answering anything"
    assert len(ok) < N, "the kill came too late to test anything"

    c.start()
    # the host heartbeats as a real agent would every 10 s (placement wants a recent one;
    # on a loaded machine the test alone can outlast the 30 s timeout)
    agent.report()
    with c.api() as api:
        listed = {i["name"]: i for i in api.get("/instances", params={"max_results": 100}).json()["items"]}
        for i in ok:
            assert f"c{i}" in listed, f"create c{i} answered 2xx but its instance is gone"
        # the clients retry what did not answer; a client token never makes a second instance
        for i, r in enumerate(results):
            if i not in ok:
                retry = api.post("/instances", json=calls[i][2])
                assert retry.status_code in (200, 202), retry.text
        items = api.get("/instances", params={"max_results": 100}).json()["items"]
    assert sorted(Counter(i["name"] for i in items).values()) == [1] * N, "duplicated instance"
    assert len({i["private_ip_address"] for i in items}) == N
    assert len({i["mac_address"] for i in items}) == N

    agent.converge()
    with c.api() as api:
        for inst in items:
            assert api.get(f"/instances/{inst['id']}").json()["status"] == "Running"
        host = api.get(f"/hosts/{agent.host_id}").json()
    assert host["allocated"]["vcpus"] == N * 1
    assert host["allocated"]["memory_mib"] == N * 256

    # the same, deleting
    results = _fire(c, [("DELETE", f"/instances/{i['id']}?force=true", None) for i in items],
                    kill_after=N // 3)
    c.start()
    with c.api() as api:
        for inst, r in zip(items, results):
            status = api.get(f"/instances/{inst['id']}").json()["status"]
            if isinstance(r, int) and r < 300:
                assert status in ("Deleting", "Deleted"), f"delete answered 2xx, status {status}"
            else:
                api.delete(f"/instances/{inst['id']}", params={"force": "true"})
    agent.converge()
    agent.converge()
    with c.api() as api:
        gone = api.get("/instances", params={"status": "Deleted", "max_results": 100}).json()["items"]
        assert len(gone) == N
        assert api.get("/instances", params={"max_results": 100}).json()["items"] == []
        host = api.get(f"/hosts/{agent.host_id}").json()
        vsw = api.get(f"/vswitches/{region['vswitch']['id']}").json()
    assert host["allocated"]["vcpus"] == 0 and host["allocated"]["memory_mib"] == 0
    assert vsw["available_ip_count"] == region["vswitch"]["available_ip_count"], "IPs leaked"
