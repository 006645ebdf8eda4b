"""Agent reports: heartbeat, observed instance state, one-shot operation outcomes.

The report is reality on the host; statuses are derived from it (see
``status.derive_status``). An instance whose delete was asked becomes Deleted,
and its IP, MAC, disks and host capacity are released, once the host has seen
a spec without it (``generation_seen >= delete_generation``) and no longer
reports it: from then on the agent will not create it again, and it is gone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime

from sqlalchemy import bindparam, exists, select, update
from sqlalchemy.orm import Session

from agent import spec
from controller.config import Settings
from controller.db import Database
from controller.errors import Forbidden
from controller.models import Host, Instance, Operation
from controller.services import heartbeats, scheduler
from controller.services.disks import apply_disk_reports, release_instance_disks
from controller.services.migration_compile import active_involving, migrating_instance_ids
from controller.services.migrations import apply_migration_report
from controller.services.notify import bump_generation
from controller.services.status import derive_status

log = logging.getLogger(__name__)


def apply_report(db: Database, host_id: str, report: spec.HostReport,
                 settings: Settings | None = None) -> None:
    if report.host_id != host_id:
        raise Forbidden("Forbidden.HostMismatch",
                        "a host token may only report for its own host", "host_id")
    digest = hashlib.sha256(report.model_dump_json().encode()).hexdigest()
    # the same report but for its generations: what a peer whose spec changed only
    # in its overlay (FDB) or firewall sends after applying it
    body = hashlib.sha256(report.model_dump_json(
        exclude={"generation_applied", "generation_seen"}).encode()).hexdigest()
    last_applied = db.__dict__.setdefault("report_digests", {})
    last = last_applied.get(host_id)
    if last is not None and last[1] == body:
        # the same report (a heartbeat), or the same but for the generations it
        # acknowledges (a peer's change reached the host's overlay or firewall)
        acked = None if last[0] == digest else (report.generation_applied,
                                                 report.generation_seen)
        if _batched(db, host_id, settings, acked):
            last_applied[host_id] = (digest, body)
            return
    last_applied.pop(host_id, None)
    _apply_full(db, host_id, report, settings or Settings())
    last_applied[host_id] = (digest, body)


# ``report_digests``: the digest of the last report applied in full, per host, for
# this Database (process). An identical report (a heartbeat: same generations,
# instances, operations, errors, disks) would change nothing but the heartbeat
# time, so it costs one UPDATE instead of loading and re-deriving every instance.


# What ``_batched`` decides on, in one statement built once (three queries, each built
# per call, were most of a heartbeat's cost)
_HOST = bindparam("host_id")
_BEAT = select(
    Host.state, Host.last_heartbeat,
    exists().where(active_involving(_HOST)).label("migrating"),
    exists().where(Instance.host_id == _HOST, Instance.deleted_at.is_(None),
                   Instance.delete_requested_at.is_not(None)).label("deleting"),
).where(Host.id == _HOST)


def _batched(db: Database, host_id: str, settings: Settings | None,
             generations: tuple[int, int] | None = None) -> bool:
    """Take a report that differs from the last one applied in full at most in its
    ``generations`` (applied, seen; None: not even those) as a heartbeat, added to the
    heartbeat batch (``heartbeats``), unless the host is down (it comes back through the
    full path, its transition recorded), has a migration (which advances on every
    report) or, with generations, an instance being deleted (the full path finalises it
    once ``generation_seen`` passes its delete); then False. Written at once when the
    stored heartbeat is already half a timeout old (placement and the watchdog must not
    see a host that just beat as silent).

    The instances' observed state is the same as last applied, so deriving their statuses
    again would change nothing but ``observed_at``. Acknowledgements were a write
    transaction each, ~19 per single create (every peer of its VPC)."""
    now = datetime.now(UTC)
    with db.read() as session:
        row = session.execute(_BEAT, {"host_id": host_id}).first()
    if row is None or row.state == "down":
        return False  # a down host comes back through the full path (its transition recorded)
    if row.migrating:
        return False  # a migration advances (or times out) on every report
    if generations is not None and row.deleting:
        return False  # its delete is finalised by the full path
    batch = heartbeats.batch_of(db)
    batch.add(host_id, now, generations)
    half = (settings or Settings()).heartbeat_timeout_s / 2
    if row.last_heartbeat is None or (now - row.last_heartbeat).total_seconds() > half:
        batch.flush()
    return True


def _apply_full(db: Database, host_id: str, report: spec.HostReport,
                settings: Settings) -> None:
    with db.write() as session:
        # Host row first (lock order: host, then instances).
        host = session.get(Host, host_id, with_for_update=True)
        now = datetime.now(UTC)
        host.last_heartbeat = now
        host.generation_applied = report.generation_applied
        host.generation_seen = report.generation_seen
        host.last_errors = json.dumps(report.errors[:50])
        if report.capacity is not None:
            host.capacity_vcpus = report.capacity.vcpus
            host.capacity_memory_mib = report.capacity.memory_mib
            host.capacity_disk_gib = report.capacity.disk_gib
        if host.state == "down":
            host.state = "ready"
        _apply_operations(session, host, report.operations, now)
        _apply_instances(session, host, report, now)
        apply_disk_reports(session, host, report, now)
        apply_migration_report(session, settings, host, report)
    if report.rule_hits is not None:
        from controller.services.security_group_rules import HITS
        HITS.record(host_id, report.rule_hits)


def _apply_operations(session: Session, host: Host, results: list[spec.OperationResult],
                      now: datetime) -> None:
    finished = False
    for result in results:
        op = session.get(Operation, result.id)
        if op is None or op.host_id != host.id:
            log.warning("host %s reported unknown operation %s", host.id, result.id)
            continue
        if op.outcome != "pending":
            continue
        op.outcome = "succeeded" if result.ok else "failed"
        op.message = result.message[:4000]
        op.finished_at = now
        finished = True
    if finished:  # the operation leaves the spec
        bump_generation(session, host.id)


def _apply_instances(session: Session, host: Host, report: spec.HostReport,
                     now: datetime) -> None:
    observed = {o.id: o for o in report.instances}
    # the disks and NICs only of an instance whose delete is finalised (loaded then)
    instances = session.scalars(_LOCKED_INSTANCES, {"host_id": host.id})
    known = set()
    seen_ids = []
    moving = migrating_instance_ids(session, host.id)
    for inst in instances:
        known.add(inst.id)
        seen = observed.get(inst.id)
        if inst.id in moving:
            continue  # held still or half-copied while it moves: not its status
        if inst.delete_requested_at is not None:
            if seen is None and report.generation_seen >= (inst.delete_generation or 0):
                finalise_delete(session, inst, now)
                continue
        if seen is None:
            continue  # not (yet) realised: keep the status it has
        seen_ids.append(inst.id)
        inst.observed_power = seen.power
        inst.reconcile_retries = seen.retries
        inst.domain_uuid = seen.domain_uuid or inst.domain_uuid
        guest_stop = _guest_stopped(session, host, inst, seen)
        derived = derive_status(desired_power=inst.desired_power,
                                deleting=inst.delete_requested_at is not None,
                                observed_power=seen.power, error=seen.error,
                                retryable=seen.retryable)
        kept = (inst.status_reason == GUEST_STOP_REASON and derived.status == inst.status
                and not derived.reason)  # why it is Stopped, until its status changes
        inst.status, inst.status_reason = derived.status, derived.reason[:4000]
        if guest_stop or kept:  # the transition's event carries it too
            inst.status_reason = GUEST_STOP_REASON
    if seen_ids:
        # one UPDATE for all: the instances whose observation is the same as before are
        # not rewritten whole (their other columns unchanged, the ORM writes nothing)
        session.execute(update(Instance).where(Instance.id.in_(seen_ids))
                        .values(observed_at=now).execution_options(synchronize_session=False))
    strangers = set(observed) - known - moving
    if strangers:
        log.warning("host %s reported instances it does not own: %s", host.id,
                    ", ".join(sorted(strangers)[:10]))


GUEST_STOP_REASON = "the guest OS powered itself off; `instance start` starts it again"


def _guest_stopped(session: Session, host: Host, inst: Instance,
                   seen: spec.InstanceObserved) -> bool:
    """A guest that powered itself off while it should run is Stopped, as ECS shows it
    (and Nova): its desired power becomes stopped, so the agent, which holds it stopped
    meanwhile, is told the stop is taken note of; a start is an ordinary start."""
    if seen.stopped_by_guest is None or seen.stopped_by_guest != inst.power_serial \
            or inst.desired_power != "running" or seen.power != "stopped":
        return False  # not the start it ended (a start since), or not stopped
    inst.desired_power, inst.force_stop = "stopped", False
    bump_generation(session, host.id)
    log.info("instance %s on host %s: its guest powered itself off; desired power stopped",
             inst.id, host.id)
    return True


_LOCKED_INSTANCES = select(Instance).where(
    Instance.host_id == bindparam("host_id"), Instance.deleted_at.is_(None)).with_for_update()


def finalise_delete(session: Session, inst: Instance, now: datetime) -> None:
    """Release everything the instance held: NICs (IP, MAC), disks, host capacity."""
    disk_gib = release_instance_disks(session, inst)  # data disks may outlive it
    scheduler.release_instance(session, inst.host_id,
                               scheduler.Demand(inst.vcpus, inst.memory_mib, disk_gib))
    inst.nics.clear()
    inst.status, inst.status_reason = "Deleted", ""
    inst.observed_power = None
    inst.deleted_at = now
    log.info("instance %s deleted on host %s", inst.id, inst.host_id)
