"""Outbound NAT and elastic IPs: the router namespace's leg toward the host's uplink.

Per VPC on this host (``NetworkSpec.uplink``), when the agent has an
``uplink_interface``:

* a veth pair ``mup…h`` (host) / ``mup…r`` (router namespace). The host end
  holds ``169.254.0.1/32`` (the same on every pair; only ever used on-link),
  the router end the VPC's *transit address* (``100.64.0.0/10``, unique per
  VPC on a host), with the default route of the router namespace via
  ``169.254.0.1``;
* in the router namespace, iptables: SNAT of NAT-enabled vSwitch blocks to the
  transit address, 1:1 DNAT/SNAT for each EIP, and a FORWARD policy that
  lets nothing else in or out through the uplink leg;
* in the host namespace: a route to the transit address and one per EIP (via
  the transit address) on the host end; a proxy-ARP entry per EIP on the
  uplink so the outside world finds it on this host; and one MASQUERADE rule
  (chain ``miniecs-uplink``) for ``100.64.0.0/10`` leaving through the uplink.
  So two VPCs with the same private block never share a NAT table.

The host's own default route carries the traffic out (on the rig, via the
internet namespace). Nothing here touches anything without miniecs's mark
except the proxy-ARP entries, which are recorded in ``uplink.json``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from agent import faults
from agent import netlink, nlbatch, proc
from agent.errors import AgentError, TemporaryError
from agent.spec import NetworkSpec, UplinkSpec
from agent.state import read_json, write_json_atomic

log = logging.getLogger(__name__)

HOST_LINK_ADDRESS = "169.254.0.1"
TRANSIT_CIDR = "100.64.0.0/10"
HOST_NAT_CHAIN = "miniecs-uplink"


# ---- the router namespace's rules (pure) ---------------------------------------

def router_rules(up: UplinkSpec) -> dict[str, list[str]]:
    """The router namespace's nat and filter rules, as ``iptables-save`` prints them."""
    o = up.veth_router_side
    nat = [f"-A PREROUTING -d {e.public_ip}/32 -i {o} -j DNAT --to-destination {e.private_ip}"
           for e in up.eips]
    nat += [f"-A POSTROUTING -s {e.private_ip}/32 -o {o} -j SNAT --to-source {e.public_ip}"
            for e in up.eips]
    nat += [f"-A POSTROUTING -s {c} -o {o} -j SNAT --to-source {up.transit_ip}"
            for c in up.nat_cidrs]
    filt = [f"-A FORWARD -i {o} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    filt += [f"-A FORWARD -d {e.private_ip}/32 -i {o} -j ACCEPT" for e in up.eips]
    filt += [f"-A FORWARD -i {o} -j DROP"]
    filt += [f"-A FORWARD -s {e.private_ip}/32 -o {o} -j ACCEPT" for e in up.eips]
    filt += [f"-A FORWARD -s {c} -o {o} -j ACCEPT" for c in up.nat_cidrs]
    filt += [f"-A FORWARD -o {o} -j DROP"]
    return {"nat": nat, "filter": filt}


def restore_text(rules: dict[str, list[str]]) -> str:
    chains = {"nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
              "filter": ("INPUT", "FORWARD", "OUTPUT")}
    out = []
    for table, lines in rules.items():
        out.append(f"*{table}")
        out += [f":{c} ACCEPT [0:0]" for c in chains[table]]
        out += lines
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def host_routes(up: UplinkSpec) -> set[tuple[str, str | None]]:
    """(destination/32, gateway) routes on the host end of the pair."""
    return {(f"{up.transit_ip}/32", None)} | {(f"{e.public_ip}/32", up.transit_ip) for e in up.eips}


# ---- observe + apply -------------------------------------------------------------

@dataclass
class UplinkObserved:
    rules: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # ns -> table -> rules
    routes: dict[str, set[tuple[str, str | None]]] = field(default_factory=dict)  # host veth ->
    proxies: set[str] = field(default_factory=set)
    host_nat: bool = False


IFF_UP = 0x1


@dataclass
class _HostView:
    """The host namespace's links, IPv4 addresses and /32 main-table routes, read once a pass."""
    links: dict[str, "nlbatch.Link"]
    addrs: dict[int, set[str]]
    routes: dict[int, set[tuple[str, str | None]]]  # oif -> (dst/32, gateway)

    @classmethod
    def read(cls) -> "_HostView":
        fd = nlbatch.new_socket()
        try:
            links = {ln.name: ln for ln in nlbatch.links(fd)}
            addrs: dict[int, set[str]] = {}
            for idx, ip, _ in nlbatch.ipv4_addresses(fd):
                addrs.setdefault(idx, set()).add(ip)
            routes: dict[int, set[tuple[str, str | None]]] = {}
            for r in nlbatch.ipv4_routes(fd):
                if r.table == 254 and r.dst_len == 32:
                    routes.setdefault(r.oif, set()).add((f"{r.dst}/32", r.gateway))
        finally:
            import os
            os.close(fd)
        return cls(links, addrs, routes)


def _saved_rules(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
            out[table] = []
        elif line.startswith("-A "):
            out.setdefault(table, []).append(line)
    return out


class UplinkReconciler:
    def __init__(self, ns_path, uplink_interface: str | None, state_file: Path) -> None:
        self.ns_path = ns_path
        self.uplink = uplink_interface
        self.state_file = Path(state_file)
        # router ns -> (nft generation, namespace identity + rules) last read back or restored
        self._verified: dict[str, tuple[int, str]] = {}

    def _recorded_proxies(self) -> set[str]:
        data = read_json(self.state_file) or {}
        return set(data.get("proxy_arp", []))

    def _record_proxies(self, ips: set[str]) -> None:
        write_json_atomic(self.state_file, {"proxy_arp": sorted(ips)})

    def reconcile(self, desired: list[NetworkSpec], routers: set[str]) -> list[str]:
        """One pass over every VPC's uplink leg; returns error messages (empty when converged)."""
        errors: list[str] = []
        if not self.uplink:
            return errors
        nets = [n for n in desired if n.uplink is not None]
        host: _HostView | None = None
        if any(n.router_ns in routers for n in nets):
            try:
                host = _HostView.read()
            except OSError as exc:
                errors.append(f"uplink: netlink: {exc}")
        for net in nets:
            if net.router_ns not in routers or host is None:
                continue
            try:
                self._one(net, host)
            except (AgentError, OSError) as exc:
                errors.append(f"uplink {net.vpc_id}: {exc}")
        try:
            self._host_wide(nets)
        except (AgentError, OSError) as exc:
            errors.append(f"uplink: {exc}")
        return errors

    def _one(self, net: NetworkSpec, host: "_HostView") -> None:
        """Observe the leg with plain netlink dumps (kept sockets) and write only what differs."""
        up = net.uplink
        assert up is not None
        nspath = self.ns_path(net.router_ns)
        hl = host.links.get(up.veth_host_side)
        with netlink.raw(nspath) as fd:
            rl = next((ln for ln in nlbatch.links(fd) if ln.name == up.veth_router_side), None)
            fresh = hl is None or rl is None
            if fresh:
                with netlink.handle() as ipr:
                    for idx in ipr.link_lookup(ifname=up.veth_host_side):
                        ipr.link("del", index=idx)
                    if rl is not None:
                        with netlink.handle(nspath) as ns:
                            ns.link("del", index=rl.index)
                    self._create_pair(ipr, up, nspath)
                    host_idx = ipr.link_lookup(ifname=up.veth_host_side)[0]
                rl = next((ln for ln in nlbatch.links(fd) if ln.name == up.veth_router_side),
                          None)
                if rl is None:
                    raise TemporaryError(f"{up.veth_router_side} missing in {net.router_ns} "
                                         "right after it was made")
                r_addrs: set[str] = set()
                r_routes: list[nlbatch.Route] = []
            else:
                host_idx = hl.index
                r_addrs = {ip for idx, ip, _ in nlbatch.ipv4_addresses(fd) if idx == rl.index}
                r_routes = [r for r in nlbatch.ipv4_routes(fd) if r.oif == rl.index]
        self._router_side(nspath, rl, r_addrs, r_routes, up)
        if fresh:
            self._host_side(host_idx, False, set(), set(), up)
        else:
            self._host_side(host_idx, bool(hl.flags & IFF_UP), host.addrs.get(host_idx, set()),
                            host.routes.get(host_idx, set()), up)
        want = router_rules(up)
        text = restore_text(want)
        # The namespace's nftables generation moves on every ruleset change in it
        # (iptables-nft), so rules verified at generation G are still there while the
        # generation is G: no iptables-save per VPC per pass. Anything touching the
        # namespace's rules (a hand edit, a flush) bumps it, and the rules are read again.
        gen = self._generation(nspath)
        # (namespace identity, generation, rules): a namespace made again restarts its count
        text_key = f"{netlink.namespace_id(nspath)}\n{text}"
        if gen is not None and self._verified.get(net.router_ns) == (gen, text_key):
            return
        if gen is None or net.router_ns in self._verified:
            # read back: legacy iptables, or rules this agent verified before that changed
            saved = netlink.run_in_netns(nspath, ["iptables-save"])
            if saved.returncode != 0:
                raise TemporaryError(f"iptables-save in {net.router_ns}: {saved.stderr[:300]}")
            have = _saved_rules(saved.stdout)
            if all(have.get(t, []) == want[t] for t in want):
                if gen is not None:
                    self._verified[net.router_ns] = (gen, text_key)
                return
        # Not yet verified by this agent (a new namespace, an agent restart) or drifted:
        # the router namespace's tables are miniecs's alone, so restore them whole.
        self._verified.pop(net.router_ns, None)
        faults.point("uplink.before_router_rules")
        out = netlink.run_in_netns(nspath, ["iptables-restore"], input_text=text)
        if out.returncode != 0:
            raise TemporaryError(f"iptables-restore in {net.router_ns}: {out.stderr[:300]}")
        after = self._generation(nspath)
        if gen is not None and after == gen + text.count("COMMIT\n"):
            # exactly our restore (one nftables transaction per table) happened since
            self._verified[net.router_ns] = (after, text_key)
        log.info("router %s: %d NAT cidr(s), %d EIP(s)", net.router_ns, len(up.nat_cidrs),
                 len(up.eips))

    def _generation(self, nspath) -> int | None:
        """The router namespace's nftables generation, or None when it cannot vouch for
        the rules (iptables-legacy, no nf_tables, an error): then they are read every pass."""
        if not _iptables_is_nft():
            return None
        try:
            with netlink.raw(nspath, nlbatch.NETLINK_NETFILTER) as fd:
                return nlbatch.nft_generation(fd)
        except (AgentError, OSError):
            return None

    def _create_pair(self, ipr, up: UplinkSpec, nspath) -> None:
        import os
        fd = os.open(netlink.open_path(nspath), os.O_RDONLY)
        try:  # the router end is born inside the namespace
            ipr.link("add", ifname=up.veth_host_side, kind="veth",
                     peer={"ifname": up.veth_router_side, "net_ns_fd": fd})
        finally:
            os.close(fd)
        faults.point("uplink.veth_added")
        log.info("uplink veth %s <-> %s", up.veth_host_side, up.veth_router_side)

    def _router_side(self, nspath, rl: "nlbatch.Link", addrs: set[str],
                     routes: list["nlbatch.Route"], up: UplinkSpec) -> None:
        idx = rl.index
        have_host = any(r.table == 254 and r.dst == HOST_LINK_ADDRESS and r.dst_len == 32
                        and r.gateway is None and r.scope == 253 for r in routes)
        have_default = any(r.table == 254 and r.dst_len == 0 and r.gateway == HOST_LINK_ADDRESS
                           for r in routes)
        if rl.flags & IFF_UP and addrs == {up.transit_ip} and have_host and have_default:
            return
        with netlink.handle(nspath) as ns:
            if not rl.flags & IFF_UP:
                ns.link("set", index=idx, state="up")
            for a in addrs - {up.transit_ip}:
                ns.addr("del", index=idx, address=a, prefixlen=32)
            if up.transit_ip not in addrs:
                ns.addr("add", index=idx, address=up.transit_ip, prefixlen=32)
            ns.route("replace", dst=f"{HOST_LINK_ADDRESS}/32", oif=idx, scope=253)
            ns.route("replace", dst="0.0.0.0/0", gateway=HOST_LINK_ADDRESS, oif=idx)

    def _host_side(self, idx: int, is_up: bool, addrs: set[str],
                   have: set[tuple[str, str | None]], up: UplinkSpec) -> None:
        want = host_routes(up)
        if is_up and HOST_LINK_ADDRESS in addrs and have == want:
            return
        with netlink.handle() as ipr:
            if not is_up:
                ipr.link("set", index=idx, state="up")
            if HOST_LINK_ADDRESS not in addrs:
                ipr.addr("replace", index=idx, address=HOST_LINK_ADDRESS, prefixlen=32)
            for dst, gw in have - want:
                ipr.route("del", dst=dst, oif=idx, **({"gateway": gw} if gw else {}))
            faults.point("uplink.host_routes")
            for dst, gw in sorted(want - have, key=lambda r: r[1] is not None):
                if gw:
                    ipr.route("replace", dst=dst, gateway=gw, oif=idx)
                else:
                    ipr.route("replace", dst=dst, oif=idx, scope=253)

    def _host_wide(self, nets: list[NetworkSpec]) -> None:
        want_proxy = {e.public_ip for n in nets for e in n.uplink.eips}  # type: ignore[union-attr]
        recorded = self._recorded_proxies()
        if self.uplink:
            shown = proc.run(["ip", "-4", "neigh", "show", "proxy", "dev", self.uplink],
                             check=False).stdout
            have = {line.split()[0] for line in shown.splitlines() if line.strip()}
            for ip in sorted((recorded | have) & (recorded - want_proxy)):
                proc.run(["ip", "neigh", "del", "proxy", ip, "dev", self.uplink], check=False)
            for ip in sorted(want_proxy - have):
                proc.run(["ip", "neigh", "replace", "proxy", ip, "dev", self.uplink])
                faults.point("uplink.proxy_arp_added")
                _announce(self.uplink, ip)
        if want_proxy != recorded:
            self._record_proxies(want_proxy)
        if nets:
            if _read_sysctl("net/ipv4/ip_forward") != "1":
                _write_sysctl("net/ipv4/ip_forward", "1")
            rule = f"-A {HOST_NAT_CHAIN} -s {TRANSIT_CIDR} -o {self.uplink} -j MASQUERADE"
            saved = _saved_rules(proc.run(["iptables-save", "-t", "nat"]).stdout).get("nat", [])
            if rule not in saved or f"-A POSTROUTING -j {HOST_NAT_CHAIN}" not in saved:
                text = (f"*nat\n:{HOST_NAT_CHAIN} - [0:0]\n{rule}\nCOMMIT\n")
                proc.run(["iptables-restore", "--noflush"], input_text=text)
                faults.point("uplink.host_nat_chain")
                if f"-A POSTROUTING -j {HOST_NAT_CHAIN}" not in saved:
                    proc.run(["iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-j",
                              HOST_NAT_CHAIN])
                log.info("masquerade %s on %s", TRANSIT_CIDR, self.uplink)
        else:
            remove_host_nat()


_NFT: bool | None = None


def _iptables_is_nft() -> bool:
    """True when ``iptables`` is the nf_tables variant (checked once)."""
    global _NFT
    if _NFT is None:
        try:
            out = proc.run(["iptables", "-V"], check=False)
        except AgentError:
            return False
        _NFT = out.returncode == 0 and "nf_tables" in out.stdout
    return _NFT


def remove_host_nat() -> None:
    saved = proc.run(["iptables-save", "-t", "nat"], check=False).stdout
    if f":{HOST_NAT_CHAIN} " not in saved:
        return
    while f"-A POSTROUTING -j {HOST_NAT_CHAIN}" in saved:
        proc.run(["iptables", "-t", "nat", "-D", "POSTROUTING", "-j", HOST_NAT_CHAIN])
        saved = proc.run(["iptables-save", "-t", "nat"], check=False).stdout
    proc.run(["iptables", "-t", "nat", "-F", HOST_NAT_CHAIN], check=False)
    proc.run(["iptables", "-t", "nat", "-X", HOST_NAT_CHAIN], check=False)


def _read_sysctl(key: str) -> str:
    try:
        with open(f"/proc/sys/{key}") as f:
            return f.read().strip()
    except OSError:
        return ""


def _write_sysctl(key: str, value: str) -> None:
    try:
        with open(f"/proc/sys/{key}", "w") as f:
            f.write(value)
    except OSError as exc:
        raise TemporaryError(f"sysctl {key}: {exc}") from None


def _announce(ifname: str, ip: str) -> None:
    """Send a gratuitous ARP for ``ip`` with the uplink's MAC, so a moved EIP is found at once."""
    try:
        with open(f"/sys/class/net/{ifname}/address") as f:
            mac = bytes.fromhex(f.read().strip().replace(":", ""))
        addr = ipaddress.IPv4Address(ip).packed
        frame = (b"\xff" * 6 + mac + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x01"
                 + mac + addr + b"\x00" * 6 + addr)
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((ifname, 0))
            s.send(frame)
    except OSError as exc:
        log.debug("gratuitous ARP for %s on %s: %s", ip, ifname, exc)
