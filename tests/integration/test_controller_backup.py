"""`miniecs-controller backup` / `restore` on the SQLite default, with real processes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.rig.cloud import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
BIN = Path(sys.executable).parent / "miniecs-controller"


def ctl(state: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MINIECS_STATE_DIR=str(state))
    env.pop("MINIECS_DATABASE_URL", None)
    return subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=60)


class Controller:
    def __init__(self, state: Path):
        self.state, self.port = state, free_port()
        self.proc: subprocess.Popen | None = None
        self.token = json.loads(ctl(state, "init", "--json").stdout)["admin_token"]

    def start(self) -> None:
        env = dict(os.environ, MINIECS_STATE_DIR=str(self.state))
        env.pop("MINIECS_DATABASE_URL", None)
        self.proc = subprocess.Popen([str(BIN), "serve", "--listen", f"127.0.0.1:{self.port}",
                                      "--log-level", "warning"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("controller did not start")

    def stop(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
            self.proc = None

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}/api/v1", timeout=30,
                            headers={"Authorization": f"Bearer {self.token}"})

    def vpc_names(self) -> list[str]:
        with self.api() as api:
            return [v["name"] for v in api.get("/vpcs", params={"max_results": 100}).json()["items"]]


@pytest.fixture
def controller(tmp_path):
    c = Controller(tmp_path / "state")
    c.start()
    yield c
    c.stop()


def test_online_backup_while_writing_then_restore(controller, tmp_path):
    with controller.api() as api:
        assert api.post("/vpcs", json={"name": "before", "cidr_block": "10.1.0.0/16"}).status_code == 201
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        with controller.api() as api:
            i = 0
            while not stop.is_set() and i < 60:
                r = api.post("/vpcs", json={"name": f"w{i}", "cidr_block": "10.2.0.0/16"})
                assert r.status_code == 201, r.text
                written.append(f"w{i}")
                i += 1

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.3)
    backup = tmp_path / "region.backup"
    out = ctl(controller.state, "backup", str(backup))
    stop.set()
    t.join()
    assert out.returncode == 0, out.stderr

    # the backup is one consistent, self-contained database
    with sqlite3.connect(backup) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        in_backup = [r[0] for r in conn.execute("SELECT name FROM vpcs ORDER BY created_at")]
    assert in_backup[0] == "before"
    assert in_backup[1:] == written[:len(in_backup) - 1], "backup is not a prefix of the writes"

    # refused while the controller serves the state directory; nothing changed
    refused = ctl(controller.state, "restore", str(backup))
    assert refused.returncode == 1 and "stop it first" in refused.stderr
    live = controller.vpc_names()
    assert live == ["before", *written]

    controller.stop()
    done = ctl(controller.state, "restore", str(backup))
    assert done.returncode == 0, done.stderr
    controller.start()
    assert controller.vpc_names() == in_backup
    assert list(controller.state.glob("controller.db.pre-restore-*")), "replaced DB not kept"


def test_restore_refuses_a_file_that_is_not_a_backup(controller, tmp_path):
    with controller.api() as api:
        api.post("/vpcs", json={"name": "keep", "cidr_block": "10.1.0.0/16"})
    controller.stop()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    out = ctl(controller.state, "restore", str(junk))
    assert out.returncode == 1 and "restore refused" in out.stderr
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    out = ctl(controller.state, "restore", str(other))
    assert out.returncode == 1 and "not a miniecs controller database" in out.stderr
    controller.start()
    assert controller.vpc_names() == ["keep"]


def test_backup_of_postgresql_points_to_pg_dump(tmp_path):
    env = dict(os.environ, MINIECS_STATE_DIR=str(tmp_path),
               MINIECS_DATABASE_URL="postgresql+psycopg:///nothing")
    out = subprocess.run([str(BIN), "backup", str(tmp_path / "x")], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "pg_dump" in out.stderr
