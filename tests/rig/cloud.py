"""A whole miniecs region on one machine: controller + rig hosts + agents.

Used by the end-to-end tests, ``make demo`` and the benchmarks. The
controller is the real ``miniecs-controller`` (its own process, SQLite under a
state directory unless a database URL is given); every rig host runs the real
``miniecs-agent`` against its own libvirtd. Talk to it through ``api`` (an
httpx client with the admin token) or the real ``miniecs`` CLI (``cli``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.rig.rig import EIP_POOL, PROJECT, Rig, RigHost, _pid_alive, stop_pid

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiError(RuntimeError):
    def __init__(self, response: httpx.Response):
        self.status_code = response.status_code
        try:
            self.body = response.json()
        except ValueError:
            self.body = {"message": response.text}
        super().__init__(f"{response.request.method} {response.request.url.path} -> "
                         f"{response.status_code} {self.body}")


@dataclass
class Cloud:
    name: str = "t"
    base: Path = Path("/var/tmp/miniecs-cloud")
    database_url: str | None = None
    port: int = field(default_factory=free_port)
    controller_pid: int | None = None
    admin_token: str = ""
    enrolment_token: str = ""
    rig: Rig | None = None

    # -- paths --------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.base / self.name

    @property
    def state_dir(self) -> Path:
        return self.path / "controller"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def controller_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MINIECS_STATE_DIR"] = str(self.state_dir)
        env["MINIECS_LISTEN"] = f"127.0.0.1:{self.port}"
        # short heartbeats so a killed agent shows quickly; quick stops in tests
        env.setdefault("MINIECS_HEARTBEAT_TIMEOUT_S", "30")
        env.setdefault("MINIECS_EIP_POOL", EIP_POOL)
        if self.database_url:
            env["MINIECS_DATABASE_URL"] = self.database_url
        return env

    # -- controller ---------------------------------------------------------------
    def init_controller(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        out = subprocess.run([str(BIN / "miniecs-controller"), "init", "--json"],
                             env=self.controller_env(), capture_output=True, text=True,
                             timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"miniecs-controller init failed: {out.stderr}{out.stdout}")
        data = json.loads(out.stdout)
        self.admin_token = data["admin_token"]
        self.enrolment_token = data["enrolment_token"]

    def start_controller(self) -> None:
        log = open(self.path / "controller.log", "a")
        proc = subprocess.Popen([str(BIN / "miniecs-controller"), "serve",
                                 "--listen", f"127.0.0.1:{self.port}"],
                                env=self.controller_env(), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.controller_pid = proc.pid
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("controller exited: " + (self.path / "controller.log").read_text()[-3000:])
            time.sleep(0.1)
        raise RuntimeError("controller did not answer /healthz")

    def stop_controller(self, sig: int = signal.SIGTERM) -> None:
        stop_pid(self.controller_pid, timeout=0 if sig == signal.SIGKILL else 15, sig=sig)
        self.controller_pid = None

    # -- region -------------------------------------------------------------------
    def up(self, hosts: int = 1, zone: str = "zone-a") -> None:
        """Controller, ``hosts`` rig hypervisors with their agents, all ready."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.init_controller()
        self.start_controller()
        self.rig = Rig(name=self.name)
        self.rig.up(hosts, controller_port=self.port, zone=zone)
        self.save()
        self.ensure_zone(zone)
        for host in self.rig.hosts.values():
            self.start_agent(host)
        self.wait_hosts_ready(len(self.rig.hosts))

    def down(self) -> None:
        if self.rig is not None:
            self.rig.down()
        self.stop_controller()
        shutil.rmtree(self.path, ignore_errors=True)

    def save(self) -> None:
        data = {"version": 1, "name": self.name, "port": self.port, "database_url": self.database_url,
                "controller_pid": self.controller_pid, "admin_token": self.admin_token,
                "enrolment_token": self.enrolment_token}
        (self.path / "cloud.json").write_text(json.dumps(data, indent=2))
        os.chmod(self.path / "cloud.json", 0o600)

    @classmethod
    def load(cls, name: str, base: Path = Path("/var/tmp/miniecs-cloud")) -> "Cloud | None":
        try:
            data = json.loads((base / name / "cloud.json").read_text())
        except (OSError, ValueError):
            return None
        data.pop("version", None)
        cloud = cls(base=base, **data)
        cloud.rig = Rig.load(name)
        return cloud

    def start_agent(self, host: RigHost) -> int:
        host.write_agent_config(f"http://127.0.0.1:{self.port}", self.enrolment_token)
        pid = host.start_agent()
        if self.rig:
            self.rig.save()
        return pid

    def agent_alive(self, host: RigHost) -> bool:
        return _pid_alive(host.agent_pid)

    def ensure_zone(self, zone: str) -> None:
        zones = self.get("/zones")
        if zone not in {z.get("name") or z.get("id") for z in _items(zones)}:
            self.post("/zones", {"name": zone})

    def wait_hosts_ready(self, count: int, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            hosts = [h for h in _items(self.get("/hosts")) if h.get("state") == "ready"]
            if len(hosts) >= count:
                return hosts
            if time.monotonic() > deadline:
                logs = "".join(h.agent_log.read_text()[-2000:] for h in self.rig.hosts.values()
                               if h.agent_log.exists())
                raise TimeoutError(f"{len(hosts)}/{count} hosts ready; agent logs:\n{logs}")
            time.sleep(0.2)

    # -- API ----------------------------------------------------------------------
    @property
    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/api/v1", timeout=60,
                            headers={"Authorization": f"Bearer {self.admin_token}"})

    def request(self, method: str, path: str, body: dict | None = None, ok: bool = True,
                **params: object) -> dict:
        with self.api as api:
            r = api.request(method, path, json=body, params=params or None)
        if ok and r.status_code >= 400:
            raise ApiError(r)
        return r.json() if r.content else {}

    def get(self, path: str, **params: object) -> dict:
        return self.request("GET", path, **params)

    def post(self, path: str, body: dict | None = None) -> dict:
        return self.request("POST", path, body)

    def delete(self, path: str, **params: object) -> dict:
        return self.request("DELETE", path, **params)

    def wait_status(self, path: str, statuses: set[str], timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get(path)
            if obj.get("status") in statuses:
                return obj
            if obj.get("status") == "Error" and "Error" not in statuses:
                raise AssertionError(f"{path} went to Error: {obj.get('status_reason')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} still {obj.get('status')} after {timeout}s "
                                   f"(wanted {statuses})")
            time.sleep(0.1)

    def wait_gone(self, path: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.api as api:
                r = api.get(path)
            if r.status_code == 404 or (r.status_code == 200 and r.json().get("status") == "Deleted"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} still there: {r.text[:300]}")
            time.sleep(0.1)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, MINIECS_ENDPOINT=self.url, MINIECS_TOKEN=self.admin_token,
                   MINIECS_CONFIG=str(self.path / "cli.toml"))
        proc = subprocess.run([str(BIN / "miniecs"), *args], env=env, capture_output=True,
                              text=True, timeout=300)
        if check and proc.returncode != 0:
            raise RuntimeError(f"miniecs {' '.join(args)} failed ({proc.returncode}): "
                               f"{proc.stderr}{proc.stdout}")
        return proc

    # -- guests -------------------------------------------------------------------
    def host_of(self, instance: dict) -> RigHost:
        host = self.get(f"/hosts/{instance['host_id']}")
        return self.rig.hosts[host["name"]]

    def router_netns(self, instance: dict) -> Path:
        """The router namespace of the instance's VPC on its host (SSH goes from there).

        The agent bind-mounts its router namespaces under ``<state_dir>/netns``.
        """
        host = self.host_of(instance)
        vpc_suffix = instance["vpc_id"].split("-", 1)[1]
        netns_dir = host.agent_state_dir / "netns"
        for ns in sorted(os.listdir(netns_dir)) if netns_dir.exists() else []:
            if vpc_suffix[:8] in ns:
                return netns_dir / ns
        raise LookupError(f"no router namespace for {instance['vpc_id']} on {host.name}")

    def ssh(self, instance: dict, command: str, key_file: Path, timeout: float = 90.0
            ) -> subprocess.CompletedProcess:
        ns = self.router_netns(instance)
        return subprocess.run(
            ["nsenter", f"--net={ns}", "--", sys.executable, "-m", "tests.rig.ssh",
             "--host", instance["private_ip_address"], "--key", str(key_file), "--cmd", command,
             "--timeout", str(timeout)],
            cwd=PROJECT, capture_output=True, text=True, timeout=timeout + 60)


def _items(listing: dict | list) -> list[dict]:
    if isinstance(listing, list):
        return listing
    return listing.get("items", [])


def ssh_answer_seconds(stderr: str) -> float | None:
    m = re.search(r"ssh-answered-after ([0-9.]+)", stderr)
    return float(m.group(1)) if m else None
