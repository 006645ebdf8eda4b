"""Placement decisions: host filters that say why a host cannot take an instance,
and a scorer per policy that ranks the hosts that can.

Every host is run through every filter of ``HOST_FILTERS``; a filter returns
``None`` (the host passes) or a reason for a human ("not enough memory: ...").
A host with no reasons is a candidate and gets a score from the request's
policy: *spread* prefers the least loaded host (lowest largest utilisation
after placement), *pack* the most loaded one that still fits. The best score
wins, ties broken by host name then id, so decisions are reproducible.

The same ``decide`` serves instance creation (``scheduler.place_instance``,
with row locks), ``placement explain`` and ``--dry-run`` (no locks, nothing
written), so what explain says is what create does. A new rule (a host flag,
an affinity kind) is one more ``HostFilter`` appended to ``HOST_FILTERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import tenancy
from controller.config import Settings
from controller.errors import Conflict, InsufficientCapacity
from controller.models import Host
from controller.services import deployment_sets
from controller.services.scheduler import Demand, HostLoad, effective_ratios, host_load

POLICIES = ("spread", "pack")
MAX_HOSTS_IN_MESSAGE = 10


@dataclass(frozen=True)
class PlacementRequest:
    """What is being placed, and where it may go."""

    zone_id: str
    demand: Demand
    policy: str = "spread"
    deployment_set_id: str | None = None


@dataclass(frozen=True)
class PlacementContext:
    """What the filters may consult besides the host itself."""

    request: PlacementRequest
    settings: Settings
    now: datetime
    # host id -> the instance of the request's deployment set already on it
    set_members: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    host: Host
    load: HostLoad


HostFilter = Callable[[Candidate, PlacementContext], "str | None"]


def zone_filter(c: Candidate, ctx: PlacementContext) -> str | None:
    if c.host.zone_id != ctx.request.zone_id:
        return f"zone mismatch: host is in {c.host.zone_id}, the request is for {ctx.request.zone_id}"
    return None


def state_filter(c: Candidate, ctx: PlacementContext) -> str | None:
    state = c.host.state
    if state == "ready":
        return None
    if state == "down":
        beat = c.host.last_heartbeat.isoformat() if c.host.last_heartbeat else "never"
        return f"host Down: missed heartbeats (last {beat})"
    if state == "maintenance":
        return "host in maintenance: no new placements"
    return f"host state is {state}, not ready"


def maintenance_filter(c: Candidate, ctx: PlacementContext) -> str | None:
    """The operator's maintenance flag (``host maintenance H --on``, drain)."""
    if c.host.maintenance and c.host.state != "maintenance":
        return "host in maintenance: no new placements"
    return None


def heartbeat_filter(c: Candidate, ctx: PlacementContext) -> str | None:
    """A host still marked ready whose agent went silent (the watchdog will mark it Down)."""
    if c.host.state != "ready":
        return None  # state_filter has said why already
    beat = c.host.last_heartbeat
    if beat is None:
        return "no heartbeat yet from its agent"
    silent = (ctx.now - beat).total_seconds()
    if silent > ctx.settings.heartbeat_timeout_s:
        return (f"no heartbeat for {silent:.0f} s "
                f"(timeout {ctx.settings.heartbeat_timeout_s:g} s)")
    return None


def capacity_filter(c: Candidate, ctx: PlacementContext) -> str | None:
    """Room after overcommit, with the figures of every dimension that does not fit."""
    d, load, host = ctx.request.demand, c.load, c.host
    cpu, mem, disk = effective_ratios(host, ctx.settings)
    short = []
    for label, used, want, cap, physical, ratio, unit in (
            ("vCPU", load.used_vcpus, d.vcpus, load.cap_vcpus, host.capacity_vcpus, cpu, ""),
            ("memory", load.used_memory_mib, d.memory_mib, load.cap_memory_mib,
             host.capacity_memory_mib, mem, " MiB"),
            ("disk", load.used_disk_gib, d.disk_gib, load.cap_disk_gib, host.capacity_disk_gib,
             disk, " GiB")):
        if used + want > cap:
            short.append(f"not enough {label}: {used}{unit} allocated + {want}{unit} requested "
                         f"> {cap:g}{unit} ({physical}{unit} x {ratio:g} overcommit)")
    return "; ".join(short) or None


def deployment_set_filter(c: Candidate, ctx: PlacementContext) -> str | None:
    """Strategy Availability: at most one member of a deployment set per host."""
    member = ctx.set_members.get(c.host.id)
    if member is not None:
        return (f"deployment set conflict: {ctx.request.deployment_set_id} already has "
                f"instance {member} on this host")
    return None


# Order is the order reasons are listed in; every filter runs on every host.
HOST_FILTERS: list[tuple[str, HostFilter]] = [
    ("zone", zone_filter),
    ("state", state_filter),
    ("maintenance", maintenance_filter),
    ("heartbeat", heartbeat_filter),
    ("capacity", capacity_filter),
    ("deployment_set", deployment_set_filter),
]


def _spread(load: HostLoad, d: Demand) -> float:
    return 1.0 - load.load_after(d)


def _pack(load: HostLoad, d: Demand) -> float:
    return load.load_after(d)


# Higher is better for every policy.
SCORERS: dict[str, Callable[[HostLoad, Demand], float]] = {"spread": _spread, "pack": _pack}


@dataclass(frozen=True)
class Verdict:
    """One host's outcome: the filters that rejected it, or its score."""

    host_id: str
    host_name: str
    zone_id: str
    state: str
    rejected_by: list[tuple[str, str]]  # (filter name, reason)
    load_after: float | None = None
    score: float | None = None

    @property
    def eligible(self) -> bool:
        return not self.rejected_by


@dataclass(frozen=True)
class Decision:
    request: PlacementRequest
    verdicts: list[Verdict]  # the chosen host first, then the other eligible ones, then the rest
    chosen: Verdict | None


def evaluate(candidates: list[Candidate], ctx: PlacementContext,
             filters: list[tuple[str, HostFilter]] | None = None) -> Decision:
    """Run every filter on every candidate and rank the survivors (pure; unit-tested)."""
    filters = HOST_FILTERS if filters is None else filters
    scorer = SCORERS[ctx.request.policy]
    verdicts = []
    for c in candidates:
        reasons = [(name, reason) for name, check in filters
                   if (reason := check(c, ctx)) is not None]
        load_after = c.load.load_after(ctx.request.demand)
        verdicts.append(Verdict(
            c.host.id, c.host.name, c.host.zone_id, c.host.state, reasons, round(load_after, 4),
            None if reasons else round(scorer(c.load, ctx.request.demand), 4)))
    eligible = sorted((v for v in verdicts if v.eligible),
                      key=lambda v: (-v.score, v.host_name, v.host_id))
    rejected = sorted((v for v in verdicts if not v.eligible), key=lambda v: (v.host_name, v.host_id))
    return Decision(ctx.request, eligible + rejected, eligible[0] if eligible else None)


def decide(session: Session, settings: Settings, request: PlacementRequest, *,
           lock: bool, all_zones: bool = False) -> Decision:
    """Load the hosts (locked in id order when ``lock``) and decide.

    ``all_zones`` lists hosts of other zones too (explain shows them as zone
    mismatches); placement itself only needs, and only locks, the zone's hosts.
    """
    if request.policy not in SCORERS:
        raise ValueError(f"unknown placement policy {request.policy!r}")
    # Lock order: (vSwitch,) deployment set, then host rows in id order.
    members = set_members(session, request.deployment_set_id, lock=lock)
    stmt = select(Host).order_by(Host.id)
    if not all_zones:
        stmt = stmt.where(Host.zone_id == request.zone_id)
    if lock:
        stmt = stmt.with_for_update()
    hosts = list(session.scalars(stmt))
    ctx = PlacementContext(request, settings, datetime.now(UTC), members)
    return evaluate([Candidate(h, host_load(h, settings)) for h in hosts], ctx)


def set_members(session: Session, deployment_set_id: str | None, *,
                lock: bool) -> dict[str, str]:
    """Host id -> member instance of the deployment set (empty without a set).

    With ``lock`` the set's row is locked first, so concurrent creates into one
    set decide one after the other, each seeing the members the previous added.
    """
    if deployment_set_id is None:
        return {}
    deployment_sets.get_set(session, deployment_set_id, for_update=lock)
    return {host: inst for inst, host in deployment_sets.live_members(session, deployment_set_id)}


def no_host_error(decision: Decision) -> Conflict:
    """The error for a decision without a host, with every host's reasons in the message.

    ``DeploymentSet.NoAvailableHost`` when the set's anti-affinity is what is
    left in the way (some host fails on that alone), else ``NoStock``.
    """
    req = decision.request
    shown = decision.verdicts[:MAX_HOSTS_IN_MESSAGE]
    reasons = "; ".join(f"{v.host_name}: {', '.join(r for _, r in v.rejected_by)}"
                        for v in shown) or "the zone has no hosts"
    if len(decision.verdicts) > len(shown):
        reasons += f"; and {len(decision.verdicts) - len(shown)} more (see placement explain)"
    if not tenancy.sees_hosts():  # the hosts' names and loads are the operator's
        reasons = "an admin's placement explain shows each host's reasons"
    only_set = sum(1 for v in decision.verdicts
                   if [n for n, _ in v.rejected_by] == ["deployment_set"])
    if only_set:
        return Conflict(
            "DeploymentSet.NoAvailableHost",
            f"deployment set {req.deployment_set_id} already has a member on each of the "
            f"{only_set} host(s) that could otherwise take this instance ({reasons})",
            "deployment_set_id")
    liveness = {"zone", "state", "maintenance", "heartbeat"}
    if all(any(name in liveness for name, _ in v.rejected_by) for v in decision.verdicts):
        return InsufficientCapacity(
            f"no ready host with a recent heartbeat in zone {req.zone_id} ({reasons})",
            "vswitch_id")
    return InsufficientCapacity(
        f"no host in zone {req.zone_id} has room for {req.demand.vcpus} vCPU, "
        f"{req.demand.memory_mib} MiB memory and {req.demand.disk_gib} GiB disk ({reasons})",
        "instance_type")
