"""IPAM: reserved addresses, random allocation, explicit requests, MACs."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.errors import Conflict, InvalidParameter
from controller.services import ipam

NET24 = ipaddress.IPv4Network("10.0.1.0/24")


def test_reserved_are_network_gateway_and_last_three():
    assert [str(a) for a in ipam.reserved_addresses(NET24)] == [
        "10.0.1.0", "10.0.1.1", "10.0.1.253", "10.0.1.254", "10.0.1.255"]
    assert str(ipam.gateway_address(NET24)) == "10.0.1.1"
    assert ipam.usable_count(NET24) == 251
    assert ipam.usable_count(ipaddress.IPv4Network("10.0.0.0/29")) == 3


def test_requested_address_checks():
    used = {"10.0.1.7"}
    ipam.check_requested_address(NET24, ipaddress.IPv4Address("10.0.1.2"), used)
    for reserved in ("10.0.1.0", "10.0.1.1", "10.0.1.253", "10.0.1.255"):
        with pytest.raises(InvalidParameter) as exc:
            ipam.check_requested_address(NET24, ipaddress.IPv4Address(reserved), used)
        assert exc.value.code == "InvalidPrivateIpAddress.Reserved"
    with pytest.raises(Conflict) as exc:
        ipam.check_requested_address(NET24, ipaddress.IPv4Address("10.0.1.7"), used)
    assert exc.value.code == "InvalidPrivateIpAddress.Duplicated"
    with pytest.raises(InvalidParameter) as exc:
        ipam.check_requested_address(NET24, ipaddress.IPv4Address("10.0.2.7"), used)
    assert exc.value.code == "InvalidPrivateIpAddress.NotInVSwitch"


def test_small_block_fills_up_exactly():
    net = ipaddress.IPv4Network("192.168.0.0/29")
    used: set[str] = set()
    rng = random.Random(1)
    while (address := ipam.pick_free_address(net, used, rng)) is not None:
        used.add(str(address))
    assert used == {"192.168.0.2", "192.168.0.3", "192.168.0.4"}


@settings(max_examples=150, deadline=None)
@given(prefix=st.integers(24, 29),
       ops=st.lists(st.tuples(st.booleans(), st.integers(0, 10_000)), max_size=300),
       seed=st.integers(0, 2**32))
def test_random_allocate_free_never_duplicates_or_reserves(prefix, ops, seed):
    """Any interleaving of allocations and frees hands out each address at most once at a
    time, never a reserved one, and fails only when the block is really full."""
    net = ipaddress.IPv4Network(f"10.9.0.0/{prefix}")
    reserved = {str(a) for a in ipam.reserved_addresses(net)}
    rng = random.Random(seed)
    live: list[str] = []
    for allocate, pick in ops:
        if allocate or not live:
            address = ipam.pick_free_address(net, set(live), rng)
            if address is None:
                assert len(live) == ipam.usable_count(net)
                continue
            assert str(address) not in live
            assert str(address) not in reserved
            assert address in net
            live.append(str(address))
        else:
            live.pop(pick % len(live))
    assert len(set(live)) == len(live)


def test_random_mac_is_qemu_range_and_varies():
    from controller import ids
    macs = {ids.random_mac() for _ in range(200)}
    assert all(m.startswith("52:54:00:") and len(m) == 17 for m in macs)
    assert len(macs) > 190
