"""Placement: pick a host for an instance and account for it in the same transaction.

A host qualifies when it passes every filter of ``placement.HOST_FILTERS``
(zone, state ready, recent heartbeat, room after overcommit:
``allocated + demand <= capacity * ratio`` for vCPUs, memory and disk with
ratios per host or the region's defaults, deployment-set anti-affinity).
Among those the policy's scorer picks: spread (default) the least loaded,
pack the most loaded that fits; ties broken by name.

Concurrency: candidate host rows are locked ``FOR UPDATE`` (PostgreSQL) in id
order, so two creates never decide on the same stale counters; on SQLite the
write transaction began ``IMMEDIATE``. The counter UPDATE re-checks the room
in its WHERE clause as a final guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Float, bindparam, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from controller.config import Settings
from controller.errors import InsufficientCapacity
from controller.models import Host


@dataclass(frozen=True)
class Demand:
    vcpus: int
    memory_mib: int
    disk_gib: int


@dataclass(frozen=True)
class HostLoad:
    """What the placement decision needs to know about one host."""

    host_id: str
    name: str
    cap_vcpus: float  # capacity * ratio
    cap_memory_mib: float
    cap_disk_gib: float
    used_vcpus: int
    used_memory_mib: int
    used_disk_gib: int

    def fits(self, d: Demand) -> bool:
        return (self.used_vcpus + d.vcpus <= self.cap_vcpus
                and self.used_memory_mib + d.memory_mib <= self.cap_memory_mib
                and self.used_disk_gib + d.disk_gib <= self.cap_disk_gib)

    def load_after(self, d: Demand) -> float:
        return max((self.used_vcpus + d.vcpus) / self.cap_vcpus if self.cap_vcpus else 1.0,
                   (self.used_memory_mib + d.memory_mib) / self.cap_memory_mib
                   if self.cap_memory_mib else 1.0,
                   (self.used_disk_gib + d.disk_gib) / self.cap_disk_gib
                   if self.cap_disk_gib else 1.0)


def effective_ratios(host: Host, settings: Settings) -> tuple[float, float, float]:
    return (host.cpu_overcommit or settings.cpu_overcommit,
            host.memory_overcommit or settings.memory_overcommit,
            host.disk_overcommit or settings.disk_overcommit)


def host_load(host: Host, settings: Settings) -> HostLoad:
    cpu, mem, disk = effective_ratios(host, settings)
    return HostLoad(host.id, host.name, host.capacity_vcpus * cpu,
                    host.capacity_memory_mib * mem, host.capacity_disk_gib * disk,
                    host.allocated_vcpus, host.allocated_memory_mib, host.allocated_disk_gib)


def choose_host(candidates: list[HostLoad], demand: Demand,
                policy: str = "spread") -> HostLoad | None:
    """The candidate with room for ``demand`` the policy prefers (pure; unit-tested).

    spread: the least loaded after placement; pack: the most loaded that fits.
    """
    fitting = [c for c in candidates if c.fits(demand)]
    if not fitting:
        return None
    sign = -1 if policy == "pack" else 1
    return min(fitting, key=lambda c: (sign * c.load_after(demand), c.name, c.host_id))


def is_alive(host: Host, settings: Settings, now: datetime | None = None) -> bool:
    now = now or datetime.now(UTC)
    return (host.last_heartbeat is not None
            and host.last_heartbeat >= now - timedelta(seconds=settings.heartbeat_timeout_s))


def in_maintenance(host: Host) -> bool:
    """Maintenance filter (admin flag): nothing new is placed or migrated onto the host."""
    return bool(host.maintenance) or host.state == "maintenance"


def place_instance(session: Session, settings: Settings, zone_id: str, demand: Demand, *,
                   policy: str | None = None, deployment_set_id: str | None = None,
                   lock_also=None) -> Host:
    """Choose a host in ``zone_id`` and add ``demand`` to its counters (this transaction).

    Raises the error ``placement.no_host_error`` builds (every host's reasons)
    when no host passes the filters. Tries ``placement_fast`` first (a light
    ranked query, only the chosen host locked); the exhaustive path below
    (every zone host loaded and locked) runs when that finds nothing.
    """
    from controller.services import placement  # placement builds on this module
    from controller.services import placement_fast

    request = placement.PlacementRequest(zone_id, demand, policy or settings.placement_policy,
                                         deployment_set_id)
    if request.policy in placement.SCORERS:
        host = placement_fast.try_place(session, settings, request, lock_also)
        if host is not None:
            return host
    decision = placement.decide(session, settings, request, lock=True)
    if decision.chosen is None:
        raise placement.no_host_error(decision)
    host = session.get(Host, decision.chosen.host_id)
    if not claim(session, settings, host, demand):
        raise InsufficientCapacity(f"host {host.name} filled up meanwhile; retry",
                                   "instance_type")
    return host


def claim(session: Session, settings: Settings, host: Host, demand: Demand) -> bool:
    """Add ``demand`` to the host's counters if the committed row still has room (the
    UPDATE's WHERE re-checks it); False when it has not. The counters it returns are set
    on ``host`` as loaded (no second read: the next member of a batch ranks by them)."""
    load = host_load(host, settings)
    row = session.execute(_CLAIM, {
        "host_id": host.id, "vcpus": demand.vcpus, "memory_mib": demand.memory_mib,
        "disk_gib": demand.disk_gib, "cap_vcpus": load.cap_vcpus,
        "cap_memory_mib": load.cap_memory_mib, "cap_disk_gib": load.cap_disk_gib}).first()
    if row is None:
        return False
    for name, value in row._mapping.items():
        set_committed_value(host, name, value)
    return True


# built once (a batch claims once per member)
_WANT = {c: bindparam(c) for c in ("vcpus", "memory_mib", "disk_gib")}
_CLAIM = (
    update(Host)
    .where(Host.id == bindparam("host_id"),
           *(getattr(Host, f"allocated_{c}") + want <= bindparam(f"cap_{c}", type_=Float)
             for c, want in _WANT.items()))
    .values({f"allocated_{c}": getattr(Host, f"allocated_{c}") + want
             for c, want in _WANT.items()})
    .returning(Host.allocated_vcpus, Host.allocated_memory_mib, Host.allocated_disk_gib)
    .execution_options(synchronize_session=False))


def release_instance(session: Session, host_id: str, demand: Demand) -> None:
    """Give an instance's resources back to its host (this transaction)."""
    session.execute(
        update(Host).where(Host.id == host_id)
        .values(allocated_vcpus=Host.allocated_vcpus - demand.vcpus,
                allocated_memory_mib=Host.allocated_memory_mib - demand.memory_mib,
                allocated_disk_gib=Host.allocated_disk_gib - demand.disk_gib)
        .execution_options(synchronize_session=False))
