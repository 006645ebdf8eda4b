"""A controller restart: the listener is up before the application loads (connections
queue, they are not refused), the serve path loads nothing it does not need, no host is
marked down for heartbeats missed while the controller was away, and agents retry a
refused connection soon instead of sleeping out a long back-off."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.backoff import CAP_S, UNREACHABLE_CAP_S, Backoff
from agent.controller_client import ControllerClient, ControllerUnreachable
from agent.errors import TemporaryError
from controller.models import Host
from tests.controller_factories import Region, make_settings, open_database, sqlite_url

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def state(tmp_path) -> dict[str, str]:
    """An initialised SQLite state directory (the database at head) and its env."""
    env = {**os.environ, "MINIECS_STATE_DIR": str(tmp_path / "state")}
    env.pop("MINIECS_DATABASE_URL", None)
    out = subprocess.run([sys.executable, "-m", "controller.server_cli", "init", "--json"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return env


# ---- the serve path ------------------------------------------------------------------

SERVE_PROBE = textwrap.dedent("""
    import json, sys
    import controller.listener as listener

    WATCH = ("sqlalchemy", "fastapi", "uvicorn", "controller.app", "controller.db",
             "httpx", "cryptography", "alembic")
    seen = {}
    bind = listener.bind_listeners

    def loaded():
        return sorted(m for m in WATCH if m in sys.modules)

    def probing_bind(*args, **kw):
        seen["at_listen"] = loaded()
        sockets = bind(*args, **kw)
        import uvicorn

        def run(self, sockets=None):  # stop where uvicorn would start serving
            seen["at_serve"] = loaded()
            seen["sockets"] = len(sockets or ())
            print(json.dumps(seen), flush=True)

        uvicorn.Server.run = run
        return sockets

    listener.bind_listeners = probing_bind
    from controller.server_cli import app
    sys.argv = ["miniecs-controller", "serve", "--listen", "127.0.0.1:" + sys.argv[1]]
    app()
""")


def test_serve_listens_before_loading_the_app_and_loads_only_what_serving_needs(state):
    out = subprocess.run([sys.executable, "-c", SERVE_PROBE, str(free_port())], env=state,
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    # listening came first: nothing of the application, the ORM or the server was loaded
    assert seen["at_listen"] == [], seen
    assert seen["sockets"] == 1
    # what serving needs is there by the time uvicorn takes the sockets; what only an
    # image import from a URL, a key pair or a pending migration needs is not
    assert {"sqlalchemy", "fastapi", "uvicorn", "controller.app"} <= set(seen["at_serve"])
    assert not {"httpx", "cryptography", "alembic"} & set(seen["at_serve"]), seen
    assert out.returncode == 3  # the probe's uvicorn never started: start-up failure code


def _log_has(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text()


def test_connection_made_while_the_controller_starts_is_answered_not_refused(state, tmp_path):
    """The controller is held before its application starts (a `restore` holds the
    state's lock); a client that connects meanwhile is queued and answered after."""
    port = free_port()
    state_dir = Path(state["MINIECS_STATE_DIR"])
    log = tmp_path / "serve.log"
    with open(state_dir / "controller.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller.server_cli", "serve", "--listen",
             f"127.0.0.1:{port}"], env=state, cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=log.open("w"), stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    conn = socket.create_connection(("127.0.0.1", port), timeout=1)
                    break
                except ConnectionRefusedError:
                    assert proc.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, "the controller never listened"
                    time.sleep(0.02)
            with conn:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                conn.settimeout(1.0)
                with pytest.raises(TimeoutError):  # queued: nothing answers before start-up
                    conn.recv(100)
                assert not _log_has(log, "Application startup complete")
                fcntl.flock(lock, fcntl.LOCK_UN)
                conn.settimeout(60)
                answer = conn.recv(100)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            assert _log_has(log, "Application startup complete")
        finally:
            proc.terminate()
            proc.wait(30)


def test_serve_on_a_port_in_use_says_so(state):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "controller.server_cli", "serve",
                              "--listen", f"127.0.0.1:{port}"], env=state, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr


# ---- heartbeats across a restart -------------------------------------------------------

def test_restart_marks_no_host_down_for_heartbeats_missed_while_it_was_away(tmp_path):
    """Both hosts' last heartbeats are from before a long outage. After the restart the
    one whose agent reports stays ready; the silent one goes down only once a full
    heartbeat timeout of the controller answering has passed."""
    from fastapi.testclient import TestClient

    from controller.app import create_app

    timeout = 3.0
    settings = make_settings(tmp_path, heartbeat_timeout_s=timeout)
    db, tokens = open_database(sqlite_url(tmp_path))
    with TestClient(create_app(settings, db)) as client:
        first = Region(client, db, settings, tokens)
        alive, silent = first.register_host("hv-alive"), first.register_host("hv-silent")
    with db.write() as session:  # the controller was away for an hour
        for host in session.query(Host):
            assert host.state == "ready"
            host.last_heartbeat = datetime.now(UTC) - timedelta(hours=1)

    def states(region: Region) -> dict[str, str]:
        return {h["id"]: h["state"] for h in region.items("/hosts")}

    with TestClient(create_app(settings, db)) as client:
        region = Region(client, db, settings, tokens)
        started = time.monotonic()
        alive.client = client
        time.sleep(timeout * 2 / 3)  # the old watchdog looked after timeout / 3
        assert states(region) == {alive.host_id: "ready", silent.host_id: "ready"}
        alive.report({})  # its agent is back, a little late
        while states(region)[silent.host_id] != "down":
            assert time.monotonic() - started < timeout + timeout / 3 + 10, "never marked down"
            alive.report({})
            time.sleep(0.2)
        assert time.monotonic() - started >= timeout
        assert states(region)[alive.host_id] == "ready"
    db.dispose()


# ---- the agent's retries -------------------------------------------------------------

def test_backoff_retries_a_refused_connection_soon_and_other_failures_later():
    refused, other = ControllerUnreachable("refused"), TemporaryError("503")
    b = Backoff(rand=lambda: 1.0)  # the top of each jittered range
    assert [b.failed(refused) for _ in range(8)] == [0.5] + [UNREACHABLE_CAP_S] * 7
    assert b.succeeded() is True and b.succeeded() is False
    assert [b.failed(other) for _ in range(7)] == [0.5, 1, 2, 4, 8, CAP_S, CAP_S]
    assert b.failed(refused) == UNREACHABLE_CAP_S  # the controller went away: retry soon
    low = Backoff(rand=lambda: 0.0)
    assert [low.failed(other) for _ in range(3)] == [0.25, 0.5, 1.0]  # never less than half


def test_client_tells_a_refused_connection_from_other_failures():
    port = free_port()
    client = ControllerClient(f"http://127.0.0.1:{port}", timeout_s=5)
    with pytest.raises(ControllerUnreachable):
        client.get_spec(-1, 0)
    with socket.socket() as server:  # something listens but hangs up without answering
        server.bind(("127.0.0.1", port))
        server.listen()

        def hang_up() -> None:
            conn, _ = server.accept()
            conn.recv(1000)
            conn.close()

        t = threading.Thread(target=hang_up)
        t.start()
        with pytest.raises(TemporaryError) as got:
            client.get_spec(-1, 0)
        t.join()
    assert not isinstance(got.value, ControllerUnreachable)
    client.close()


def test_heartbeat_and_long_poll_waits_are_jittered_below_their_interval(monkeypatch):
    """Agents that heard from the controller together drift apart: each wait is drawn
    between 80 % and all of the configured interval (never longer: the heartbeat timeout
    still holds), and the agent's report and spec loops use it."""
    from agent import backoff, main as agent_main

    draws = iter([0.0, 0.5, 0.999])
    got = [backoff.jittered(10.0, rand=lambda: next(draws)) for _ in range(3)]
    assert got[0] == 10.0 and got[1] == pytest.approx(9.0) and 8.0 < got[2] < 8.01
    real = [backoff.jittered(25.0) for _ in range(200)]
    assert all(20.0 <= w <= 25.0 for w in real) and len(set(real)) > 100
    import inspect

    source = inspect.getsource(agent_main.Agent)
    assert "jittered(self.cfg.heartbeat_interval_s)" in source
    assert "jittered(self.cfg.long_poll_wait_s)" in source
