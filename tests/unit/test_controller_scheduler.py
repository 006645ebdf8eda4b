"""Scheduler: capacity with overcommit, zones, liveness, spread."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller import ids
from controller.errors import InsufficientCapacity
from controller.models import Host, Zone
from controller.services import scheduler
from controller.services.scheduler import Demand, HostLoad, choose_host
from tests.controller_factories import default_database, make_settings, open_database


def load(name, cap=(4, 4096, 100), used=(0, 0, 0)) -> HostLoad:
    return HostLoad(name, name, *cap, *used)


def test_choose_least_loaded_that_fits():
    a = load("a", used=(3, 1024, 10))
    b = load("b", used=(1, 1024, 10))
    c = load("c", used=(4, 0, 0))  # no vCPU left
    assert choose_host([a, b, c], Demand(1, 512, 5)).host_id == "b"
    assert choose_host([c], Demand(1, 512, 5)) is None
    assert choose_host([], Demand(1, 1, 1)) is None


@pytest.mark.parametrize("demand,fits", [
    (Demand(4, 4096, 100), True),     # exactly full
    (Demand(5, 1, 1), False), (Demand(1, 4097, 1), False), (Demand(1, 1, 101), False)])
def test_fits_boundaries(demand, fits):
    assert load("a").fits(demand) is fits


def test_spread_fills_hosts_evenly():
    hosts = {n: [0, 0, 0] for n in ("a", "b", "c")}
    for _ in range(9):
        chosen = choose_host([load(n, used=tuple(u)) for n, u in hosts.items()],
                             Demand(1, 256, 1))
        hosts[chosen.host_id][0] += 1
    assert [u[0] for u in hosts.values()] == [3, 3, 3]


@pytest.fixture
def db_settings(tmp_path):
    with default_database(tmp_path) as url:
        db, _ = open_database(url)
        settings = make_settings(tmp_path)
        yield db, settings
        db.dispose()


def _host(session, name, zone="zone-a", vcpus=2, mem=2048, disk=20, state="ready",
          beat=0.0, **extra):
    host = Host(id=ids.new_id("host"), name=name, zone_id=zone, underlay_address="192.0.2.1",
                virt_type="qemu", capacity_vcpus=vcpus, capacity_memory_mib=mem,
                capacity_disk_gib=disk, state=state, token_hash=ids.new_id("host"),
                last_heartbeat=None if beat is None else
                datetime.now(UTC) - timedelta(seconds=beat), **extra)
    session.add(host)
    return host


def test_overcommit_ratios_bound_placements(db_settings):
    db, settings = db_settings  # cpu 4.0: 2 vCPUs take 8 one-vCPU instances
    with db.write() as session:
        _host(session, "h1", vcpus=2, mem=100_000, disk=1000)
    placed = 0
    with pytest.raises(InsufficientCapacity):
        for _ in range(20):
            with db.write() as session:
                scheduler.place_instance(session, settings, "zone-a", Demand(1, 256, 1))
            placed += 1
    assert placed == 8
    with db.read() as session:
        host = session.query(Host).one()
        assert (host.allocated_vcpus, host.allocated_memory_mib, host.allocated_disk_gib) == \
            (8, 8 * 256, 8)


def test_per_host_ratio_overrides_region(db_settings):
    db, settings = db_settings
    with db.write() as session:
        _host(session, "h1", vcpus=2, mem=100_000, disk=1000, cpu_overcommit=1.0)
    for _ in range(2):
        with db.write() as session:
            scheduler.place_instance(session, settings, "zone-a", Demand(1, 1, 1))
    with pytest.raises(InsufficientCapacity), db.write() as session:
        scheduler.place_instance(session, settings, "zone-a", Demand(1, 1, 1))


def test_zone_state_and_heartbeat_filter(db_settings):
    db, settings = db_settings
    with db.write() as session:
        session.add(Zone(id="zone-b"))
        session.flush()
        _host(session, "other-zone", zone="zone-b")
        _host(session, "maint", state="maintenance")
        _host(session, "silent", beat=settings.heartbeat_timeout_s + 5)
        _host(session, "never", beat=None)
    with pytest.raises(InsufficientCapacity) as exc, db.write() as session:
        scheduler.place_instance(session, settings, "zone-a", Demand(1, 1, 1))
    assert exc.value.code == "OperationDenied.NoStock"
    with db.write() as session:
        good = _host(session, "good").id
    with db.write() as session:
        assert scheduler.place_instance(session, settings, "zone-a", Demand(1, 1, 1)).id == good


def test_memory_and_disk_are_not_overcommitted_by_default(db_settings):
    db, settings = db_settings
    with db.write() as session:
        _host(session, "h1", vcpus=64, mem=1024, disk=10)
    with pytest.raises(InsufficientCapacity), db.write() as session:
        scheduler.place_instance(session, settings, "zone-a", Demand(1, 1025, 1))
    with pytest.raises(InsufficientCapacity), db.write() as session:
        scheduler.place_instance(session, settings, "zone-a", Demand(1, 1, 11))
