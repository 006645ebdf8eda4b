"""Migrations: move an instance to another host — live when Running, cold when Stopped.

Phases (``Migration.state``), each advanced by an agent report (docs/agent-api.md):

live
    ``freezing``: the source's spec carries the migration (role ``source``): its
    agent leaves the domain alone from then on, never starting it again. The
    target's spec already holds the instance with ``run=False``, so it prepares
    (image, disks, seed, taps, firewall) meanwhile. When the source reports a
    pass over that spec (``generation_seen >= freeze_generation``) →
    ``migrating``: ``run=True``, the target agent pulls the domain with libvirt
    (peer to peer, storage copied). Its outcome → ``completed`` (the instance,
    its disks and its capacity flip to the target; every host of its VPCs gets a
    new spec, so FDB entries, security groups and EIP DNAT follow) or ``failed``
    (the target drops its copy; the source resumes normal care).
cold
    ``exporting``: the source uploads each disk file (with its internal
    snapshots) to the controller's store, sha256 checked on arrival →
    ``importing``: the target downloads them into staging and checks the sha256
    → ``completed`` (flip, snapshots follow the disks) or ``failed``.

cancel (``cancel_migration``, before the switch-over)
    ``freezing``, ``exporting``, ``importing``: nothing irreversible has run,
    so it ends at once → ``cancelled`` (as a failure does: the target's copy is
    removed, its reservation released, the source resumes normal care; a
    transfer still running stops when its agent sees the migration gone).
    ``migrating`` → ``cancelling``: the target's spec says ``cancel``; its agent
    aborts the libvirt job and reports failure → ``cancelled`` — or success,
    when the switch-over came first → ``completed``.

The target's capacity is reserved when the migration is accepted and the
source's released at completion, so the instance counts on both hosts while it
moves. An instance is never in two hosts' specs as a domain to run: the target
runs it only through the migration, the source never restarts it.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from agent import spec
from controller import ids
from controller.config import Settings
from controller.db import Database
from controller.errors import Conflict, InsufficientCapacity, InvalidParameter, NotFound
from controller.models import Disk, Host, Instance, Nic
from controller.models_migration import ACTIVE_STATES, Migration
from controller.models_storage import Snapshot, StorageOperation
from controller.schemas import migrations as schema
from controller.services import placement, scheduler
from controller.services.common import get_or_404, paginate
from controller.services.instances import load_instance
from controller.services.migration_compile import active_on_host as _active
from controller.services.migration_compile import upload_url  # noqa: F401
from controller.services.notify import bump_generation, bump_generations
from controller.tenancy import host_ref

log = logging.getLogger(__name__)

FINAL_STATES = ("completed", "failed", "cancelled")
CANCEL_AT_ONCE = ("freezing", "exporting", "importing")
STALLABLE = ("freezing", "exporting", "importing")


# ---- views -------------------------------------------------------------------------

def to_view(m: Migration) -> schema.Migration:
    return schema.Migration(
        id=m.id, instance_id=m.instance_id, kind=m.kind,
        source_host_id=host_ref(m.source_host_id), target_host_id=host_ref(m.target_host_id),
        state=m.state, is_final=m.state in FINAL_STATES, message=m.message,
        drain_host_id=host_ref(m.drain_host_id), duration_s=m.duration_s,
        created_at=m.created_at, finished_at=m.finished_at)


def get_migration(db: Database, migration_id: str) -> schema.Migration:
    with db.read() as session:
        return to_view(get_or_404(session, Migration, migration_id,
                                  "InvalidMigrationId.NotFound", "migration_id"))


def list_migrations(db: Database, max_results: int, next_token: str | None,
                    instance_id: str | None = None, host_id: str | None = None
                    ) -> schema.MigrationList:
    stmt = select(Migration)
    if instance_id:
        stmt = stmt.where(Migration.instance_id == instance_id)
    if host_id:
        stmt = stmt.where(or_(Migration.source_host_id == host_id,
                              Migration.target_host_id == host_id))
    with db.read() as session:
        rows, token = paginate(session, stmt, Migration, max_results, next_token)
        return schema.MigrationList(items=[to_view(m) for m in rows], next_token=token)


def active_migration(session: Session, instance_id: str) -> Migration | None:
    return session.scalar(select(Migration).where(Migration.instance_id == instance_id,
                                                  Migration.state.in_(ACTIVE_STATES)))


# ---- accepting a migration -----------------------------------------------------------

def instance_demand(inst: Instance) -> scheduler.Demand:
    """What the instance holds on its host: its vCPUs, memory and every disk's GiB."""
    return scheduler.Demand(inst.vcpus, inst.memory_mib, sum(d.size_gib for d in inst.disks))


def _reserved(m: Migration) -> scheduler.Demand:
    return scheduler.Demand(m.vcpus, m.memory_mib, m.disk_gib)


def _kind_of(session: Session, inst: Instance) -> str:
    if inst.delete_requested_at is not None or inst.deleted_at is not None:
        raise Conflict("IncorrectInstanceStatus", f"instance {inst.id} is {inst.status}",
                       "instance_id")
    if active_migration(session, inst.id) is not None:
        raise Conflict("IncorrectInstanceStatus.Migrating",
                       f"instance {inst.id} is already migrating", "instance_id")
    if inst.status == "Running" and inst.desired_power == "running":
        kind = "live"
    elif inst.status == "Stopped" and inst.desired_power == "stopped":
        kind = "cold"
    else:
        raise Conflict("IncorrectInstanceStatus",
                       f"instance {inst.id} is {inst.status}; only a Running instance migrates "
                       "live and a Stopped one cold", "instance_id")
    disk_ids = [d.id for d in inst.disks]
    if session.scalar(select(StorageOperation.id).where(
            StorageOperation.disk_id.in_(disk_ids), StorageOperation.outcome == "pending")):
        raise Conflict("IncorrectDiskStatus.OperationPending",
                       f"a disk of instance {inst.id} has a rollback or export pending",
                       "instance_id")
    if kind == "live" and session.scalar(select(Snapshot.id).where(
            Snapshot.disk_id.in_(disk_ids),
            Snapshot.status.in_(("progressing", "accomplished")))):
        # Internal qcow2 snapshots are not carried by the NBD storage copy of a live
        # migration (docs/decisions.md): refuse rather than lose them.
        raise Conflict("OperationDenied.DiskHasSnapshots",
                       f"a disk of instance {inst.id} has snapshots, which a live migration "
                       "cannot carry; stop the instance and migrate it cold", "instance_id")
    if any(d.status not in ("In_use",) for d in inst.disks):
        raise Conflict("IncorrectDiskStatus",
                       f"a disk of instance {inst.id} is attaching or detaching", "instance_id")
    return kind


def _check_target(host: Host, source: Host, settings: Settings) -> None:
    if host.id == source.id:
        raise InvalidParameter("InvalidHostId.SameAsSource", "host_id",
                               f"the instance already runs on host {host.name}")
    if host.zone_id != source.zone_id:
        raise InvalidParameter("InvalidHostId.ZoneMismatch", "host_id",
                               f"host {host.name} is in zone {host.zone_id}, the instance in "
                               f"{source.zone_id}")
    if scheduler.in_maintenance(host):
        raise Conflict("IncorrectHostStatus.Maintenance",
                       f"host {host.name} is in maintenance", "host_id")
    if host.state != "ready" or not scheduler.is_alive(host, settings):
        raise Conflict("IncorrectHostStatus.Down",
                       f"host {host.name} is down (no recent heartbeat)", "host_id")


def reserve(session: Session, settings: Settings, host: Host, demand: scheduler.Demand) -> None:
    load = scheduler.host_load(host, settings)
    result = session.execute(
        update(Host)
        .where(Host.id == host.id,
               Host.allocated_vcpus + demand.vcpus <= load.cap_vcpus,
               Host.allocated_memory_mib + demand.memory_mib <= load.cap_memory_mib,
               Host.allocated_disk_gib + demand.disk_gib <= load.cap_disk_gib)
        .values(allocated_vcpus=Host.allocated_vcpus + demand.vcpus,
                allocated_memory_mib=Host.allocated_memory_mib + demand.memory_mib,
                allocated_disk_gib=Host.allocated_disk_gib + demand.disk_gib)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise InsufficientCapacity(
            f"host {host.name} has no room for {demand.vcpus} vCPU, {demand.memory_mib} MiB "
            f"memory and {demand.disk_gib} GiB disk", "host_id")


def choose_target(session: Session, settings: Settings, source: Host,
                  demand: scheduler.Demand, exclude: set[str] = frozenset()) -> Host:
    hosts = [h for h in session.scalars(select(Host).where(
        Host.zone_id == source.zone_id, Host.state == "ready", Host.id != source.id)
        .order_by(Host.id).with_for_update())
        if scheduler.is_alive(h, settings) and not scheduler.in_maintenance(h)
        and h.id not in exclude]
    chosen = scheduler.choose_host([scheduler.host_load(h, settings) for h in hosts], demand)
    if chosen is None:
        raise InsufficientCapacity(
            f"no other ready host in zone {source.zone_id} has room for {demand.vcpus} vCPU, "
            f"{demand.memory_mib} MiB memory and {demand.disk_gib} GiB disk", "host_id")
    return session.get(Host, chosen.host_id)


def plan_migration(session: Session, settings: Settings, instance_id: str,
                   target_host_id: str | None, drain_host_id: str | None = None) -> Migration:
    """Check, reserve the target, record the migration and bump both hosts (this transaction)."""
    inst = load_instance(session, instance_id)
    kind = _kind_of(session, inst)
    source = session.get(Host, inst.host_id)
    demand = instance_demand(inst)
    # strict anti-affinity holds through moves too: no target already holding a member of
    # the instance's deployment set (the set row is locked before any host row, as in create)
    taken = {host: member for host, member in placement.set_members(
        session, inst.deployment_set_id, lock=True).items() if member != inst.id}
    if target_host_id:
        target = get_or_404(session, Host, target_host_id, "InvalidHostId.NotFound", "host_id",
                            for_update=True)
        _check_target(target, source, settings)
        if target.id in taken:
            raise Conflict("DeploymentSet.NoAvailableHost",
                           f"host {target.name} already holds {taken[target.id]} of deployment "
                           f"set {inst.deployment_set_id}", "host_id")
    else:
        target = choose_target(session, settings, source, demand, exclude=set(taken))
    reserve(session, settings, target, demand)
    # host rows before the instance rows (lock order of the whole controller)
    bump_generation(session, source.id)
    bump_generation(session, target.id)
    session.refresh(source)
    m = Migration(id=ids.new_id("migration"), instance_id=inst.id, kind=kind,
                  source_host_id=source.id, target_host_id=target.id,
                  state="freezing" if kind == "live" else "exporting",
                  freeze_generation=source.generation, drain_host_id=drain_host_id,
                  vcpus=demand.vcpus, memory_mib=demand.memory_mib, disk_gib=demand.disk_gib,
                  created_at=datetime.now(UTC))
    session.add(m)
    session.flush()
    log.info("migration %s: %s %s from %s to %s", m.id, kind, inst.id, source.name, target.name)
    return m


def start_migration(db: Database, settings: Settings, instance_id: str,
                    req: schema.MigrationCreate) -> schema.Migration:
    with db.write() as session:
        return to_view(plan_migration(session, settings, instance_id, req.host_id))


# ---- reports -------------------------------------------------------------------------

def apply_migration_report(session: Session, settings: Settings, host: Host,
                           report: spec.HostReport) -> None:
    """Advance this host's migrations from its report (inside the report's transaction)."""
    results = {r.id: r for r in report.migrations}
    now = datetime.now(UTC)
    for m in _active(session, host.id):
        r = results.get(m.id)
        inst = session.get(Instance, m.instance_id)
        if inst is None or inst.delete_requested_at is not None:
            fail_migration(session, settings, m, "the instance was deleted while it moved", now)
            continue
        if r is None and m.state in STALLABLE and \
                (now - m.created_at).total_seconds() > settings.migration_stall_timeout_s:
            # nothing irreversible runs in these phases (the live copy is ``migrating``)
            fail_migration(session, settings, m, f"no progress in phase {m.state} for "
                           f"{settings.migration_stall_timeout_s:.0f}s (is the other host down?)", now)
            continue
        if m.source_host_id == host.id:
            if m.kind == "live" and m.state == "freezing" \
                    and report.generation_seen >= (m.freeze_generation or 0):
                m.state = "migrating"
                bump_generation(session, m.target_host_id)
            elif m.kind == "cold" and m.state == "exporting" and r is not None:
                if not r.ok:
                    fail_migration(session, settings, m,
                                   f"export from the source failed: {r.message}", now)
                elif not _all_uploaded(session, m):
                    fail_migration(session, settings, m, "the source finished without "
                                   "uploading every disk", now)
                else:
                    m.state = "importing"
                    bump_generation(session, m.target_host_id)
        elif r is not None and m.state in ("migrating", "importing"):
            if r.ok:
                _complete(session, settings, m, r.message, now)
            else:
                fail_migration(session, settings, m, r.message, now)
        elif r is not None and m.state == "cancelling":
            if r.ok:  # the switch-over came before the abort: it moved
                _complete(session, settings, m, f"the cancel came too late: {r.message}", now)
            else:
                _end(session, settings, m, "cancelled", r.message, now)


def _all_uploaded(session: Session, m: Migration) -> bool:
    inst = session.get(Instance, m.instance_id)
    got = json.loads(m.disks or "{}")
    return inst is not None and all(d.id in got for d in inst.disks)


def vpc_ids_of(session: Session, instance_id: str) -> list[str]:
    from controller.models import VSwitch
    return sorted(set(session.scalars(select(VSwitch.vpc_id).join(Nic, Nic.vswitch_id == VSwitch.id)
                                      .where(Nic.instance_id == instance_id))))


def _complete(session: Session, settings: Settings, m: Migration, message: str,
              now: datetime) -> None:
    from controller.services.specs import bump_hosts_of_vpc
    inst = load_instance(session, m.instance_id)
    bump_generation(session, m.source_host_id)
    bump_generation(session, m.target_host_id)
    scheduler.release_instance(session, m.source_host_id, _reserved(m))
    inst.host_id = m.target_host_id
    moved = [d.id for d in inst.disks]
    for d in inst.disks:
        if d.host_id is not None:
            d.host_id = m.target_host_id
    if m.kind == "cold":  # internal snapshots travelled inside the files
        session.execute(update(Snapshot).where(Snapshot.disk_id.in_(moved),
                                               Snapshot.host_id == m.source_host_id)
                        .values(host_id=m.target_host_id)
                        .execution_options(synchronize_session=False))
    m.state, m.message, m.finished_at = "completed", message[:4000], now
    m.duration_s = round((now - m.created_at).total_seconds(), 3)
    session.flush()
    for vpc_id in vpc_ids_of(session, inst.id):  # FDB and router neighbours everywhere
        bump_hosts_of_vpc(session, vpc_id)
    _drop_store(settings, m)
    log.info("migration %s completed in %.1fs: %s now on %s", m.id, m.duration_s, inst.id,
             m.target_host_id)


def fail_migration(session: Session, settings: Settings, m: Migration, message: str,
                   now: datetime) -> None:
    _end(session, settings, m, "failed", message, now)


def _end(session: Session, settings: Settings, m: Migration, state: str, message: str,
         now: datetime) -> None:
    """Failed or cancelled: the instance stays on the source, the target's copy goes."""
    bump_generation(session, m.source_host_id)
    bump_generation(session, m.target_host_id)
    scheduler.release_instance(session, m.target_host_id, _reserved(m))
    m.state, m.message, m.finished_at = state, message[:4000], now
    m.duration_s = round((now - m.created_at).total_seconds(), 3)
    _drop_store(settings, m)
    log.warning("migration %s of %s %s: %s", m.id, m.instance_id, state, message)


# ---- cancel ----------------------------------------------------------------------------

def cancel_migration(db: Database, settings: Settings, migration_id: str) -> schema.Migration:
    """Cancel a migration that has not switched over (see the module's docstring)."""
    with db.write() as session:
        m = get_or_404(session, Migration, migration_id, "InvalidMigrationId.NotFound",
                       "migration_id")
        if m.state not in ACTIVE_STATES:
            raise _not_cancellable(m)
        # host rows first (lock order), then the migration row again, locked: a report that
        # advanced it meanwhile is seen
        bump_generations(session, [m.source_host_id, m.target_host_id])
        session.refresh(m, with_for_update=True)
        if m.state == "cancelling":
            return to_view(m)  # asked twice: the first one is under way
        if m.state in CANCEL_AT_ONCE:
            _end(session, settings, m, "cancelled", f"cancelled in phase {m.state}; the "
                 "instance stays on its source host", datetime.now(UTC))
        elif m.state == "migrating":
            m.state, m.message = "cancelling", "cancel requested: aborting the live copy"
            log.info("migration %s: cancel requested while migrating", m.id)
        else:
            raise _not_cancellable(m)
        session.flush()
        return to_view(m)


def _not_cancellable(m: Migration) -> Conflict:
    return Conflict("IncorrectMigrationStatus",
                    f"migration {m.id} is {m.state}; only one that has not switched over "
                    "(freezing, migrating, exporting, importing) can be cancelled",
                    "migration_id")


# ---- cold migration: the disk files in the controller's store ------------------------------

def store_dir(settings: Settings, migration_id: str) -> Path:
    return settings.state_dir / "migrations" / ids_safe(migration_id)


def ids_safe(value: str) -> str:
    from agent.state import safe_id
    try:
        return safe_id(value)
    except ValueError:
        raise NotFound("InvalidMigrationId.NotFound", f"no migration {value!r}",
                       "migration_id") from None


def _drop_store(settings: Settings, m: Migration) -> None:
    shutil.rmtree(store_dir(settings, m.id), ignore_errors=True)


def _cold_disk(session: Session, host_id: str, migration_id: str, disk_id: str,
               role: str) -> Migration:
    m = session.get(Migration, migration_id)
    ok_state = "exporting" if role == "source" else "importing"
    owner = m.source_host_id if m is not None and role == "source" else (
        m.target_host_id if m is not None else None)
    inst = session.get(Instance, m.instance_id) if m is not None else None
    if (m is None or m.kind != "cold" or m.state != ok_state or owner != host_id
            or inst is None or disk_id not in {d.id for d in inst.disks}):
        raise NotFound("InvalidMigrationId.NotFound",
                       f"disk {disk_id!r} of migration {migration_id!r} is not this host's to "
                       f"{'upload' if role == 'source' else 'download'} now", "migration_id")
    return m


def upload_target(db: Database, settings: Settings, host_id: str, migration_id: str,
                  disk_id: str) -> Path:
    """The temporary store file a source's upload goes to; 404 unless it owes that disk."""
    with db.read() as session:
        _cold_disk(session, host_id, migration_id, ids_safe(disk_id), "source")
    d = store_dir(settings, migration_id)
    d.mkdir(parents=True, exist_ok=True)
    return d / f".{disk_id}.upload"


def publish_disk(db: Database, settings: Settings, migration_id: str, disk_id: str, tmp: Path,
                 digest: str, size: int, claimed: str) -> dict:
    """Check the upload's sha256 against the source's claim and record it."""
    final = store_dir(settings, migration_id) / f"{disk_id}.qcow2"
    try:
        if claimed.lower() != digest:
            raise InvalidParameter("InvalidDisk.ChecksumMismatch", "X-Content-SHA256",
                                   f"received data has sha256 {digest}, not {claimed!r}")
        with db.write() as session:
            m = session.get(Migration, migration_id, with_for_update=True)
            if m is None or m.state != "exporting" or not tmp.exists():
                # cancelled (or failed) while it uploaded: its store is gone
                raise Conflict("IncorrectMigrationStatus",
                               f"migration {migration_id} is no longer exporting",
                               "migration_id")
            tmp.replace(final)  # under the row lock: a cancel cannot drop the store between
            got = json.loads(m.disks or "{}")
            got[disk_id] = {"sha256": digest, "size": size}
            m.disks = json.dumps(got, sort_keys=True)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("migration %s: disk %s stored (%d bytes, sha256 %s)", migration_id, disk_id, size,
             digest)
    return {"disk_id": disk_id, "sha256": digest, "size": size}


def download_path(db: Database, settings: Settings, host_id: str, migration_id: str,
                  disk_id: str) -> Path:
    with db.read() as session:
        _cold_disk(session, host_id, migration_id, ids_safe(disk_id), "target")
    path = store_dir(settings, migration_id) / f"{disk_id}.qcow2"
    if not path.is_file():
        raise NotFound("InvalidDiskId.NotFound", f"disk {disk_id} was not uploaded", "disk_id")
    return path


# ---- drain ---------------------------------------------------------------------------------

def drain_host(db: Database, settings: Settings, host_id: str) -> schema.HostDrain:
    """Maintenance on, then a migration for every instance on the host not already moving.

    Running instances go live, Stopped ones cold; each to the scheduler's choice.
    Instances in another status are listed in ``not_moved`` (run the drain again).
    """
    with db.write() as session:
        host = get_or_404(session, Host, host_id, "InvalidHostId.NotFound", "host_id",
                          for_update=True)
        host.maintenance = True
        bump_generation(session, host.id)
    not_moved: dict[str, str] = {}
    for iid in instances_on(db, host_id):
        try:
            with db.write() as session:
                if active_migration(session, iid) is None:
                    plan_migration(session, settings, iid, None, drain_host_id=host_id)
        except (Conflict, InvalidParameter, NotFound) as exc:
            not_moved[iid] = f"{exc.code}: {exc.message}"
    return drain_status(db, host_id, not_moved)


def instances_on(db: Database, host_id: str) -> list[str]:
    """The ids of the instances placed on the host and not Deleted, in id order."""
    with db.read() as session:
        return list(session.scalars(select(Instance.id).where(
            Instance.host_id == host_id, Instance.deleted_at.is_(None)).order_by(Instance.id)))


def drain_status(db: Database, host_id: str, not_moved: dict[str, str] | None = None
                 ) -> schema.HostDrain:
    with db.read() as session:
        host = get_or_404(session, Host, host_id, "InvalidHostId.NotFound", "host_id")
        left = list(session.scalars(select(Instance.id).where(
            Instance.host_id == host_id, Instance.deleted_at.is_(None)).order_by(Instance.id)))
        migs = list(session.scalars(select(Migration).where(Migration.drain_host_id == host_id)
                                    .order_by(Migration.created_at, Migration.id)))
        return schema.HostDrain(host_id=host.id, maintenance=host.maintenance,
                                instances_left=left, migrations=[to_view(m) for m in migs],
                                not_moved=not_moved or {}, done=not left)
