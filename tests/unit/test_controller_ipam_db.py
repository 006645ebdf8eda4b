"""IPAM against a real database: random allocate/free sequences (some asking for a given
address) never hand out a duplicate or reserved address, and refuse exactly when they must."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from controller import ids
from controller.errors import Conflict, InvalidParameter
from controller.models import Host, Instance, InstanceType, Nic, Vpc, VSwitch
from controller.services import ipam
from tests.controller_factories import add_image, default_database, make_settings, open_database


@pytest.fixture(scope="module")
def world():
    with TemporaryDirectory() as tmp, default_database(Path(tmp)) as url:
        path = Path(tmp)
        db, _ = open_database(url)
        image = add_image(db, make_settings(path))
        vpc_id, host_id, inst_id = ids.new_id("vpc"), ids.new_id("host"), ids.new_id("instance")
        with db.write() as s:
            s.add(Vpc(id=vpc_id, name="v", cidr_block="10.0.0.0/8", vni=5000,
                      bridge_name=ids.bridge_name(vpc_id)))
            s.add(Host(id=host_id, name="h", zone_id="zone-a", underlay_address="192.0.2.1",
                       virt_type="qemu", capacity_vcpus=1, capacity_memory_mib=1,
                       capacity_disk_gib=1, token_hash="x"))
            s.flush()
            itype = s.get(InstanceType, "ecs.t1.nano")
            s.add(Instance(id=inst_id, name="i", hostname="i", instance_type_id=itype.id,
                           vcpus=1, memory_mib=256, image_id=image, vpc_id=vpc_id,
                           vswitch_id="vsw-x", zone_id="zone-a", host_id=host_id))
        yield db, vpc_id, inst_id
        db.dispose()


counter = iter(range(1, 10**6))

ops_strategy = st.lists(st.one_of(
    st.tuples(st.just("alloc"), st.none()),
    st.tuples(st.just("alloc"), st.integers(0, 31)),   # ask for network + n
    st.tuples(st.just("free"), st.integers(0, 1000))), max_size=60)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.integers(27, 29), ops=ops_strategy)
def test_allocate_free_sequences(world, prefix, ops):
    db, vpc_id, inst_id = world
    net = ipaddress.IPv4Network(f"10.{next(counter) % 250}.{next(counter) % 250}.0/{prefix}",
                                strict=False)
    vsw_id = ids.new_id("vswitch")
    with db.write() as s:
        s.add(VSwitch(id=vsw_id, name="s", vpc_id=vpc_id, zone_id="zone-a",
                      cidr_block=str(net), gateway_ip=str(net.network_address + 1)))
    reserved = {str(a) for a in ipam.reserved_addresses(net)}
    live: set[str] = set()
    for kind, arg in ops:
        if kind == "free":
            if live:
                victim = sorted(live)[arg % len(live)]
                with db.write() as s:
                    s.execute(delete(Nic).where(Nic.vswitch_id == vsw_id, Nic.ip == victim))
                live.discard(victim)
            continue
        requested = None if arg is None else str(net.network_address + (arg % net.num_addresses))
        try:
            with db.write() as s:
                vsw = s.get(VSwitch, vsw_id)
                ip = ipam.allocate_private_ip(s, vsw, requested)
                nic_id = ids.new_id("nic")
                s.add(Nic(id=nic_id, instance_id=inst_id, vswitch_id=vsw_id, ip=ip,
                          mac=ipam.allocate_mac(s), tap_name=ids.tap_name(nic_id)))
        except InvalidParameter as exc:
            assert requested in reserved and exc.code == "InvalidPrivateIpAddress.Reserved"
            continue
        except Conflict as exc:
            if requested is not None:
                assert requested in live and exc.code == "InvalidPrivateIpAddress.Duplicated"
            else:
                assert len(live) == ipam.usable_count(net)
                assert exc.code == "InvalidVSwitchId.IpNotEnough"
            continue
        assert requested is None or ip == requested
        assert ip not in live and ip not in reserved and ipaddress.IPv4Address(ip) in net
        live.add(ip)
    with db.read() as s:
        stored = list(s.scalars(select(Nic.ip).where(Nic.vswitch_id == vsw_id)))
    assert sorted(stored) == sorted(live)
    assert not set(stored) & reserved
