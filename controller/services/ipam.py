"""IP and MAC address management for vSwitches.

Reserved in every vSwitch (decided, like ECS but with the gateway first):
the network address, the gateway at network + 1 (the first usable address),
and the last three addresses (the last being the broadcast address). A /24
``10.0.1.0/24`` therefore hands out ``10.0.1.2`` to ``10.0.1.252``.

Allocation happens under the vSwitch row's lock (``FOR UPDATE`` on
PostgreSQL; ``BEGIN IMMEDIATE`` serialises writers on SQLite); the unique
constraints ``(vswitch_id, ip)`` and ``mac`` are the final guard.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Collection

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from controller import ids
from controller.errors import Conflict, InvalidParameter
from controller.models import Nic, VSwitch
from controller.validation import parse_ipv4

IPv4 = ipaddress.IPv4Address
IPv4Net = ipaddress.IPv4Network
_sysrand = random.SystemRandom()


def gateway_address(net: IPv4Net) -> IPv4:
    return net.network_address + 1


def reserved_addresses(net: IPv4Net) -> list[IPv4]:
    """Network address, gateway, and the last three addresses of the block."""
    first = int(net.network_address)
    last = int(net.broadcast_address)
    return [IPv4(first), IPv4(first + 1)] + [IPv4(last - k) for k in (2, 1, 0)]


def usable_bounds(net: IPv4Net) -> tuple[int, int]:
    """First and last assignable address as integers (inclusive)."""
    return int(net.network_address) + 2, int(net.broadcast_address) - 3


def usable_count(net: IPv4Net) -> int:
    lo, hi = usable_bounds(net)
    return max(0, hi - lo + 1)


def check_requested_address(net: IPv4Net, address: IPv4, used: Collection[str],
                            field: str = "private_ip_address") -> None:
    """Refuse an explicit address outside the block, reserved, or taken."""
    if address not in net:
        raise InvalidParameter("InvalidPrivateIpAddress.NotInVSwitch", field,
                               f"{address} is not inside the vSwitch's block {net}")
    if address in reserved_addresses(net):
        raise InvalidParameter("InvalidPrivateIpAddress.Reserved", field,
                               f"{address} is reserved (network, gateway or the last three "
                               f"addresses of {net})")
    if str(address) in used:
        raise Conflict("InvalidPrivateIpAddress.Duplicated",
                       f"{address} is already used in this vSwitch", field)


def pick_free_address(net: IPv4Net, used: Collection[str],
                      rng: random.Random | None = None) -> IPv4 | None:
    """A random free, unreserved address of ``net``, or None when the block is full."""
    rng = rng or _sysrand
    lo, hi = usable_bounds(net)
    if hi < lo:
        return None
    size = hi - lo + 1
    if len(used) < size // 2:
        for _ in range(64):
            candidate = IPv4(rng.randint(lo, hi))
            if str(candidate) not in used:
                return candidate
    free = [n for n in range(lo, hi + 1) if str(IPv4(n)) not in used]
    return IPv4(rng.choice(free)) if free else None


def used_addresses(session: Session, vswitch_id: str) -> set[str]:
    return set(session.scalars(select(Nic.ip).where(Nic.vswitch_id == vswitch_id)))


def used_count(session: Session, vswitch_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Nic)
                          .where(Nic.vswitch_id == vswitch_id)) or 0


def allocate_private_ip(session: Session, vswitch: VSwitch, requested: str | None = None,
                        used: set[str] | None = None) -> str:
    """Reserve an address of ``vswitch`` for a new NIC in this transaction.

    The caller must hold the vSwitch row's lock (see ``instances.create``). ``used``: the
    vSwitch's addresses in use, when the caller keeps them (a batch create's members).
    """
    net = ipaddress.IPv4Network(vswitch.cidr_block)
    if used is None:
        used = used_addresses(session, vswitch.id)
    if requested is not None:
        address = parse_ipv4(requested)
        check_requested_address(net, address, used)
        return str(address)
    address = pick_free_address(net, used)
    if address is None:
        raise Conflict("InvalidVSwitchId.IpNotEnough",
                       f"vSwitch {vswitch.id} ({net}) has no free address", "vswitch_id")
    return str(address)


def allocate_mac(session: Session) -> str:
    """A random ``52:54:00`` MAC not yet in use (the unique constraint guards races)."""
    return allocate_macs(session, 1)[0]


def allocate_macs(session: Session, count: int, attempts: int = 16) -> list[str]:
    """``count`` distinct random MACs not yet in use, checked in one query per attempt."""
    found: set[str] = set()
    for _ in range(attempts):
        drawn = {ids.random_mac() for _ in range(count - len(found))} - found
        used = set(session.scalars(_NICS_OF_MACS, {"macs": sorted(drawn)}))
        found |= drawn - used
        if len(found) >= count:
            return sorted(found)[:count]
    raise Conflict("InternalError.MacExhausted", "could not find a free MAC address")


_NICS_OF_MACS = select(Nic.mac).where(Nic.mac.in_(bindparam("macs", expanding=True)))
