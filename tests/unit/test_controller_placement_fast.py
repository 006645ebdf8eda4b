"""Placement's fast path (placement_fast): the same choice as the exhaustive path, and a host
filled by a concurrent create between ranking and claiming is skipped, never overcommitted."""

from __future__ import annotations

from sqlalchemy import update

from controller.models import Host, Zone
from controller.services import placement, placement_fast, scheduler
from controller.services.scheduler import Demand
from tests.unit.test_controller_scheduler import _host, db_settings  # noqa: F401 - fixture


def test_fast_path_chooses_what_the_exhaustive_decision_chooses(db_settings):
    db, settings = db_settings
    with db.write() as session:
        session.add(Zone(id="zone-b"))
        for n in range(12):  # loads 0..11 vCPUs of 16 (x4 overcommit: 64)
            _host(session, f"h{n:02d}", vcpus=16, mem=100_000, disk=1000,
                  allocated_vcpus=n * 5 % 12)
        _host(session, "down", vcpus=64, mem=100_000, disk=1000, state="down")
        _host(session, "silent", vcpus=64, mem=100_000, disk=1000, beat=None)
        _host(session, "maint", vcpus=64, mem=100_000, disk=1000, maintenance=True)
        _host(session, "other-zone", zone="zone-b", vcpus=64, mem=100_000, disk=1000)
    for policy in ("spread", "pack"):
        request = placement.PlacementRequest("zone-a", Demand(1, 256, 1), policy)
        with db.read() as session:
            expected = placement.decide(session, settings, request, lock=False).chosen.host_name
            ranked = placement_fast.shortlist(session, settings, request, set())
            names = [session.get(Host, h).name for h in ranked]
        assert names[0] == expected
        assert not {"down", "silent", "maint", "other-zone"} & set(names)
        assert len(names) == placement_fast.SHORTLIST


def test_host_filled_meanwhile_is_skipped_and_counters_stay_exact(db_settings, monkeypatch):
    db, settings = db_settings
    with db.write() as session:
        best = _host(session, "a-best", vcpus=1, mem=4096, disk=10).id  # 4 vCPUs after x4
        other = _host(session, "b-other", vcpus=1, mem=4096, disk=10, allocated_vcpus=2).id
    real_evaluate = placement.evaluate

    def evaluate_then_fill(candidates, ctx, filters=None):
        decision = real_evaluate(candidates, ctx, filters)
        # a concurrent create takes the rest of the best host after the ranking
        session = next(iter(c.host for c in candidates))._sa_instance_state.session
        session.execute(update(Host).where(Host.id == best).values(allocated_vcpus=4)
                        .execution_options(synchronize_session=False))
        return decision

    monkeypatch.setattr(placement, "evaluate", evaluate_then_fill)
    with db.write() as session:
        chosen = scheduler.place_instance(session, settings, "zone-a", Demand(1, 256, 1))
        assert chosen.id == other
    with db.read() as session:
        assert session.get(Host, best).allocated_vcpus == 4  # not 5: no overcommit
        assert session.get(Host, other).allocated_vcpus == 3
