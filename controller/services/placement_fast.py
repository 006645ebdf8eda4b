"""The fast path of placement: rank in one light query, lock only what the create touches.

``placement.decide`` loads every host of the zone as an ORM object, locked
``FOR UPDATE``, and runs every filter on each: right for ``placement
explain`` (it lists every host's reasons) and for the error of a create that
finds no host, but at 500 hosts it was most of a create's cost and it
serialised every create in the zone on PostgreSQL.

Here a create reads plain columns of the zone's hosts that can possibly take
the demand (ready, not in maintenance, a recent heartbeat, room after
overcommit: filtered in SQL, with a small slack so that float rounding never
drops a host Python would take), ordered by their load after the demand in
SQL and cut to the first few dozen (plus the hosts past the cut whose load
may round like the last one's, so the choice is exactly the exhaustive one's),
scores them with the policy's scorer,
and runs the exact filters (``placement.evaluate``) on the best few only. The
chosen host's counters are then added by a guarded UPDATE (it re-checks the
room against the committed row), so no host is ever overcommitted; when a
concurrent create filled the host meanwhile, the next candidate is tried.
If none is left (or none passed), the caller falls back to the exhaustive
path, which also builds the error naming every host's reasons.

Locks (PostgreSQL): the host rows this transaction will update (the chosen
host and the hosts whose spec the create bumps, ``lock_also``) are locked in
one ``SELECT ... ORDER BY id FOR UPDATE``, the same id order every other
multi-host writer uses, so two creates cannot deadlock.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Float, and_, bindparam, case, cast, false, func, or_, select
from sqlalchemy.orm import Session

from controller.config import Settings
from controller.models import Host
from controller.services import placement
from controller.services import scheduler
from controller.services.scheduler import Demand, HostLoad, host_load

# candidates put through the exact filters per create; more are tried only on races
SHORTLIST = 8
# SQL's float arithmetic may round differently from Python's: never drop a host Python
# would take (the exact filters and the guarded UPDATE decide)
SLACK = 0.001
# hosts the ranking query returns (ordered by load in SQL) for the exact scoring in Python
PREFETCH = 4 * SHORTLIST
# loads closer than this may round to the same 4-decimal score
BAND = 2e-4


def _cap(capacity, ratio_column, default_ratio: float):
    return capacity * func.coalesce(func.nullif(ratio_column, 0), default_ratio)


def _room(allocated, capacity, ratio_column, default_ratio: float, want):
    return allocated + want <= _cap(capacity, ratio_column, default_ratio) + SLACK


@functools.lru_cache(maxsize=16)
def _statements(dialect: str, ratios: tuple[float, float, float]) -> dict:
    """The ranking statements, built once per dialect and default ratios (building them
    cost as much as running them); the demand, zone and heartbeat cut-off are bound at
    execution (``_params``)."""
    cpu, mem, disk = ratios
    want = (bindparam("want_vcpus"), bindparam("want_memory"), bindparam("want_disk"))

    def frac(allocated, capacity, ratio_column, default_ratio, more):
        cap = _cap(capacity, ratio_column, default_ratio)
        return case((cap == 0, 1.0), else_=(allocated + more) / cast(cap, Float))
    parts = (frac(Host.allocated_vcpus, Host.capacity_vcpus, Host.cpu_overcommit, cpu, want[0]),
             frac(Host.allocated_memory_mib, Host.capacity_memory_mib, Host.memory_overcommit,
                  mem, want[1]),
             frac(Host.allocated_disk_gib, Host.capacity_disk_gib, Host.disk_overcommit, disk,
                  want[2]))
    load = func.max(*parts) if dialect == "sqlite" else func.greatest(*parts)
    base = (
        select(Host.id, Host.name, Host.capacity_vcpus, Host.capacity_memory_mib,
               Host.capacity_disk_gib, Host.cpu_overcommit, Host.memory_overcommit,
               Host.disk_overcommit, Host.allocated_vcpus, Host.allocated_memory_mib,
               Host.allocated_disk_gib, load.label("load_after"))
        .where(Host.zone_id == bindparam("zone"), Host.state == "ready",
               or_(Host.maintenance.is_(None), Host.maintenance == false()),
               Host.last_heartbeat.is_not(None), Host.last_heartbeat >= bindparam("cutoff"),
               and_(_room(Host.allocated_vcpus, Host.capacity_vcpus, Host.cpu_overcommit, cpu,
                          want[0]),
                    _room(Host.allocated_memory_mib, Host.capacity_memory_mib,
                          Host.memory_overcommit, mem, want[1]),
                    _room(Host.allocated_disk_gib, Host.capacity_disk_gib,
                          Host.disk_overcommit, disk, want[2]))))
    lo, hi = bindparam("band_lo", type_=Float), bindparam("band_hi", type_=Float)
    return {
        "all": base,
        "spread": base.order_by(load, Host.name, Host.id).limit(bindparam("cap")),
        "pack": base.order_by(load.desc(), Host.name, Host.id).limit(bindparam("cap")),
        # past the cut, within the rounding band of its last row (bounds exclusive)
        "band": base.where(load > lo, load < hi),
    }


def shortlist(session: Session, settings: Settings, request: placement.PlacementRequest,
              exclude: set[str], limit: int = SHORTLIST) -> list[str]:
    """Ids of the best ``limit`` hosts that may take the demand, best first (no locks)."""
    d = request.demand
    stmts = _statements(session.get_bind().dialect.name,
                        (settings.cpu_overcommit, settings.memory_overcommit,
                         settings.disk_overcommit))
    params = {"zone": request.zone_id,
              "cutoff": datetime.now(UTC) - timedelta(seconds=settings.heartbeat_timeout_s),
              "want_vcpus": d.vcpus, "want_memory": d.memory_mib, "want_disk": d.disk_gib}
    pack = request.policy == "pack"
    # Only the least (spread) or most (pack) loaded few come back from SQL, in the order
    # (load, name, id). Python ranks by (rounded score, name, id): a host past the cut
    # can only come first when its load rounds like the last row's but differs from it
    # (same load: SQL already put it after by name), so those few are fetched as well.
    cap = PREFETCH + limit + len(exclude)
    rows = session.execute(stmts["pack" if pack else "spread"], {**params, "cap": cap}).all()
    scored = _score(rows, settings, request, exclude)
    if len(rows) == cap:
        last = rows[-1]
        if len(scored) < limit or _key(last, settings, request) <= scored[limit - 1]:
            # the cut reaches into the best ``limit`` (most hosts excluded or not fitting)
            scored = _score(session.execute(stmts["all"], params).all(), settings, request,
                            exclude)
        else:
            at = last.load_after
            band = {"band_lo": at - BAND, "band_hi": at} if pack else \
                {"band_lo": at, "band_hi": at + BAND}
            more = session.execute(stmts["band"], {**params, **band}).all()
            scored = sorted(scored + _score(more, settings, request, exclude))
    return [host_id for _s, _n, host_id in scored[:limit]]


def _key(r, settings: Settings, request: placement.PlacementRequest) -> tuple:
    return (-round(placement.SCORERS[request.policy](_load(r, settings), request.demand), 4),
            r.name, r.id)


def _score(rows, settings: Settings, request: placement.PlacementRequest,
           exclude: set[str]) -> list[tuple[float, str, str]]:
    """(negated rounded score, name, id) of the rows that fit, best first."""
    d = request.demand
    scorer = placement.SCORERS[request.policy]
    scored = []
    for r in rows:
        if r.id in exclude:
            continue
        load = _load(r, settings)
        if load.fits(d):
            scored.append((-round(scorer(load, d), 4), r.name, r.id))
    scored.sort()
    return scored


def _load(r, settings: Settings) -> HostLoad:
    return HostLoad(r.id, r.name,
                    r.capacity_vcpus * (r.cpu_overcommit or settings.cpu_overcommit),
                    r.capacity_memory_mib * (r.memory_overcommit or settings.memory_overcommit),
                    r.capacity_disk_gib * (r.disk_overcommit or settings.disk_overcommit),
                    r.allocated_vcpus, r.allocated_memory_mib, r.allocated_disk_gib)


def try_place(session: Session, settings: Settings, request: placement.PlacementRequest,
              lock_also: Callable[[], list[str]] | None = None) -> Host | None:
    """Place on the best host that passes every filter, or None (take the exhaustive path).

    ``lock_also``: the ids of the other hosts this transaction will update (asked
    only on PostgreSQL, where they are locked together with the chosen host)."""
    members = placement.set_members(session, request.deployment_set_id, lock=True)
    tried: set[str] = set(members)  # anti-affinity: never a host with a member already
    for _round in range(3):
        ids = shortlist(session, settings, request, tried)
        if not ids:
            return None
        hosts = list(session.scalars(select(Host).where(Host.id.in_(ids))))
        ctx = placement.PlacementContext(request, settings, datetime.now(UTC), members)
        decision = placement.evaluate(
            [placement.Candidate(h, host_load(h, settings)) for h in hosts], ctx)
        for verdict in decision.verdicts:
            tried.add(verdict.host_id)
            if not verdict.eligible:
                continue
            host = _claim(session, settings, verdict.host_id, request.demand, lock_also,
                          request.zone_id)
            if host is not None:
                return host
    return None


def _claim(session: Session, settings: Settings, host_id: str, d: Demand,
           lock_also, zone_id: str) -> Host | None:
    """Add ``d`` to the host's counters if it still has room (locks first, in id order,
    unless this transaction holds the zone's host rows already: ``hold_zone``)."""
    # SQLite: the one writer is this transaction
    if session.get_bind().dialect.name != "sqlite" and not zone_held(session, zone_id):
        others = lock_also() if lock_also is not None else []
        list(session.execute(select(Host.id).where(Host.id.in_(sorted({host_id, *others})))
                             .order_by(Host.id).with_for_update()))
    host = session.get(Host, host_id)
    return host if scheduler.claim(session, settings, host, d) else None


_HELD_ZONE = "miniecs_held_zone"


def hold_zone(session: Session, zone_id: str) -> None:
    """Lock every host row of ``zone_id``, in id order, for a transaction that places
    several instances there (a batch create on PostgreSQL: one member's hosts locked after
    another's were no global order, and two batches deadlocked); its claims in the zone then
    lock nothing more."""
    list(session.execute(select(Host.id).where(Host.zone_id == zone_id)
                         .order_by(Host.id).with_for_update()))
    session.info[_HELD_ZONE] = zone_id


def zone_held(session: Session, zone_id: str) -> bool:
    """True when this transaction holds every host row of ``zone_id`` (``hold_zone``)."""
    return session.info.get(_HELD_ZONE) == zone_id
