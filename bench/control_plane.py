"""Control-plane benchmark: one real controller, 500 simulated agents, 10,000 instances.

For each database (SQLite, then PostgreSQL from scripts/start-postgres.sh):

* a real controller (`miniecs-controller serve`, its own process) on a fresh
  database;
* simulated agents in a second process speaking the real agent protocol:
  enrol (`POST /agent/register`), open the agent channel
  (`WS /agent/channel`, as the real agent does; `--agent-protocol long-poll`:
  `GET /agent/spec?after=&wait=` and `POST /agent/report` instead), report
  every instance of each new spec as converged, and heartbeat at most 10 s
  apart like the real agent (its waits jittered between 80 % and all of the interval, as the
  real agent's are: without it the simulated region heartbeat in waves of 500);
* the tenant layout of a busy region: VPCs of 20 instances each (one
  vSwitch and one security group per VPC), spread over the hosts.

Measured:

* create throughput: instances accepted and placed per second (every answer
  carries its host), with 16 concurrent clients, two ways: the region is filled
  by batch creates (`POST /instances/batch`, ECS RunInstances with Amount: one
  VPC's members per call), then `--singles` (1,000) instances are created one
  per call into the full region; and the rate at which they reach Running
  through the agents' reports;
* list latency p50/p99 at full size (`GET /instances` pages, filtered by
  host, VPC and status; `GET /hosts`);
* fan-out: from an API change (a security-group rule) to every affected agent
  holding the new spec;
* controller CPU and RSS at rest (500 agents connected and heartbeating);
* last, what a single create costs with no peer host to tell: as many single
  creates as `--singles` (at most 200), each into a VPC of its own. Beside the
  creates into the full region (each tells ~20 peer hosts of its VPC) this
  splits a create's controller CPU into its own part and a part per spec it
  fans out.

Peer: OpenNebula documents one front-end managing 2,500 hosts and 10,000 VMs
at about 30 API requests/s; the ratio printed is our create rate (and total
API request rate) over 30 req/s. Targets: >= 50 instances accepted and placed
per second (judged for batch creates and for single creates apart), list p99 <
200 ms, fan-out < 1 s. Ends with one HEADLINE line.

Run: `make bench` or `.venv/bin/python bench/control_plane.py [--hosts N]
[--instances N] [--db sqlite|postgresql|both] [--profile DIR]`. With
``--profile`` py-spy (test extras) samples the controller during the create,
fan-out and no-peer create phases and writes collapsed stacks to DIR
(``py-spy`` format raw: one line per stack with its sample count; top frames
summarised on stdout).
``--profile-gil`` samples only the thread holding the GIL: where the controller's
Python CPU goes, without the threads waiting on locks, the database or the GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from agent.backoff import jittered  # noqa: E402 - the real agent's waits, jitter included
from agent.tunnel import ws_url  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = PROJECT / "images/build/tiny.qcow2"
PEER_REQ_S = 30.0
PER_VPC = int(os.environ.get("BENCH_PER_VPC", 20))
CLIENTS = 16
SINGLES = [1000]  # single creates measured after the batch fill (--singles)
ALONE_MAX = 200  # single creates into VPCs of their own, last (no peers)
PROFILE_GIL = [False]  # --profile-gil
PROTOCOL = ["channel"]  # --agent-protocol: the agents' channel, or long-poll + report POSTs


def args_singles() -> int:
    return SINGLES[0]
HEARTBEAT_S = 10.0
PASS_S = 0.5  # a simulated reconcile pass (real passes over 20 domains take longer)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def machine_cpu(sim_pid: int) -> dict[str, float]:
    """CPU seconds so far of the simulated agents, every PostgreSQL server process, and the
    whole machine's idle time (``/proc/stat``): where the cores the controller did not use
    went while the single creates ran, and whether one more controller process would
    have had one."""
    postgres = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    postgres += sum(proc_cpu_split(int(entry.name)))
            except OSError:
                pass  # it ended meanwhile
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    idle = (int(cpu[3]) + int(cpu[4])) / os.sysconf("SC_CLK_TCK")  # idle + iowait
    return {"agents": sum(proc_cpu_split(sim_pid)), "postgres": postgres, "idle": idle}


def time_singles(ctl: "Controller", seen: "Seen", bodies: list[dict],
                 latencies: list[float]) -> tuple[float, float, int]:
    """Create ``bodies`` one per call by ``CLIENTS`` clients: the seconds it took, the
    controller's CPU ms per create (all in: the create, the specs it fans out, the reports
    they bring back) and the specs the agents took meanwhile."""
    lock = threading.Lock()

    def create(body: dict) -> None:
        started = time.monotonic()
        inst = ctl.call("POST", "/instances", body)
        took = time.monotonic() - started
        assert inst["host_id"] and inst["status"] == "Pending"
        with lock:
            latencies.append(took)

    c0, cpu0, specs0 = time.monotonic(), ctl.cpu_seconds(), seen.count
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(create, bodies))
    return (time.monotonic() - c0, 1000 * (ctl.cpu_seconds() - cpu0) / max(len(bodies), 1),
            seen.count - specs0)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# ---- the simulated agents (their own process) ----------------------------------------

def agents_main(url: str, enrolment: str, hosts: int, seen_q: mp.Queue, ready: mp.Event,
                stop: mp.Event) -> None:
    """Enrol ``hosts`` agents, then long-poll/report like the real agent until ``stop``."""
    asyncio.run(_agents(url, enrolment, hosts, seen_q, ready, stop))


async def _agents(url, enrolment, hosts, seen_q, ready, stop) -> None:
    limits = httpx.Limits(max_connections=hosts * 2 + 20, max_keepalive_connections=hosts * 2)
    async with httpx.AsyncClient(base_url=url + "/api/v1", limits=limits,
                                 timeout=httpx.Timeout(90.0)) as http:
        sem = asyncio.Semaphore(16)

        async def enrol(n: int) -> tuple[str, str]:
            async with sem:
                r = await http.post("/agent/register", headers={
                    "Authorization": f"Bearer {enrolment}"}, json={
                    "name": f"sim-{n:04d}", "zone": "zone-a",
                    "underlay_address": f"10.{200 + n // 65536}.{n // 256 % 256}.{n % 256}",
                    "virt_type": "kvm",
                    "capacity": {"vcpus": 64, "memory_mib": 262144, "disk_gib": 4000}})
                r.raise_for_status()
                body = r.json()
                await report(body["host_id"], body["host_token"], -1, [])
                return body["host_id"], body["host_token"]

        def report_body(host_id, gen, instances) -> dict:
            return {"host_id": host_id, "generation_applied": gen, "generation_seen": gen,
                    "instances": instances, "operations": [], "errors": []}

        def take_spec(host_id, state, spec) -> None:
            """A new spec: every instance in it will be reported converged after a pass."""
            if spec["generation"] != state["gen"]:
                state["gen"] = spec["generation"]
                seen_q.put((host_id, state["gen"], time.time()))
                state["instances"] = [{"id": i["id"], "power": i["power"]}
                                      for i in spec["instances"]]
                state["dirty"].set()

        async def next_pass(state) -> None:
            """Wait for a new spec (at most a heartbeat), then the simulated reconcile pass."""
            try:
                await asyncio.wait_for(state["dirty"].wait(), jittered(HEARTBEAT_S))
            except TimeoutError:
                pass
            state["dirty"].clear()
            await asyncio.sleep(PASS_S)

        async def report(host_id, token, gen, instances, client=None) -> None:
            r = await (client or http).post("/agent/report", headers={"Authorization": f"Bearer {token}"},
                                            json=report_body(host_id, gen, instances))
            r.raise_for_status()

        identities = await asyncio.gather(*(enrol(n) for n in range(hosts)))
        ready.set()

        async def run(host_id: str, token: str) -> None:
            """Like the real agent: one loop long-polls the spec, another reconciles and
            reports (at most once per pass, PASS_S, and at least every heartbeat). Each
            agent has a client (two connections) of its own, as real agents do: one shared
            pool of 1,000 connections cost httpcore a scan of all of them per request, and
            the simulator, not the controller, became the bottleneck at 500 hosts."""
            async with httpx.AsyncClient(
                    base_url=url + "/api/v1", timeout=httpx.Timeout(90.0),
                    limits=httpx.Limits(max_connections=2, max_keepalive_connections=2)
            ) as mine:
                await agent_loops(host_id, token, mine)

        async def agent_loops(host_id: str, token: str, http) -> None:
            if PROTOCOL[0] == "channel":
                return await channel_loops(host_id, token)
            headers = {"Authorization": f"Bearer {token}"}
            state = {"gen": -1, "instances": [], "dirty": asyncio.Event()}

            async def poll() -> None:
                while not stop.is_set():
                    try:
                        r = await http.get("/agent/spec", headers=headers,
                                           params={"after": state["gen"],
                                                   "wait": round(jittered(25), 1)})
                        r.raise_for_status()
                        spec = r.json()
                    except (httpx.HTTPError, ValueError):
                        await asyncio.sleep(0.5)
                        continue
                    take_spec(host_id, state, spec)

            async def reconcile_and_report() -> None:
                while not stop.is_set():
                    await next_pass(state)
                    try:
                        await report(host_id, token, state["gen"], state["instances"], http)
                    except httpx.HTTPError:
                        pass

            await asyncio.gather(poll(), reconcile_and_report())

        async def channel_loops(host_id: str, token: str) -> None:
            """The real agent's way: one channel; specs arrive on it, reports leave on it
            (after each new spec's simulated pass, and at least every heartbeat)."""
            from websockets.asyncio.client import connect
            from websockets.exceptions import WebSocketException

            state = {"gen": -1, "instances": [], "dirty": asyncio.Event()}
            channel_url = ws_url(url, "/api/v1/agent/channel")

            async def receive(ws) -> None:
                async for message in ws:
                    take_spec(host_id, state, json.loads(message))

            async def report(ws) -> None:
                while True:
                    await next_pass(state)
                    await ws.send(json.dumps(report_body(host_id, state["gen"],
                                                         state["instances"])))

            while not stop.is_set():
                try:
                    async with connect(channel_url + f"?after={state['gen']}", max_size=None,
                                       compression=None, open_timeout=60,
                                       additional_headers={"Authorization": f"Bearer {token}"}
                                       ) as ws:
                        tasks = [asyncio.create_task(receive(ws)),
                                 asyncio.create_task(report(ws)),
                                 asyncio.create_task(stopped.wait())]
                        try:
                            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            for t in tasks:
                                t.cancel()
                    why = getattr(ws, "close_code", None)
                except (OSError, WebSocketException, TimeoutError) as exc:
                    why = type(exc).__name__
                    await asyncio.sleep(0.5)
                if not stop.is_set():
                    reconnects[why] = reconnects.get(why, 0) + 1

        reconnects: dict = {}
        stopped = asyncio.Event()

        async def watch_stop() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.5)
            stopped.set()

        watcher = asyncio.create_task(watch_stop())
        await asyncio.gather(*(run(h, t) for h, t in identities), return_exceptions=True)
        watcher.cancel()
        if reconnects:
            print(f"simulated agents: channels reopened {sum(reconnects.values())} times "
                  f"(why: {reconnects})", flush=True)


# ---- the controller ------------------------------------------------------------------

class Controller:
    def __init__(self, database_url: str | None, state: Path) -> None:
        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "MINIECS_STATE_DIR": str(state),
                    "MINIECS_HEARTBEAT_TIMEOUT_S": "3600", "MINIECS_CPU_OVERCOMMIT": "4"}
        if database_url:
            self.env["MINIECS_DATABASE_URL"] = database_url
        out = subprocess.run([str(BIN / "miniecs-controller"), "init", "--json"], env=self.env,
                             capture_output=True, text=True, timeout=300, check=True)
        tokens = json.loads(out.stdout)
        self.admin, self.enrolment = tokens["admin_token"], tokens["enrolment_token"]
        self.log = open(state / "controller.log", "a")
        self.proc = subprocess.Popen(
            [str(BIN / "miniecs-controller"), "serve", "--listen", f"127.0.0.1:{self.port}"],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("controller did not start; see " + str(state))
            time.sleep(0.2)
        self.http = httpx.Client(base_url=self.url + "/api/v1", timeout=120,
                                 limits=httpx.Limits(max_connections=64),
                                 headers={"Authorization": f"Bearer {self.admin}"})

    def call(self, method: str, path: str, body=None, **params) -> dict:
        r = self.http.request(method, path, json=body, params=params or None)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r.json() if r.content else {}

    def cpu_seconds(self) -> float:
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the controller so far."""
        return proc_cpu_split(self.proc.pid)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


class Seen:
    """The latest generation each simulated agent holds, fed from the agents' queue."""

    def __init__(self, q: mp.Queue) -> None:
        self.q = q
        self.latest: dict[str, tuple[int, float]] = {}
        self.count = 0
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop:
            try:
                host_id, gen, at = self.q.get(timeout=0.2)
            except queue.Empty:
                continue
            with self._lock:
                self.count += 1
                if gen > self.latest.get(host_id, (-1, 0))[0]:
                    self.latest[host_id] = (gen, at)

    def holding(self, host_id: str, gen: int) -> float | None:
        with self._lock:
            have = self.latest.get(host_id)
        return have[1] if have and have[0] >= gen else None

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)


# ---- one run ---------------------------------------------------------------------------

def all_hosts(ctl: Controller) -> list[dict]:
    items, token = [], None
    while True:
        page = ctl.call("GET", "/hosts", max_results=100, **({"next_token": token} if token else {}))
        items += page["items"]
        token = page["next_token"]
        if not token:
            return items


class Profiler:
    """py-spy sampling the controller between start() and stop() (``--profile``)."""

    def __init__(self, pid: int, directory: Path | None) -> None:
        self.pid, self.directory, self.proc, self.out = pid, directory, None, None

    def start(self, label: str) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.out = self.directory / f"{label}.txt"
        self.proc = subprocess.Popen(
            [str(BIN / "py-spy"), "record", "--pid", str(self.pid), "--format", "raw",
             "--rate", "50", "--output", str(self.out), "--nonblocking"]
            + (["--gil"] if PROFILE_GIL[0] else []),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        summarise_profile(self.out)


def summarise_profile(path: Path, top: int = 25) -> None:
    """Print the frames with the most samples anywhere on the stack (inclusive), ours only."""
    if not path or not path.exists():
        return
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue  # a frame name py-spy wrote across lines (generated SQLAlchemy code)
        n = int(count)
        total += n
        for frame in set(stack.split(";")):
            if "(controller/" in frame or "(agent/" in frame or "/controller/" in frame:
                inclusive[frame] = inclusive.get(frame, 0) + n
    print(f"profile {path.name}: {total} samples; inclusive share of our frames:")
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / max(total, 1):5.1f}%  {frame}")


def run(db_name: str, database_url: str | None, hosts: int, instances: int,
        profile: Path | None = None) -> dict:
    state = Path(tempfile.mkdtemp(prefix=f"bench-cp-{db_name}-"))
    print(f"\n== {db_name}: {hosts} hosts, {instances} instances, agents on {PROTOCOL[0]} "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs) ==", flush=True)
    ctl = Controller(database_url, state)
    ctx = mp.get_context("fork")
    seen_q, ready, stop = ctx.Queue(), ctx.Event(), ctx.Event()
    sim = ctx.Process(target=agents_main, args=(ctl.url, ctl.enrolment, hosts, seen_q, ready,
                                                stop), daemon=True)
    t0 = time.monotonic()
    sim.start()
    seen = Seen(seen_q)
    result: dict = {"db": db_name}
    try:
        if not ready.wait(600):
            raise RuntimeError("agents did not enrol")
        print(f"enrolled {hosts} simulated agents in {time.monotonic() - t0:.1f}s", flush=True)

        image = ctl.call("POST", "/images", {"name": "tiny", "format": "qcow2",
                                             "source_path": str(TINY)})
        while ctl.call("GET", f"/images/{image['id']}")["status"] != "Available":
            time.sleep(0.2)
        def make_vpc(n: int) -> tuple[dict, dict, dict]:
            # tenants' VPCs may overlap: every one is 10.0.0.0/16
            vpc = ctl.call("POST", "/vpcs", {"name": f"vpc-{n}", "cidr_block": "10.0.0.0/16"})
            vsw = ctl.call("POST", "/vswitches", {"name": f"vsw-{n}", "vpc_id": vpc["id"],
                                                  "zone_id": "zone-a",
                                                  "cidr_block": "10.0.0.0/24"})
            sg = ctl.call("POST", "/security-groups", {"name": f"sg-{n}", "vpc_id": vpc["id"]})
            return vpc, vsw, sg

        with ThreadPoolExecutor(CLIENTS) as pool:
            vpcs = list(pool.map(make_vpc, range(max(1, -(-instances // PER_VPC)))))

        # -- fill: batch creates (ECS RunInstances with Amount), one VPC's members per call
        singles = min(args_singles(), instances)
        fill = instances - singles
        profiler = Profiler(ctl.proc.pid, profile)
        created: list[dict] = []
        lock = threading.Lock()
        if fill:
            batches = [(v, min(PER_VPC, fill - v * PER_VPC)) for v in range(len(vpcs))
                       if v * PER_VPC < fill]
            blat: list[float] = []

            def batch(job) -> None:
                v, amount = job
                _vpc, vsw, sg = vpcs[v]
                body = {"name": f"vm-{v}-[1,3]", "amount": amount, "instance_type": "ecs.t1.nano",
                        "image_id": image["id"], "vswitch_id": vsw["id"],
                        "security_group_ids": [sg["id"]]}
                started = time.monotonic()
                out = ctl.call("POST", "/instances/batch", body)["items"]
                took = time.monotonic() - started
                assert len(out) == amount and all(i["host_id"] for i in out)
                with lock:
                    blat.append(took)
                    created.extend(out)
                    if len(created) // 1000 != (len(created) - amount) // 1000:
                        rate = len(created) / (time.monotonic() - b0)
                        print(f"  {len(created)} created ({rate:.1f}/s)", flush=True)

            profiler.start(f"{db_name}-fill")
            b0, cpu_b0 = time.monotonic(), ctl.cpu_seconds()
            with ThreadPoolExecutor(CLIENTS) as pool:
                list(pool.map(batch, batches))
            fill_s = time.monotonic() - b0
            profiler.stop()
            result["batch_per_s"] = fill / fill_s
            result["batch_cpu_ms_per_instance"] = 1000 * (ctl.cpu_seconds() - cpu_b0) / fill
            result["batch_p99_ms"] = pct(blat, 99) * 1000
            print(f"filled {fill} by {len(batches)} batch creates of up to {PER_VPC} in "
                  f"{fill_s:.1f}s: {result['batch_per_s']:.1f} instances/s (batch p50 "
                  f"{pct(blat, 50) * 1000:.0f} ms, p99 {result['batch_p99_ms']:.0f} ms); "
                  f"controller CPU {result['batch_cpu_ms_per_instance']:.1f} ms per instance",
                  flush=True)

        # -- create throughput: single creates into the (nearly) full region
        def single(n: int, vsw: dict, sg: dict) -> dict:
            return {"name": f"vm-{n}", "instance_type": "ecs.t1.nano", "image_id": image["id"],
                    "vswitch_id": vsw["id"], "security_group_ids": [sg["id"]]}

        latencies: list[float] = []
        profiler.start(f"{db_name}-create")
        c0 = time.monotonic()
        split0 = ctl.cpu_split()
        machine0 = machine_cpu(sim.pid)
        create_s, result["cpu_ms_per_create"], specs_served = time_singles(
            ctl, seen, [single(n, *vpcs[n % len(vpcs)][1:]) for n in range(singles)], latencies)
        user_s, system_s = (b - a for a, b in zip(split0, ctl.cpu_split()))
        machine = {k: (v - machine0[k]) / create_s * 100
                   for k, v in machine_cpu(sim.pid).items()}
        result["idle_pct"] = machine["idle"]
        # how much of a core the controller got meanwhile (a loaded machine starves it)
        result["create_cpu_pct"] = result["cpu_ms_per_create"] * singles / create_s / 10
        profiler.stop()
        result["creates_per_s"] = singles / create_s
        result["create_p50_ms"] = pct(latencies, 50) * 1000 if latencies else 0.0
        result["create_p99_ms"] = pct(latencies, 99) * 1000 if latencies else 0.0
        # API calls the controller answered in the phase: creates, plus each spec that
        # brought news and its report (requests, or messages on the agents' channels)
        result["api_req_per_s"] = (singles + 2 * specs_served) / create_s
        print(f"created {singles} one by one in {create_s:.1f}s: {result['creates_per_s']:.1f}/s "
              f"(p50 {result['create_p50_ms']:.0f} ms, p99 {result['create_p99_ms']:.0f} ms); "
              f"{specs_served} specs fanned out meanwhile; controller CPU "
              f"{result['cpu_ms_per_create']:.0f} ms per create "
              f"({user_s / (user_s + system_s or 1):.0%} user), busy "
              f"{result['create_cpu_pct']:.0f}% of a core", flush=True)
        print(f"the machine meanwhile ({os.cpu_count()} CPUs, % of a core): controller "
              f"{result['create_cpu_pct']:.0f}%, simulated agents {machine['agents']:.0f}%, "
              f"PostgreSQL {machine['postgres']:.0f}%, idle {machine['idle']:.0f}%", flush=True)
        c0 = b0 if fill else c0

        # -- everything Running (the agents reported)
        deadline = time.monotonic() + max(600, instances / 10)
        while True:
            running = ctl.call("GET", "/status")["summary"]
            if running["instances_converged"] >= instances or time.monotonic() > deadline:
                break
            time.sleep(1)
        result["running_per_s"] = running["instances_converged"] / (time.monotonic() - c0)
        print(f"{running['instances_converged']}/{instances} Running after "
              f"{time.monotonic() - c0:.1f}s ({result['running_per_s']:.1f}/s)", flush=True)

        # -- list latency at full size
        host_ids = [h["id"] for h in all_hosts(ctl)]
        queries = []
        for n in range(60):
            queries.append(("/instances", {"max_results": 100}))
            queries.append(("/instances", {"max_results": 100, "host_id": host_ids[n % hosts]}))
            queries.append(("/instances", {"max_results": 100, "vpc_id": vpcs[n % len(vpcs)][0]["id"]}))
            queries.append(("/instances", {"max_results": 50, "status": "Running"}))
            queries.append(("/hosts", {"max_results": 100}))
        # a deep page: the last one of a full walk
        token, pages, walk0 = None, 0, time.monotonic()
        while True:
            page = ctl.call("GET", "/instances", max_results=100,
                            **({"next_token": token} if token else {}))
            pages += 1
            token = page["next_token"]
            if not token:
                break
        walk_s = time.monotonic() - walk0
        list_lat = []
        by_kind: dict[str, list[float]] = {}
        for path, params in queries:
            started = time.monotonic()
            ctl.call("GET", path, **params)
            list_lat.append(time.monotonic() - started)
            kind = path + "".join(f" {k}" for k in sorted(params) if k != "max_results")
            by_kind.setdefault(kind, []).append(list_lat[-1])
        result["list_p50_ms"] = pct(list_lat, 50) * 1000
        result["list_p99_ms"] = pct(list_lat, 99) * 1000
        print(f"list: p50 {result['list_p50_ms']:.1f} ms, p99 {result['list_p99_ms']:.1f} ms "
              f"over {len(list_lat)} calls; full walk of {pages} pages in {walk_s:.1f}s; "
              + ", ".join(f"{k}: p50 {pct(v, 50) * 1000:.0f} / max {max(v) * 1000:.0f} ms"
                          for k, v in by_kind.items()), flush=True)

        # -- fan-out: a security-group rule change, to every agent holding a member
        profiler.start(f"{db_name}-fanout")
        fanouts, widths, posts = [], [], []
        fan_cpu0 = ctl.cpu_seconds()
        for n in range(5):
            _vpc, _vsw, sg = vpcs[(n * 7) % len(vpcs)]
            before = {h["id"]: h["generation"] for h in all_hosts(ctl)}
            changed0 = time.time()
            ctl.call("POST", f"/security-groups/{sg['id']}/rules",
                     {"direction": "ingress", "protocol": "tcp",
                      "port_range": f"{8000 + n}/{8000 + n}", "peer_cidr": "0.0.0.0/0"})
            posts.append(time.time() - changed0)  # the API call alone (its part of fan-out)
            after = {h["id"]: h["generation"] for h in all_hosts(ctl)}
            targets = {h: g for h, g in after.items() if g > before.get(h, -1)}
            deadline = time.monotonic() + 60
            while True:
                times = [seen.holding(h, g) for h, g in targets.items()]
                if all(t is not None for t in times) or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            missing = sum(t is None for t in times)
            fanouts.append(max((t for t in times if t is not None), default=changed0)
                           - changed0 if not missing else float("inf"))
            widths.append(len(targets))
            time.sleep(0.5)
        profiler.stop()
        # CPU of the phase (5 changes, their specs and reports, plus 2.5 s of rest traffic)
        result["cpu_ms_per_fanout"] = 1000 * (ctl.cpu_seconds() - fan_cpu0) / len(fanouts)
        result["fanout_s"] = max(fanouts)
        result["fanout_median_s"] = statistics.median(fanouts)
        result["fanout_hosts"] = statistics.median(widths)
        print(f"fan-out to {statistics.median(widths):.0f} hosts per change: "
              + ", ".join(f"{f:.3f}s" for f in fanouts)
              + " (of which the rule POST: " + ", ".join(f"{p:.3f}s" for p in posts) + "); "
              f"controller CPU {result['cpu_ms_per_fanout']:.0f} ms per change", flush=True)

        # -- at rest
        time.sleep(5)
        cpu0, w0 = ctl.cpu_seconds(), time.monotonic()
        time.sleep(20)
        result["rest_cpu_pct"] = 100 * (ctl.cpu_seconds() - cpu0) / (time.monotonic() - w0)
        result["rss_mib"] = ctl.rss_mib()
        print(f"at rest ({hosts} agents on {PROTOCOL[0]}, heartbeat {HEARTBEAT_S:.0f}s): controller "
              f"CPU {result['rest_cpu_pct']:.1f}% of a core, RSS {result['rss_mib']:.0f} MiB",
              flush=True)

        # -- what a single create costs with no peer host to tell: each into a VPC of its
        # own (last: these instances are not waited for, nor counted above)
        alone = min(ALONE_MAX, singles)
        if alone:
            with ThreadPoolExecutor(CLIENTS) as pool:
                own = list(pool.map(make_vpc, range(len(vpcs), len(vpcs) + alone)))
            time.sleep(2)  # their specs' traffic settles
            profiler.start(f"{db_name}-alone")
            alone_s, alone_cpu, alone_specs = time_singles(
                ctl, seen, [single(singles + n, vsw, sg) for n, (_v, vsw, sg) in enumerate(own)],
                [])
            profiler.stop()
            told = specs_served / singles - alone_specs / alone
            result["alone_cpu_ms"] = alone_cpu
            result["cpu_ms_per_spec"] = (result["cpu_ms_per_create"] - alone_cpu) / told \
                if told > 0 else float("nan")
            print(f"single creates into VPCs of their own (no peer host to tell): "
                  f"{alone / alone_s:.1f}/s, controller CPU {alone_cpu:.0f} ms per create, "
                  f"{alone_specs / alone:.1f} specs each; so each spec a create fans out cost "
                  f"~{result['cpu_ms_per_spec']:.1f} ms ({specs_served / singles:.1f} a create "
                  f"in the full region)", flush=True)
        return result
    finally:
        stop.set()
        sim.join(15)
        if sim.is_alive():
            sim.kill()
        seen.close()
        ctl.stop()
        kept = Path(tempfile.gettempdir()) / f"bench-control-plane-{db_name}.log"
        shutil.copyfile(state / "controller.log", kept)
        shutil.rmtree(state, ignore_errors=True)
        print(f"controller log: {kept}")


def postgres_url() -> str | None:
    script = PROJECT / "scripts/start-postgres.sh"
    try:
        base = subprocess.run(["sh", str(script), "miniecs_bench"], capture_output=True,
                              text=True, timeout=120, check=True).stdout.strip()
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"PostgreSQL unavailable: {exc}")
        return None
    from tests.controller_factories import create_pg_database
    return create_pg_database(base)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=int(os.environ.get("BENCH_HOSTS", 500)))
    ap.add_argument("--instances", type=int,
                    default=int(os.environ.get("BENCH_INSTANCES", 10000)))
    ap.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--singles", type=int, default=1000,
                    help="single creates (16 clients) after the batch fill; the rest of "
                    "--instances is filled by batch creates of one VPC's members each")
    ap.add_argument("--profile", type=Path, default=None,
                    help="directory for py-spy profiles of the controller (create, fan-out)")
    ap.add_argument("--agent-protocol", choices=("channel", "long-poll"), default="channel",
                    help="how the simulated agents talk: the agent channel (WebSocket, what "
                    "the real agent uses) or a long-poll and a report POST each (its fallback)")
    ap.add_argument("--profile-gil", action="store_true",
                    help="profile only the thread holding the GIL (Python CPU)")
    args = ap.parse_args()
    SINGLES[0] = args.singles
    PROFILE_GIL[0] = args.profile_gil
    PROTOCOL[0] = args.agent_protocol
    # SIGTERM unwinds like Ctrl-C, so the controller and agents are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = []
    if args.db in ("sqlite", "both"):
        results.append(run("sqlite", None, args.hosts, args.instances, args.profile))
    if args.db in ("postgresql", "both"):
        url = postgres_url()
        if url:
            from tests.controller_factories import drop_pg_database
            try:
                results.append(run("postgresql", url, args.hosts, args.instances,
                                   args.profile))
            finally:
                drop_pg_database(url)

    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
          f"({os.cpu_count()} CPUs)")
    print("| db | batch-created/s | creates/s | vs OpenNebula 30 req/s | API calls/s | "
          "CPU ms/create | list p50/p99 ms | fan-out max (median) s | rest CPU % | RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['db']} | {r.get('batch_per_s', 0):.1f} | {r['creates_per_s']:.1f} | "
              f"{r['creates_per_s'] / PEER_REQ_S:.2f}x "
              f"| {r['api_req_per_s']:.0f} | {r['cpu_ms_per_create']:.0f} "
              f"| {r['list_p50_ms']:.0f}/{r['list_p99_ms']:.0f} | "
              f"{r['fanout_s']:.3f} ({r['fanout_median_s']:.3f}) | {r['rest_cpu_pct']:.1f} | "
              f"{r['rss_mib']:.0f} |")
    for r in results:
        # the target counts instances accepted and placed per second: a batch create (ECS
        # RunInstances with Amount) is judged apart from one instance per call
        verdict = {True: "met", False: "MISSED"}
        print(f"{r['db']}: targets >=50 instances/s by batch create "
              f"{verdict[r.get('batch_per_s', 0) >= 50]}, by single creates "
              f"{verdict[r['creates_per_s'] >= 50]}; list p99<200ms "
              f"{verdict[r['list_p99_ms'] < 200]}, fan-out<1s {verdict[r['fanout_s'] < 1]}")
    print("HEADLINE: " + "; ".join(
        f"{r['db']} {args.hosts} hosts/{args.instances} instances ({PROTOCOL[0]}): "
        f"{r.get('batch_per_s', 0):.0f} instances/s by batch create, {r['creates_per_s']:.0f} "
        f"single creates/s ({r['creates_per_s'] / PEER_REQ_S:.1f}x OpenNebula's 30 req/s; "
        f"{r['api_req_per_s'] / PEER_REQ_S:.1f}x counting agent calls; "
        f"{r['cpu_ms_per_create']:.0f} ms controller CPU per create, "
        f"{r.get('alone_cpu_ms', float('nan')):.0f} ms with no peer host to tell, "
        f"~{r.get('cpu_ms_per_spec', float('nan')):.1f} ms per peer told), list p99 "
        f"{r['list_p99_ms']:.0f} ms, fan-out {r['fanout_s']:.2f} s to "
        f"{r['fanout_hosts']:.0f} hosts, idle {r['idle_pct']:.0f}% of a core while creating "
        f"one by one, rest CPU {r['rest_cpu_pct']:.0f}%, "
        f"RSS {r['rss_mib']:.0f} MiB" for r in results)
        + f"; load average {load[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
