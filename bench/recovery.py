"""Recovery benchmark: agent restart over 50 running domains; controller restart over 10,000 instances.

Agent (needs root; run under ``flock /tmp/miniecs-guests.lock``): one rig host,
50 instances running as real QEMU domains (TCG). Their image is a one-sector
boot disk that halts the CPU (``cli; hlt``), so 50 guests cost memory but no
CPU: they are real domains that never finish booting an OS — adoption does
not look inside guests. The agent is restarted ``RUNS`` times; each time we
take, from the moment the new process is spawned:

* ``adopt``: until the controller holds the agent's first report (after its
  first full pass: every domain adopted, bridges, router namespace, VXLAN,
  DHCP, NAT, iptables/ebtables chains and ipsets read back and verified) with
  the spec's generation applied (an unchanged report is a heartbeat, and the
  controller writes heartbeats in batches at most 1 s later: this figure carries
  up to that second);
* ``pass``: the first pass alone, and the process age at its end, from the
  agent's log line.

No domain may be restarted: every QEMU pid must be the same afterwards. The
peer, measured side by side: a bare libvirt-python scan of the same host
(connect, list, read each domain's state and metadata) — the least any
adopter must do.

Controller (no guests): a region database with 10,000 instances (rows written
by a factory like the service layer's create, on 20 hosts), the controller
restarted ``RUNS`` times twice; from spawn: ``healthz`` (the API answers) and its
CPU seconds, ``list`` (an authenticated list of instances answers), measured
with nothing else asking; then, in a second restart, ``agents`` (all 20 hosts'
spec polls answered). The peer, side by side: the same controller on an empty
database.

The hosts' polls are made with the agent's own client and retry policy, from the
moment the old controller stops. Printed: the API's ready time (wall and CPU
seconds) against the 3 s target and against the empty region, and when the
agents resumed.

Run as root: ``.venv/bin/python bench/recovery.py [agent|controller]``
(``--controller-only`` = ``controller``: no guests, no rig, no root needed).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import libvirt  # noqa: E402

from agent.spec import METADATA_NS  # noqa: E402
from tests.rig.cloud import BIN, Cloud  # noqa: E402

DOMAINS = int(os.environ.get("BENCH_DOMAINS", "50"))
INSTANCES = int(os.environ.get("BENCH_INSTANCES", "10000"))
HOSTS = 20
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
TARGET_READY_S = 3.0  # issue 6: controller ready under 3 s
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def halt_image(path: Path) -> Path:
    """A 1 MiB qcow2 whose boot sector disables interrupts and halts (no CPU under TCG)."""
    raw = path.with_suffix(".raw")
    sector = bytearray(512)
    sector[0:4] = b"\xfa\xf4\xeb\xfd"  # cli; hlt; jmp back to hlt
    sector[510:512] = b"\x55\xaa"
    raw.write_bytes(bytes(sector) + b"\0" * (1024 * 1024 - 512))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)],
                   check=True)
    raw.unlink()
    return path


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used: a figure the machine's load
    changes far less than wall time."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---- agent ------------------------------------------------------------------------------

def qemu_pids(host) -> dict[str, int]:
    run = host.path / "run" / "qemu"
    return {p.stem: int(p.read_text()) for p in run.glob("i-*.pid")}


def libvirt_scan(uri: str) -> float:
    """The peer: connect, list every domain, read its state and metadata."""
    t0 = time.perf_counter()
    conn = libvirt.open(uri)
    try:
        for dom in conn.listAllDomains():
            dom.state()
            dom.UUIDString()
            try:
                dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS,
                             libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            except libvirt.libvirtError:
                pass
    finally:
        conn.close()
    return time.perf_counter() - t0


def setup_agent_cloud(cloud: Cloud) -> tuple:
    """One rig host with ``DOMAINS`` running instances; returns (host, host id, pids)."""
    cloud.up(hosts=1)
    host = next(iter(cloud.rig.hosts.values()))
    host_id = cloud.get("/hosts")["items"][0]["id"]
    cloud.request("PATCH", f"/hosts/{host_id}", {"cpu_overcommit": 64})
    image = cloud.post("/images", {"name": "halt", "format": "qcow2",
                                   "source_path": str(halt_image(cloud.path / "halt.qcow2"))})
    image = cloud.wait_status(f"/images/{image['id']}", {"Available"})
    vpc = cloud.post("/vpcs", {"name": "rec", "cidr_block": "10.40.0.0/16"})
    vsw = cloud.post("/vswitches", {"name": "rec", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                    "cidr_block": "10.40.1.0/24"})
    sg = cloud.post("/security-groups", {"name": "rec", "vpc_id": vpc["id"]})
    cloud.post(f"/security-groups/{sg['id']}/rules",
               {"direction": "ingress", "protocol": "tcp", "port_range": "22/22",
                "peer_group_id": sg["id"]})
    t0 = time.monotonic()
    ids = [cloud.post("/instances", {
        "name": f"r{i}", "instance_type": "ecs.t1.nano", "image_id": image["id"],
        "vswitch_id": vsw["id"], "security_group_ids": [sg["id"]]})["id"]
        for i in range(DOMAINS)]
    for iid in ids:
        cloud.wait_status(f"/instances/{iid}", {"Running"}, timeout=600)
    print(f"{DOMAINS} domains running after {time.monotonic() - t0:.1f}s", flush=True)
    pids = qemu_pids(host)
    assert set(pids) == set(ids), "a domain without a QEMU pid file"
    return host, host_id, pids


def bench_agent() -> dict:
    cloud = Cloud(name="brec")
    old = Cloud.load("brec")
    if old:
        old.down()
    try:
        host, host_id, pids = setup_agent_cloud(cloud)
        adopt, passes, ages, scans, cpus = [], [], [], [], []
        cpu_start: list[float] = []
        cpu_pass: list[float] = []
        for run in range(RUNS):
            scans.append(libvirt_scan(host.libvirt_uri))
            host.stop_agent()
            # the controller writes unchanged reports (heartbeats) together, up to 1 s
            # later: wait that out, or the old agent's last beat reads as the new one's
            time.sleep(1.5)
            log_size = host.agent_log.stat().st_size
            before = cloud.get(f"/hosts/{host_id}")["last_heartbeat"]
            t0 = time.monotonic()
            host.start_agent()
            while True:
                h = cloud.get(f"/hosts/{host_id}")
                if h["last_heartbeat"] != before and h["generation_applied"] == h["generation"]:
                    break
                if time.monotonic() - t0 > 120:
                    raise TimeoutError("agent never reported after its restart")
                time.sleep(0.01)
            adopt.append(time.monotonic() - t0)
            cpus.append(cpu_s(host.agent_pid))
            with open(host.agent_log) as f:
                f.seek(log_size)
                m = re.search(r"first pass: (\d+) of (\d+) instance\(s\) running, ([0-9.]+)s; "
                              r"([0-9.]+)s after the process started \(([^)]*)\)"
                              r"(?:; CPU ([0-9.]+)s before the pass, ([0-9.]+)s in it)?",
                              text := f.read())
            assert m and int(m.group(1)) == DOMAINS, (
                "first pass did not see every domain running: "
                + (m.group(0) if m else "no first-pass line in the agent log:\n" + text[-3000:]))
            passes.append(float(m.group(3)))
            ages.append(float(m.group(4)))
            if m.group(6):
                cpu_start.append(float(m.group(6)))
                cpu_pass.append(float(m.group(7)))
            assert qemu_pids(host) == pids, "a domain was restarted by the agent's restart"
            print(f"  run {run + 1}: adopted {DOMAINS} in {adopt[-1]:.2f}s (first pass "
                  f"{passes[-1]:.2f}s: {m.group(5)}; process age {ages[-1]:.2f}s, agent CPU "
                  f"{cpus[-1]:.2f}s"
                  + (f": {m.group(6)}s starting, {m.group(7)}s in the pass" if m.group(6) else "")
                  + f"; load {os.getloadavg()[0]:.1f}); "
                  f"libvirt scan "
                  f"{scans[-1] * 1000:.0f} ms; same {len(pids)} QEMU pids", flush=True)
        return {"adopt": med(adopt), "pass": med(passes), "age": med(ages), "scan": med(scans),
                "cpu": med(cpus), "cpu_start": med(cpu_start), "cpu_pass": med(cpu_pass)}
    finally:
        cloud.down()


# ---- controller -----------------------------------------------------------------------

def populate(cloud: Cloud, count: int) -> list[str]:
    """``HOSTS`` hosts, VPCs, vSwitches and groups over the API; ``count`` instances as rows.

    The instances are written by a factory that fills the same rows as the service
    layer's create (instance, system disk, NIC with IP, MAC and tap, group links, host
    allocation), in one transaction per host — the service layer's one-by-one path
    with its IPAM and placement takes minutes for 10,000 here.
    """
    from ipaddress import IPv4Network

    from agent import spec
    from controller import ids
    from controller.config import Settings
    from controller.db import Database
    from controller.models import Disk, Host, Instance, Nic, NicSecurityGroup
    from controller.services import enrolment

    image = cloud.post("/images", {"name": "halt", "format": "qcow2",
                                   "source_path": str(halt_image(cloud.path / "halt.qcow2"))})
    cloud.wait_status(f"/images/{image['id']}", {"Available"})
    nets = []
    for n in range(HOSTS):
        vpc = cloud.post("/vpcs", {"name": f"v{n}", "cidr_block": f"10.{n}.0.0/16"})
        vsw = cloud.post("/vswitches", {"name": f"s{n}", "vpc_id": vpc["id"], "zone_id": "zone-a",
                                        "cidr_block": f"10.{n}.0.0/18"})
        sg = cloud.post("/security-groups", {"name": f"g{n}", "vpc_id": vpc["id"]})
        nets.append((vpc["id"], vsw["id"], sg["id"]))
    cloud.stop_controller()
    env = cloud.controller_env()
    db = Database(Settings(state_dir=Path(env["MINIECS_STATE_DIR"])).effective_database_url)
    tokens, host_ids = [], []
    for n in range(HOSTS):
        got, _ = enrolment.register_host(db, spec.HostRegistration(
            name=f"hv{n:02d}", zone="zone-a", underlay_address=f"192.0.2.{n + 1}",
            virt_type="qemu", capacity=spec.HostCapacity(vcpus=4096, memory_mib=4096 * 1024,
                                                         disk_gib=100000)))
        tokens.append(got.host_token)
        host_ids.append(got.host_id)
    t0 = time.monotonic()
    for n, host_id in enumerate(host_ids):
        vpc_id, vsw_id, sg_id = nets[n]
        addresses = list(IPv4Network(f"10.{n}.0.0/18").hosts())[10:]
        mine = range(n, count, HOSTS)

        def rows(session, n=n, host_id=host_id, vpc_id=vpc_id, vsw_id=vsw_id, sg_id=sg_id,
                 addresses=addresses, mine=mine):
            for k, i in enumerate(mine):
                inst = Instance(
                    id=ids.new_id("instance"), name=f"i{i}", description="", hostname=f"i{i}",
                    instance_type_id="ecs.t1.nano", vcpus=1, memory_mib=256,
                    image_id=image["id"], vpc_id=vpc_id, vswitch_id=vsw_id, zone_id="zone-a",
                    host_id=host_id, desired_power="running", stop_timeout_s=60,
                    status="Running", deletion_protection=False)
                inst.disks.append(Disk(id=ids.new_id("disk"), role="system", size_gib=1,
                                       image_id=image["id"], device="vda"))
                nic_id = ids.new_id("nic")
                nic = Nic(id=nic_id, vswitch_id=vsw_id, ip=str(addresses[k]),
                          mac=f"52:54:{n:02x}:{k >> 16 & 255:02x}:{k >> 8 & 255:02x}:{k & 255:02x}",
                          tap_name=ids.tap_name(nic_id), device_index=0)
                nic.security_groups.append(NicSecurityGroup(security_group_id=sg_id, position=0))
                inst.nics.append(nic)
                session.add(inst)
            host = session.get(Host, host_id)
            host.allocated_vcpus += len(mine)
            host.allocated_memory_mib += 256 * len(mine)
            host.allocated_disk_gib += len(mine)
            host.generation += 1
        db.write_retrying(rows)
    db.dispose()
    print(f"{count} instances written in {time.monotonic() - t0:.1f}s", flush=True)
    return tokens


class _OldBackoff:
    """The agent's retry policy before agent/backoff.py (0.5 s doubling to 10 s, whatever
    the failure): used when the tree under test has no ``agent.backoff``."""

    def __init__(self) -> None:
        self.step_s = 0.5

    def failed(self, _exc: BaseException) -> float:
        step, self.step_s = self.step_s, min(10.0, self.step_s * 2)
        return step


def agent_backoff():
    try:
        from agent.backoff import Backoff
    except ImportError:
        return _OldBackoff()
    return Backoff()


def time_restart(cloud: Cloud, tokens: list[str]) -> dict[str, float]:
    """From spawn: /healthz answers; a list answers; every host's spec poll answers.

    The hosts' polls are made as agents make them: with the agent's own client and its
    retry policy after a failure (``agent_backoff``), starting when the old controller
    stops, so an agent that met a refused connection sleeps out its back-off as a
    real one does. Each asks for the whole spec (``after=0``), a compile of its
    500 instances.
    """
    from agent.controller_client import ControllerClient
    from agent.errors import AgentError

    cloud.stop_controller()
    out: dict[str, float] = {}
    agents: dict[int, float] = {}
    retries: dict[int, int] = {}
    spawned = threading.Event()
    t0 = 0.0

    def poll(i: int, token: str) -> None:
        client = ControllerClient(cloud.url, timeout_s=60)
        client.token = token
        backoff = agent_backoff()
        start = time.monotonic()
        try:
            while time.monotonic() - start < 180:
                try:
                    client.get_spec(0, 0)
                    spawned.wait()
                    agents[i] = time.monotonic() - t0
                    return
                except AgentError as exc:
                    retries[i] = retries.get(i, 0) + 1
                    time.sleep(backoff.failed(exc))
        finally:
            client.close()

    threads = [threading.Thread(target=poll, args=(i, t)) for i, t in enumerate(tokens)]
    for t in threads:
        t.start()
    if tokens:
        time.sleep(0.2)  # every agent has met the stopped controller once
    log = open(cloud.path / "controller.log", "a")
    t0 = time.monotonic()
    proc = subprocess.Popen([str(BIN / "miniecs-controller"), "serve", "--listen",
                             f"127.0.0.1:{cloud.port}"], env=cloud.controller_env(),
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    spawned.set()
    cloud.controller_pid = proc.pid
    with httpx.Client(timeout=30) as c:
        while "healthz" not in out:
            try:
                if c.get(f"{cloud.url}/healthz").status_code == 200:
                    out["healthz"] = time.monotonic() - t0
                    out["cpu"] = cpu_s(proc.pid)
            except httpx.HTTPError:
                if proc.poll() is not None:
                    raise RuntimeError("controller exited") from None
                time.sleep(0.005)
        r = c.get(f"{cloud.url}/api/v1/instances", params={"max_results": 100},
                  headers={"Authorization": f"Bearer {cloud.admin_token}"})
        assert r.status_code == 200, r.text
        out["list"] = time.monotonic() - t0
    for t in threads:
        t.join()
    assert len(agents) == len(tokens), "a host's poll never answered"
    if tokens:
        out["agents"] = max(agents.values())
        out["cpu_agents"] = cpu_s(proc.pid)
        out["retries"] = sum(retries.values()) / len(tokens)
    return out


def bench_controller() -> dict:
    results = {}
    for label, count in (("empty", 0), ("full", INSTANCES)):
        cloud = Cloud(name=f"brc{label[0]}")
        old = Cloud.load(cloud.name)
        if old:
            old.down()
        cloud.path.mkdir(parents=True, exist_ok=True)
        try:
            cloud.init_controller()
            cloud.start_controller()
            cloud.ensure_zone("zone-a")
            tokens = populate(cloud, count)
            runs = []
            for _ in range(RUNS):
                # the API alone (its own start: nothing else asks it anything), then the
                # same restart with every host's agent polling from the moment it stops
                alone, busy = time_restart(cloud, []), time_restart(cloud, tokens)
                runs.append({**alone, "agents": busy["agents"], "cpu_agents": busy["cpu_agents"],
                             "retries": busy["retries"], "healthz_busy": busy["healthz"]})
            for i, r in enumerate(runs):
                print(f"  {label} ({count} instances) run {i + 1}: healthz {r['healthz']:.2f}s "
                      f"(controller CPU {r['cpu']:.2f}s), "
                      f"list {r['list']:.2f}s; with agents polling: healthz "
                      f"{r['healthz_busy']:.2f}s, {len(tokens)} agents' polls {r['agents']:.2f}s "
                      f"(controller CPU {r['cpu_agents']:.2f}s; {r['retries']:.1f} failed "
                      f"tries per agent; load {os.getloadavg()[0]:.1f})",
                      flush=True)
            results[label] = {k: med([r[k] for r in runs]) for k in runs[0]}
        finally:
            cloud.down()
    return results


def compiled_bytecode() -> str:
    """Let the spawned agent and controller keep compiled bytecode, as an installed package
    has (pip compiles it): with ``PYTHONDONTWRITEBYTECODE`` set, as in this workplace's
    sessions, every measured start would compile the project's modules from source
    (~0.5 s of CPU for the controller). The bytecode goes to a cache directory of the
    benchmark's own, written by the untimed first start. ``BENCH_SOURCE_ONLY=1`` keeps
    the environment as it is (the figures of earlier runs)."""
    if os.environ.get("BENCH_SOURCE_ONLY") == "1":
        return "modules compiled from source at every start (BENCH_SOURCE_ONLY=1)"
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = "/var/tmp/miniecs-bench-pycache"
    return "compiled bytecode kept across starts, as installed"


def main() -> int:
    which = [{"--controller-only": "controller", "--agent-only": "agent"}.get(a, a)
             for a in sys.argv[1:]] or ["agent", "controller"]
    print(f"python: {compiled_bytecode()}; load average {os.getloadavg()[0]:.1f} at start",
          flush=True)
    if os.geteuid() != 0 and "agent" in which:
        print("the agent part needs root (rig namespaces, libvirtd)", file=sys.stderr)
        return 2
    a = c = None
    if "agent" in which:
        print(f"== agent restart over {DOMAINS} running domains ({RUNS} runs)", flush=True)
        a = bench_agent()
        print(f"agent: adopted {DOMAINS} domains {a['adopt']:.2f}s after the restart (median; "
              f"first pass {a['pass']:.2f}s, process age at its end {a['age']:.2f}s, agent CPU "
              f"{a['cpu']:.2f}s: {a['cpu_start']:.2f}s starting, {a['cpu_pass']:.2f}s in the "
              f"pass); "
              f"peer libvirt scan {a['scan'] * 1000:.0f} ms; ratio first pass/scan "
              f"{a['pass'] / a['scan']:.1f}x; target < 2 s", flush=True)
    if "controller" in which:
        print(f"== controller restart, {INSTANCES} instances vs empty ({RUNS} runs)", flush=True)
        c = bench_controller()
        f, e = c["full"], c["empty"]
        print(f"controller: {INSTANCES} instances: API ready {f['healthz']:.2f}s wall "
              f"({f['healthz'] / TARGET_READY_S:.2f}x the {TARGET_READY_S:.0f} s target), CPU "
              f"{f['cpu']:.2f}s to ready, list {f['list']:.2f}s, agents resumed "
              f"{f['agents']:.2f}s ({f['retries']:.1f} failed tries each); peer, an empty "
              f"region: ready {e['healthz']:.2f}s (CPU {e['cpu']:.2f}s), agents "
              f"{e['agents']:.2f}s; ratios full/empty: ready {f['healthz'] / e['healthz']:.2f}x, "
              f"CPU {f['cpu'] / e['cpu']:.2f}x, agents {f['agents'] / e['agents']:.2f}x; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    parts = []
    if a:
        parts.append(f"agent re-adopts {DOMAINS} domains (all adopted and verified) "
                     f"{a['age']:.2f}s after its restart, controller shows it at "
                     f"{a['adopt']:.2f}s (heartbeats written in 1-s batches); target 2 s "
                     f"(first pass {a['pass']:.2f}s = {a['pass'] / a['scan']:.1f}x a bare "
                     f"libvirt scan, agent CPU {a['cpu']:.2f}s), 0 restarted")
    if c:
        parts.append(f"controller with {INSTANCES} instances answers in {c['full']['healthz']:.2f}s "
                     f"(CPU {c['full']['cpu']:.2f}s; "
                     f"{c['full']['healthz'] / TARGET_READY_S:.2f}x the {TARGET_READY_S:.0f} s "
                     f"target, {c['full']['healthz'] / c['empty']['healthz']:.2f}x an empty "
                     f"region), "
                     f"agents resume in {c['full']['agents']:.2f}s "
                     f"({c['full']['agents'] / c['empty']['agents']:.2f}x an empty region)")
    parts.append(f"load average {os.getloadavg()[0]:.1f} (2 cores)")
    print("HEADLINE: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
