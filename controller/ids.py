"""ECS-style resource ids and the host-object names derived from them.

Ids are a prefix and 20 random lowercase alphanumerics. Host interface names
(bridges, taps, namespaces, veths) are computed here once, stored with the
resource and carried in the spec, so the agent never derives a name itself.
"""

from __future__ import annotations

import hashlib
import secrets
import string

from agent.spec import (BRIDGE_PREFIX, ROUTER_NS_PREFIX, TAP_PREFIX, UPLINK_VETH_PREFIX,
                        VETH_PREFIX, VXLAN_PREFIX)

ID_ALPHABET = string.ascii_lowercase + string.digits
ID_SUFFIX_LEN = 20
IFNAMSIZ = 15  # the kernel's limit on interface names (16 with the NUL)

PREFIXES = {
    "instance": "i-", "disk": "d-", "image": "m-", "security_group": "sg-", "vpc": "vpc-",
    "vswitch": "vsw-", "nic": "eni-", "key_pair": "kp-", "host": "h-", "operation": "op-",
    "api_token": "tok-", "eip": "eip-", "snapshot": "s-", "snapshot_policy": "sp-",
    "migration": "mig-",
}
PREFIXES["deployment_set"] = "ds-"


def new_id(kind: str) -> str:
    """A fresh id for a resource kind, e.g. ``new_id("instance") -> "i-3k9..."``."""
    prefix = PREFIXES[kind]
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_SUFFIX_LEN))


def id_suffix(resource_id: str) -> str:
    """The random part of an id (after the first ``-``)."""
    return resource_id.split("-", 1)[1]


def bridge_name(vpc_id: str) -> str:
    """The VPC's bridge on every host: ``mbr-`` + 10 chars of the VPC id suffix."""
    return _ifname(BRIDGE_PREFIX + id_suffix(vpc_id)[:10])


def router_ns_name(vpc_id: str) -> str:
    """The VPC's router network namespace on every host."""
    return ROUTER_NS_PREFIX + id_suffix(vpc_id)


def veth_names(vpc_id: str) -> tuple[str, str]:
    """Router veth pair: (bridge side, router-namespace side)."""
    stem = VETH_PREFIX + id_suffix(vpc_id)[:10]
    return _ifname(stem + "b"), _ifname(stem + "r")


def vxlan_name(vpc_id: str) -> str:
    """The VPC's VXLAN device on every host: ``mvx-`` + 10 chars of the VPC id suffix."""
    return _ifname(VXLAN_PREFIX + id_suffix(vpc_id)[:10])


def uplink_veth_names(vpc_id: str) -> tuple[str, str]:
    """Uplink veth pair of the VPC's router: (host side, router-namespace side)."""
    stem = UPLINK_VETH_PREFIX + id_suffix(vpc_id)[:10]
    return _ifname(stem + "h"), _ifname(stem + "r")


def tap_name(nic_id: str) -> str:
    """A NIC's tap device: ``mtap`` + 11 chars of the NIC id suffix."""
    return _ifname(TAP_PREFIX + id_suffix(nic_id)[:11])


def router_mac(vpc_id: str, host_id: str) -> str:
    """A stable, locally administered MAC for the VPC's router port on one host."""
    digest = hashlib.sha256(f"{vpc_id}/{host_id}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def random_mac() -> str:
    """A random MAC in QEMU's ``52:54:00`` range (uniqueness: the caller and a constraint)."""
    return "52:54:00:" + ":".join(f"{secrets.randbelow(256):02x}" for _ in range(3))


def _ifname(name: str) -> str:
    if len(name) > IFNAMSIZ:
        raise ValueError(f"interface name {name!r} longer than {IFNAMSIZ}")
    return name
PREFIXES["user"] = "u-"
