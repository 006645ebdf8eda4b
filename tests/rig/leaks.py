"""Leak check: what host objects exist on the rig's hypervisors.

``snapshot(rig)`` lists, per rig host, the libvirt domains, files under the
agent's instances directory, network namespaces, bridges, VXLAN devices, taps
and veths, iptables chains, ebtables chains and rules, ipsets, and nftables
tables (the anti-spoofing table). An end-to-end test takes one before it runs
and, after it has cleaned up, waits for the rig to be back to exactly that
(``wait_no_leaks``): anything new is something the test made and left.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from agent.nft import Nft
from tests.rig.rig import Rig


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return proc.stdout if proc.returncode == 0 else ""


OWN_PREFIXES = ("miniecs", "mecs")


def ebtables_items(saved: str) -> set[str]:
    """miniecs's ebtables chains and rules, in every table, from ``ebtables-save`` output.

    A chain with a miniecs prefix (the anti-spoofing ``mecs-`` chains, the overlay's
    ``miniecs-overlay``) is one item; each rule in such a chain, or jumping to one from
    a base chain, is another, so a per-NIC rule or a jump left behind shows up too.
    """
    found: set[str] = set()
    table = ""
    for line in saved.splitlines():
        line = line.strip()
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and line[1:].lower().startswith(OWN_PREFIXES):
            found.add(f"ebtables:{table}:{line[1:].split()[0]}")
        elif line.startswith("-A "):
            words = line.split()
            target = words[words.index("-j") + 1] if "-j" in words[:-1] else ""
            if words[1].lower().startswith(OWN_PREFIXES) or target.lower().startswith(OWN_PREFIXES):
                found.add(f"ebtables-rule:{table}:{line}")
    return found


def snapshot(rig: Rig) -> set[str]:
    found: set[str] = set()
    try:
        found |= {f"netns:{n}" for n in os.listdir("/run/netns") if n.startswith(f"mr-{rig.name}")
                  or n.startswith(f"{rig.name}")}
    except FileNotFoundError:
        pass
    for host in rig.hosts.values():
        tag = host.name
        out = _run(["virsh", "-q", "-c", host.libvirt_uri, "list", "--all", "--name"])
        found |= {f"{tag}:domain:{d}" for d in out.split()}
        netns_dir = host.agent_state_dir / "netns"
        if netns_dir.exists():
            found |= {f"{tag}:netns:{n}" for n in os.listdir(netns_dir)}
        dhcp_dir = host.agent_state_dir / "dhcp"
        if dhcp_dir.exists():
            found |= {f"{tag}:dhcp:{n}" for n in os.listdir(dhcp_dir)}
        for sub in ("instances", "disks", "snapshots"):
            for root, _dirs, files in os.walk(host.agent_state_dir / sub):
                found |= {f"{tag}:file:{os.path.join(root, f)}" for f in files}
        links = _run(["ip", "-n", host.netns, "-j", "-d", "link", "show"])
        for link in json.loads(links or "[]"):
            kind = (link.get("linkinfo") or {}).get("info_kind", "")
            name = link["ifname"]
            if kind in ("bridge", "vxlan", "tun", "veth") and name != "ul0":
                found.add(f"{tag}:link:{kind}:{name}")
        for table in ("filter", "nat", "raw", "mangle"):
            out = _run(["ip", "netns", "exec", host.netns, "iptables-save", "-t", table])
            found |= {f"{tag}:chain:{table}:{line.split()[0][1:]}" for line in out.splitlines()
                      if line.startswith(":") and line[1:].lower().startswith(("miniecs", "mecs", "m-"))}
        found |= {f"{tag}:{item}" for item in
                  ebtables_items(_run(["ip", "netns", "exec", host.netns, "ebtables-save"]))}
        out = _run(["ip", "-n", host.netns, "-4", "neigh", "show", "proxy"])
        found |= {f"{tag}:proxy-arp:{line.split()[0]}" for line in out.splitlines() if line.strip()}
        out = _run(["ip", "-n", host.netns, "-4", "route", "show"])
        found |= {f"{tag}:route:{line.split()[0]}" for line in out.splitlines()
                  if " dev mup" in line}
        out = _run(["ip", "netns", "exec", host.netns, "ipset", "list", "-n"])
        found |= {f"{tag}:ipset:{s}" for s in out.split()}
        found |= {f"{tag}:{item}" for item in nft_tables(host.netns)}
    return found


def nft_tables(netns: str) -> set[str]:
    """miniecs's nftables tables (the anti-spoofing table) in a rig host's namespace."""
    nft = Nft(netns)
    try:
        return {f"nft:{t['table']['family']}:{t['table']['name']}"
                for t in nft.list_json("tables") or []
                if "table" in t and t["table"]["name"].startswith(("miniecs", "mecs"))}
    finally:
        nft.close()


def wait_no_leaks(rig: Rig, before: set[str], timeout: float = 30.0) -> None:
    """Wait until nothing beyond ``before`` exists on the rig; fail naming what leaked."""
    deadline = time.monotonic() + timeout
    while True:
        leaked = snapshot(rig) - before
        if not leaked:
            return
        if time.monotonic() > deadline:
            raise AssertionError("left behind on the rig: " + ", ".join(sorted(leaked)))
        time.sleep(0.5)
