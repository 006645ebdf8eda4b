"""DHCP for guests that ask: one dnsmasq per VPC router namespace, static hosts only.

The NoCloud seed configures addresses, but an image without a NoCloud reader
asks DHCP, and must get its own address. For every ``NetworkSpec`` the agent
keeps a dnsmasq running inside the router namespace, bound to the router veth,
with no DNS (``port=0``), one ``static`` range per vSwitch (so unknown MACs get
nothing), the vSwitch gateway as router and the VPC MTU, and a hosts file with
the MAC and IP of each port *on this host* (a DHCP broadcast also floods over
VXLAN; remote routers don't know the MAC and stay silent).

Files live in ``<state>/dhcp/<router ns>/`` (``dnsmasq.conf``, ``hosts``,
``leases``, ``dnsmasq.pid``). A changed hosts file is reloaded with SIGHUP, a
changed configuration restarts the daemon; a namespace that left the spec has
its dnsmasq stopped (by the pid it wrote) before the namespace goes. The
daemons survive an agent restart like guests do, and are adopted by pid file.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

from agent import faults
from agent import netlink, proc
from agent.errors import AgentError
from agent.spec import ROUTER_NS_PREFIX, NetworkSpec

log = logging.getLogger(__name__)

LEASE_TIME = "12h"


def conf_text(net: NetworkSpec, directory: Path) -> str:
    lines = [f"# miniecs: DHCP for {net.vpc_id} (static hosts only)",
             "port=0", "no-resolv", "no-hosts", "bind-interfaces",
             f"interface={net.veth_router_side}", "except-interface=lo",
             "dhcp-authoritative", "user=root",
             f"dhcp-leasefile={directory / 'leases'}",
             f"dhcp-hostsfile={directory / 'hosts'}",
             f"pid-file={directory / 'dnsmasq.pid'}",
             f"dhcp-option=option:mtu,{net.mtu}"]
    for g in net.gateways:
        block = IPv4Network(g.cidr)
        tag = g.vswitch_id.replace("-", "_")
        lines.append(f"dhcp-range=set:{tag},{block.network_address},static,{block.netmask},"
                     f"{LEASE_TIME}")
        lines.append(f"dhcp-option=tag:{tag},option:router,{g.gateway_ip}")
    return "\n".join(lines) + "\n"


def hosts_text(net: NetworkSpec) -> str:
    return "".join(f"{p.mac.lower()},{p.ip}\n"
                   for p in sorted(net.ports, key=lambda p: p.ip) if p.vtep is None)


@dataclass(frozen=True)
class DhcpObserved:
    conf: str | None
    hosts: str | None
    pid: int | None  # a live dnsmasq started with this directory's conf


@dataclass(frozen=True)
class WriteHosts:
    router_ns: str
    text: str
    reload: bool


@dataclass(frozen=True)
class StartDhcp:
    network: NetworkSpec
    stop_pid: int | None = None  # a daemon with an outdated configuration


@dataclass(frozen=True)
class StopDhcp:
    router_ns: str
    pid: int | None


DhcpAction = WriteHosts | StartDhcp | StopDhcp


def plan_dhcp(desired: list[NetworkSpec], observed: dict[str, DhcpObserved],
              routers: set[str], directory: Path) -> list[DhcpAction]:
    """Actions for the daemons of ``desired`` (only where the router namespace exists now)."""
    acts: list[DhcpAction] = []
    want = {n.router_ns for n in desired}
    for net in desired:
        if net.router_ns not in routers:
            continue
        obs = observed.get(net.router_ns, DhcpObserved(None, None, None))
        hosts = hosts_text(net)
        conf = conf_text(net, directory / net.router_ns)
        if obs.hosts != hosts:
            acts.append(WriteHosts(net.router_ns, hosts,
                                   reload=obs.pid is not None and obs.conf == conf))
        if obs.pid is None or obs.conf != conf:
            acts.append(StartDhcp(net, stop_pid=obs.pid))
    for name in sorted(set(observed) - want):
        acts.append(StopDhcp(name, observed[name].pid))
    return acts


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _live_pid(directory: Path) -> int | None:
    text = _read(directory / "dnsmasq.pid")
    if not text or not text.strip().isdigit():
        return None
    pid = int(text.strip())
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    conf = f"--conf-file={directory / 'dnsmasq.conf'}".encode()
    return pid if cmdline and cmdline[0].endswith(b"dnsmasq") and conf in cmdline else None


def _stop(pid: int | None, timeout: float = 5.0) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class DhcpReconciler:
    def __init__(self, ns_path, directory: Path, binary: str = "dnsmasq") -> None:
        self.ns_path = ns_path
        self.directory = Path(directory)
        self.binary = binary
        self._warned = False

    def observe(self) -> dict[str, DhcpObserved]:
        out = {}
        if not self.directory.is_dir():
            return out
        for d in sorted(self.directory.iterdir()):
            if d.is_dir() and d.name.startswith(ROUTER_NS_PREFIX):
                conf, pid = _read(d / "dnsmasq.conf"), _live_pid(d)
                if pid is not None and not self._in_router_ns(pid, d.name):
                    conf = ""  # serving a namespace that was deleted and made again: restart
                out[d.name] = DhcpObserved(conf, _read(d / "hosts"), pid)
        return out

    def _in_router_ns(self, pid: int, name: str) -> bool:
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == \
                os.stat(netlink.open_path(self.ns_path(name))).st_ino
        except (OSError, ValueError):
            return False

    def reconcile(self, desired: list[NetworkSpec], routers: set[str]) -> list[str]:
        errors: list[str] = []
        if shutil.which(self.binary) is None:
            if desired and not self._warned:
                log.warning("dnsmasq not installed: no DHCP for guests that ask")
                self._warned = True
            return errors
        for a in plan_dhcp(desired, self.observe(), routers, self.directory):
            try:
                self.apply(a)
            except (AgentError, OSError) as exc:
                errors.append(f"dhcp {getattr(a, 'router_ns', '')}: {exc}")
        return errors

    def apply(self, a: DhcpAction) -> None:
        if isinstance(a, WriteHosts):
            d = self.directory / a.router_ns
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / "hosts.tmp"
            tmp.write_text(a.text)
            faults.point("dhcp.hosts_before_publish")
            os.replace(tmp, d / "hosts")
            pid = _live_pid(d) if a.reload else None
            if pid is not None:
                os.kill(pid, signal.SIGHUP)
        elif isinstance(a, StartDhcp):
            net = a.network
            d = self.directory / net.router_ns
            d.mkdir(parents=True, exist_ok=True)
            _stop(a.stop_pid)
            faults.point("dhcp.before_conf")
            (d / "dnsmasq.conf").write_text(conf_text(net, d))
            if not (d / "hosts").exists():
                (d / "hosts").write_text(hosts_text(net))
            proc.run(["nsenter", f"--net={netlink.open_path(self.ns_path(net.router_ns))}", "--",
                      self.binary, f"--conf-file={d / 'dnsmasq.conf'}"])
            faults.point("dhcp.started")
            log.info("dnsmasq for %s in %s", net.vpc_id, net.router_ns)
        elif isinstance(a, StopDhcp):
            _stop(a.pid)
            faults.point("dhcp.stopped")
            shutil.rmtree(self.directory / a.router_ns, ignore_errors=True)
            log.info("dnsmasq in %s stopped", a.router_ns)
        else:  # pragma: no cover
            raise TypeError(a)

