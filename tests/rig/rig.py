"""The namespace rig: several simulated hypervisors on one machine.

Each rig host is a network namespace plus a private mount namespace in which
its own ``virtlogd`` and ``libvirtd`` run over bind-mounted copies of
``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt``, ``/var/cache/libvirt``
and ``/var/log/libvirt``. The agent runs inside the host's network namespace
and talks to that libvirtd through ``qemu:///system?socket=<run>/libvirt-sock``:
the production code path, several hosts on one machine.

Hosts share an underlay bridge in the rig's own namespace. A forwarder (see
``forward.py``) makes the controller on this machine's loopback reachable as
``127.0.0.1:PORT`` inside every host namespace. Nothing is added to the
machine's own network namespace.

Everything the rig starts is recorded (pids, namespaces) in ``rig.json`` so a
later process (``make demo-down``, a crashed test run) can take it down.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_BASE = Path(os.environ.get("MINIECS_RIG_DIR", "/var/tmp/miniecs-rig"))
UNDERLAY_NET = "198.18.0"  # RFC 2544 benchmarking range, only inside the rig
# The rig's "internet": TEST-NET-3, only inside the rig. .1 is the internet namespace
# (the hosts' default gateway, a client and a server), hosts' uplinks are .11, .12, ...,
# and the region's EIP pool is EIP_POOL (proxy-ARPed by the host of each instance).
INTERNET_NET = "203.0.113"
INTERNET_IP = f"{INTERNET_NET}.1"
EIP_POOL = f"{INTERNET_NET}.128/26"
UPLINK_IF = "up0"

QEMU_CONF_OVERRIDES = """
# miniecs rig: QEMU as root (no re-probe of /dev/kvm per start), no MAC driver
user = "root"
group = "root"
security_driver = "none"
dynamic_ownership = 0
cgroup_controllers = [ ]
"""

# Peer libvirtds reach each other for live migration over plain TCP without auth:
# acceptable only because the underlay is a namespace nothing else can reach. Real
# hosts use qemu+tls (docs/operations.md).
LIBVIRTD_CONF_OVERRIDES = """
# miniecs rig: migration peers on the closed underlay
listen_tls = 0
listen_tcp = 1
listen_addr = "{address}"
auth_tcp = "none"
"""
MIGRATION_URI = "qemu+tcp://{address}/system"


def run(argv: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, timeout=timeout, capture_output=True, text=True)


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_pid(pid: int | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Stop one process we started, by pid: signal, wait, then SIGKILL."""
    if not _pid_alive(pid):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@dataclass
class RigHost:
    name: str
    netns: str
    root: str
    underlay_ip: str
    zone: str = "zone-a"
    uplink_ip: str = ""
    holder_pid: int | None = None
    agent_pid: int | None = None

    @property
    def path(self) -> Path:
        return Path(self.root)

    @property
    def libvirt_uri(self) -> str:
        return f"qemu:///system?socket={self.path / 'run' / 'libvirt-sock'}"

    @property
    def agent_state_dir(self) -> Path:
        return self.path / "agent"

    @property
    def agent_config(self) -> Path:
        return self.path / "agent.toml"

    @property
    def agent_log(self) -> Path:
        return self.path / "agent.log"

    def netns_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def mount_argv(self, argv: list[str]) -> list[str]:
        """Run in this host's network and mount namespaces (where libvirtd lives)."""
        return ["nsenter", "-t", str(self.holder_pid), "--mount", "--net", "--", *argv]

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(["virsh", "-q", "-c", self.libvirt_uri, *args], check=check)

    # -- lifecycle ---------------------------------------------------------------

    def start_daemons(self) -> None:
        p = self.path
        for sub in ("etc", "run", "lib", "cache", "log", "agent"):
            (p / sub).mkdir(parents=True, exist_ok=True)
        shutil.copytree("/etc/libvirt", p / "etc", dirs_exist_ok=True)
        shutil.rmtree(p / "etc" / "qemu" / "networks" / "autostart", ignore_errors=True)
        with open(p / "etc" / "qemu.conf", "a") as f:
            f.write(QEMU_CONF_OVERRIDES)
            # live migration: incoming data and NBD disk copies on the underlay
            f.write(f'migration_host = "{self.underlay_ip}"\n')
        with open(p / "etc" / "libvirtd.conf", "a") as f:
            f.write(LIBVIRTD_CONF_OVERRIDES.format(address=self.underlay_ip))
        binds = " && ".join(
            f"mkdir -p {target} && mount --bind {p / src} {target}"
            for src, target in (("etc", "/etc/libvirt"), ("run", "/run/libvirt"),
                                ("lib", "/var/lib/libvirt"), ("cache", "/var/cache/libvirt"),
                                ("log", "/var/log/libvirt")))
        # The holder keeps the private mount namespace alive; daemons join it.
        holder = subprocess.Popen(
            self.netns_argv(["unshare", "--mount", "--propagation", "private",
                             "sh", "-c", f"{binds} && exec sleep infinity"]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(p / "holder.log", "w"), start_new_session=True)
        self.holder_pid = holder.pid
        deadline = time.monotonic() + 10
        own_mnt = os.readlink("/proc/self/ns/mnt")
        while time.monotonic() < deadline:
            try:
                if os.readlink(f"/proc/{holder.pid}/ns/mnt") != own_mnt and \
                        os.readlink(f"/proc/{holder.pid}/exe").endswith("sleep"):
                    break
            except OSError:
                pass
            if holder.poll() is not None:
                raise RuntimeError(f"rig host {self.name}: mount namespace failed: "
                                   f"{(p / 'holder.log').read_text()}")
            time.sleep(0.02)
        run(self.mount_argv(["virtlogd", "-d", "-p", str(p / "virtlogd.pid")]))
        run(self.mount_argv(["libvirtd", "-d", "--listen", "-p", str(p / "libvirtd.pid")]))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.virsh("version", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"rig host {self.name}: libvirtd did not answer")

    def stop_daemons(self) -> None:
        p = self.path
        if (p / "run" / "libvirt-sock").exists() and _pid_alive(_read_pid(p / "libvirtd.pid")):
            listed = self.virsh("list", "--all", "--name", check=False)
            for dom in listed.stdout.split():
                self.virsh("destroy", dom, check=False)
                self.virsh("undefine", dom, "--nvram", check=False)
        # QEMU outlives libvirtd: end any guest this host's libvirtd started.
        for pidfile in (p / "run" / "qemu").glob("*.pid") if (p / "run" / "qemu").exists() else []:
            stop_pid(_read_pid(pidfile), timeout=5, sig=signal.SIGKILL)
        stop_pid(_read_pid(p / "libvirtd.pid"))
        stop_pid(_read_pid(p / "virtlogd.pid"))
        # the agent's DHCP servers (one dnsmasq per router namespace) outlive it, like guests
        dhcp = self.agent_state_dir / "dhcp"
        for pidfile in dhcp.glob("*/dnsmasq.pid") if dhcp.exists() else []:
            stop_pid(_read_pid(pidfile), timeout=5)
        stop_pid(self.holder_pid)
        self.holder_pid = None

    def write_agent_config(self, controller_url: str, enrolment_token: str, **extra: object) -> Path:
        values = {
            "controller_url": controller_url,
            "enrolment_token": enrolment_token,
            "host_name": self.name,
            "zone": self.zone,
            "libvirt_uri": self.libvirt_uri,
            "virt_type": "qemu",
            "state_dir": str(self.agent_state_dir),
            "underlay_address": self.underlay_ip,
            "migration_uri": MIGRATION_URI,
            **({"uplink_interface": UPLINK_IF} if self.uplink_ip else {}),
            **extra,
        }
        lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        self.agent_config.write_text("\n".join(lines) + "\n")
        return self.agent_config

    def start_agent(self) -> int:
        """Start the agent inside this host's network namespace; returns its pid."""
        log = open(self.agent_log, "a")
        proc = subprocess.Popen(
            # nsenter, not `ip netns exec`: the agent must share this machine's mount
            # namespace so the router namespaces it bind-mounts are visible to all.
            ["nsenter", f"--net=/run/netns/{self.netns}", "--",
             sys.executable, "-m", "agent.main", "--config", str(self.agent_config)],
            cwd=PROJECT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.agent_pid = proc.pid
        return proc.pid

    def stop_agent(self, sig: int = signal.SIGTERM) -> None:
        if sig == signal.SIGKILL:
            stop_pid(self.agent_pid, timeout=0, sig=signal.SIGKILL)
            deadline = time.monotonic() + 5
            while _pid_alive(self.agent_pid) and time.monotonic() < deadline:
                try:
                    os.waitpid(self.agent_pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.02)
        else:
            stop_pid(self.agent_pid, timeout=15, sig=sig)
        self.agent_pid = None


@dataclass
class Rig:
    name: str = "t"
    base: str = str(DEFAULT_BASE)
    hosts: dict[str, RigHost] = field(default_factory=dict)
    forwarder_pid: int | None = None
    controller_port: int | None = None

    @property
    def path(self) -> Path:
        return Path(self.base) / self.name

    @property
    def underlay_ns(self) -> str:
        return f"mr-{self.name}-ul"

    @property
    def internet_ns(self) -> str:
        """The rig's outside world: gateway of the hosts' uplinks, a client and a server."""
        return f"mr-{self.name}-inet"

    def internet_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.internet_ns, *argv]

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        tmp = self.path / "rig.json.tmp"
        tmp.write_text(json.dumps({"version": 1, **data}, indent=2))
        tmp.rename(self.path / "rig.json")

    @classmethod
    def load(cls, name: str, base: Path = DEFAULT_BASE) -> "Rig | None":
        try:
            data = json.loads((base / name / "rig.json").read_text())
        except (OSError, ValueError):
            return None
        data.pop("version", None)
        hosts = {k: RigHost(**v) for k, v in data.pop("hosts").items()}
        return cls(hosts=hosts, **data)

    def up(self, count: int, controller_port: int, zone: str = "zone-a") -> None:
        """Create the underlay and ``count`` hosts, and the controller forwarder."""
        self.controller_port = controller_port
        self.path.mkdir(parents=True, exist_ok=True)
        self.save()
        run(["ip", "netns", "add", self.underlay_ns])
        ul = ["ip", "-n", self.underlay_ns]
        run([*ul, "link", "set", "lo", "up"])
        run([*ul, "link", "add", "ulbr", "type", "bridge"])
        run([*ul, "link", "set", "ulbr", "up"])
        run(["ip", "netns", "add", self.internet_ns])
        inet = ["ip", "-n", self.internet_ns]
        run([*inet, "link", "set", "lo", "up"])
        run([*inet, "link", "add", "inbr", "type", "bridge"])
        run([*inet, "addr", "add", f"{INTERNET_IP}/24", "dev", "inbr"])
        run([*inet, "link", "set", "inbr", "up"])
        for i in range(1, count + 1):
            self.add_host(f"h{i}", zone=zone)
        self.start_forwarder()

    def add_host(self, hname: str, zone: str = "zone-a") -> RigHost:
        index = len(self.hosts) + 1
        host = RigHost(name=hname, netns=f"mr-{self.name}-{hname}",
                       root=str(self.path / hname), underlay_ip=f"{UNDERLAY_NET}.{10 + index}",
                       zone=zone)
        self.hosts[hname] = host
        self.save()
        run(["ip", "netns", "add", host.netns])
        run(["ip", "-n", host.netns, "link", "set", "lo", "up"])
        peer = f"ul-{hname}"[:15]
        run(["ip", "-n", host.netns, "link", "add", "ul0", "type", "veth", "peer", "name", peer,
             "netns", self.underlay_ns])
        run(["ip", "-n", host.netns, "addr", "add", f"{host.underlay_ip}/24", "dev", "ul0"])
        run(["ip", "-n", host.netns, "link", "set", "ul0", "up"])
        run(["ip", "-n", self.underlay_ns, "link", "set", peer, "master", "ulbr", "up"])
        self._add_uplink(host, index)
        host.start_daemons()
        self.save()
        return host

    def _add_uplink(self, host: RigHost, index: int) -> None:
        """The host's uplink: a veth into the internet namespace, and its default route."""
        host.uplink_ip = f"{INTERNET_NET}.{10 + index}"
        peer = f"in-{host.name}"[:15]
        n = ["ip", "-n", host.netns]
        run([*n, "link", "add", UPLINK_IF, "type", "veth", "peer", "name", peer,
             "netns", self.internet_ns])
        run([*n, "addr", "add", f"{host.uplink_ip}/24", "dev", UPLINK_IF])
        run([*n, "link", "set", UPLINK_IF, "up"])
        run([*n, "route", "add", "default", "via", INTERNET_IP])
        run(["ip", "-n", self.internet_ns, "link", "set", peer, "master", "inbr", "up"])

    def start_forwarder(self) -> None:
        stop_pid(self.forwarder_pid)
        netns_args = [a for h in self.hosts.values() for a in ("--netns", h.netns)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.rig.forward", "--port", str(self.controller_port),
             *netns_args],
            cwd=PROJECT, stdin=subprocess.DEVNULL, stdout=open(self.path / "forward.log", "w"),
            stderr=subprocess.STDOUT, start_new_session=True)
        self.forwarder_pid = proc.pid
        self.save()
        # wait until the listener answers inside the first namespace
        first = next(iter(self.hosts.values()), None)
        deadline = time.monotonic() + 10
        while first and time.monotonic() < deadline:
            if "forwarding" in (self.path / "forward.log").read_text():
                break
            time.sleep(0.05)

    def down(self) -> None:
        """Take down everything this rig made; safe to call twice or after a crash."""
        for host in self.hosts.values():
            host.stop_agent()
            host.stop_daemons()
            run(["ip", "netns", "delete", host.netns], check=False)
        stop_pid(self.forwarder_pid)
        self.forwarder_pid = None
        run(["ip", "netns", "delete", self.underlay_ns], check=False)
        run(["ip", "netns", "delete", self.internet_ns], check=False)
        unmount_under(self.path)
        shutil.rmtree(self.path, ignore_errors=True)


def unmount_under(path: Path) -> None:
    """Lazily unmount everything mounted below ``path`` (router namespaces, bind mounts)."""
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted({p for p in points if p.startswith(prefix)}, key=len, reverse=True):
        run(["umount", "-l", point], check=False)


def rig_down(name: str, base: Path = DEFAULT_BASE) -> bool:
    rig = Rig.load(name, base)
    if rig is None:
        return False
    rig.down()
    return True
