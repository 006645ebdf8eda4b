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


def test_ranking_query_cut_short_still_finds_the_exact_best(db_settings, monkeypatch):
    """SQL returns only a prefetch of the least (spread) / most (pack) loaded hosts; ties in
    the rounded score past the cut, and names deciding between them, still come out as the
    exhaustive decision's order."""
    db, settings = db_settings
    monkeypatch.setattr(placement_fast, "PREFETCH", 2)
    with db.write() as session:
        # twelve hosts with the same load (a tie across the cut: names decide), reversed
        # names against insertion, and a few distinctly loaded ones
        for n in range(12):
            _host(session, f"t{11 - n:02d}", vcpus=16, mem=100_000, disk=1000, allocated_vcpus=8)
        for n, used in enumerate((1, 3, 30, 60)):
            _host(session, f"u{n}", vcpus=16, mem=100_000, disk=1000, allocated_vcpus=used)
    for policy in ("spread", "pack"):
        request = placement.PlacementRequest("zone-a", Demand(1, 256, 1), policy)
        with db.read() as session:
            decision = placement.decide(session, settings, request, lock=False)
            expected = [v.host_id for v in decision.verdicts if v.eligible][:placement_fast.SHORTLIST]
            assert placement_fast.shortlist(session, settings, request, set()) == expected
            skip = set(expected[:3])
            assert placement_fast.shortlist(session, settings, request, skip) == \
                [v.host_id for v in decision.verdicts if v.eligible and v.host_id not in skip
                 ][:placement_fast.SHORTLIST]


def test_a_rounded_tie_past_the_cut_is_fetched(db_settings, monkeypatch):
    """Loads 0.12341 (host "z") and 0.12344 (host "a") score the same once rounded, so the
    name decides ("a"); SQL, ordering by the unrounded load, returns "z" first. A cut that
    keeps only "z" must notice the tie and fetch the rest."""
    db, settings = db_settings
    monkeypatch.setattr(placement_fast, "PREFETCH", 0)
    with db.write() as session:
        _host(session, "z", vcpus=64, mem=100_000, disk=1000, allocated_memory_mib=12_085)
        _host(session, "a", vcpus=64, mem=100_000, disk=1000, allocated_memory_mib=12_088)
    request = placement.PlacementRequest("zone-a", Demand(1, 256, 1), "spread")
    with db.read() as session:
        expected = placement.decide(session, settings, request, lock=False).chosen.host_name
        best = placement_fast.shortlist(session, settings, request, set(), limit=1)
        assert expected == "a"
        assert [session.get(Host, h).name for h in best] == ["a"]


def test_hosts_past_the_cut_in_the_last_rows_rounding_band_are_fetched(db_settings, monkeypatch):
    """The cut ends at "z" (load 0.123415) past the best two (b0, y); "a" (0.12344) lies past
    the cut but rounds like y and z, and its name puts it before them."""
    db, settings = db_settings
    monkeypatch.setattr(placement_fast, "PREFETCH", 1)
    with db.write() as session:
        for name, used in (("b0", 49_744), ("y", 123_154), ("z", 123_159), ("a", 123_184)):
            _host(session, name, vcpus=64, mem=1_000_000, disk=1000, allocated_memory_mib=used)
    request = placement.PlacementRequest("zone-a", Demand(1, 256, 1), "spread")
    with db.read() as session:
        decision = placement.decide(session, settings, request, lock=False)
        expected = [v.host_name for v in decision.verdicts if v.eligible][:2]
        best = placement_fast.shortlist(session, settings, request, set(), limit=2)
        assert expected == ["b0", "a"]
        assert [session.get(Host, h).name for h in best] == expected
