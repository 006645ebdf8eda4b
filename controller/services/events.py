"""Events: record status transitions centrally, list and follow the log, enforce retention.

Status transitions are caught in one place, a ``before_flush`` hook on every
session of the ``Database``: whichever service changes an instance's status,
a host's state, a disk's, snapshot's or image's status or an operation's
outcome (agent reports, API actions, the watchdog), the old and new values are
in the ORM's attribute history and one ``Event`` row joins the same
transaction. The cause is whoever is acting: the API request (set by
``controller.audit``) or a background duty (``acting_as``).

The same hook keeps the drift view's ``converged_at`` stamps: a host converged
when its agent applied the current generation, an instance when its status
reached what its desired power asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, event, func, inspect, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import PASSIVE_NO_INITIALIZE, get_history

from controller.db import Database
from controller.models import Disk, Host, Image, Instance, Operation
from controller.models_events import Event
from controller.models_storage import Snapshot, StorageOperation
from controller.services.notify import TOUCHED_KEY
from controller.services.status import is_converged

log = logging.getLogger(__name__)

# model -> (resource type, status attribute, reason attribute or None)
TRACKED: dict[type, tuple[str, str, str | None]] = {
    Instance: ("instance", "status", "status_reason"),
    Host: ("host", "state", None),
    Disk: ("disk", "status", "status_reason"),
    Snapshot: ("snapshot", "status", "status_reason"),
    Image: ("image", "status", "status_reason"),
    Operation: ("operation", "outcome", "message"),
    StorageOperation: ("storage_operation", "outcome", "message"),
}
COUNT_KEY = "miniecs_events_added"


@dataclass
class Actor:
    """Who is acting in the current context (an API request or a background duty)."""

    type: str = "controller"
    id: str = ""
    name: str = ""
    cause: str = ""
    request_id: str = ""
    principal: object = None  # controller.tenancy.Principal of an API caller


_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("miniecs_actor",
                                                                     default=None)


def current_actor() -> Actor:
    return _actor.get() or Actor(cause="controller")


def set_actor(actor: Actor) -> contextvars.Token:
    return _actor.set(actor)


def reset_actor(token: contextvars.Token) -> None:
    _actor.reset(token)


@contextlib.contextmanager
def acting_as(cause: str, actor_type: str = "controller") -> Iterator[None]:
    """Attribute the status transitions made inside to a background duty."""
    token = _actor.set(Actor(type=actor_type, name=cause, cause=cause))
    try:
        yield
    finally:
        _actor.reset(token)


# ---- recording ---------------------------------------------------------------------

def install(db: Database, on_recorded=None) -> None:
    """Hook status-transition recording into every session of ``db``.

    ``on_recorded(kind, n)`` is called after a commit that added ``n`` events
    of ``kind`` (the metrics counter).
    """
    event.listen(db._write, "before_flush", _before_flush)
    if on_recorded is not None:
        def _after_commit(session: Session) -> None:
            counts = session.info.pop(COUNT_KEY, None)
            for kind, n in (counts or {}).items():
                on_recorded(kind, n)
        db.on_commit(_after_commit)


def count_added(session: Session, kind: str, n: int = 1) -> None:
    counts = session.info.setdefault(COUNT_KEY, {})
    counts[kind] = counts.get(kind, 0) + n


def _before_flush(session: Session, _ctx, _instances) -> None:
    now = datetime.now(UTC)
    actor = None
    for obj in list(session.dirty):
        tracked = TRACKED.get(type(obj))
        if tracked is None:
            continue
        rtype, attr, reason_attr = tracked
        state = inspect(obj)
        _stamp_convergence(obj, state, now)
        hist = _history(obj, attr)
        if not hist.added or not hist.deleted or hist.added[0] == hist.deleted[0]:
            continue
        actor = actor or current_actor()
        message = str(getattr(obj, reason_attr) or "") if reason_attr else ""
        session.add(Event(
            kind="status", created_at=now, resource_type=rtype, resource_id=obj.id,
            actor_type=actor.type, actor_id=actor.id, actor_name=actor.name[:128],
            request_id=actor.request_id, old_status=str(hist.deleted[0] or ""),
            new_status=str(hist.added[0] or ""), cause=actor.cause[:256],
            message=message[:2000], project_id=getattr(obj, "project_id", None)))
        count_added(session, "status")


def _history(obj, key: str):
    """The attribute's history without ``state.attrs``: that builds an AttributeState for
    every column of the object, each referring back to its state, a reference cycle per
    flushed row that only the garbage collector frees (most of a busy controller's
    1-s full collections)."""
    return get_history(obj, key, passive=PASSIVE_NO_INITIALIZE)


def _stamp_convergence(obj, state, now: datetime) -> None:
    if isinstance(obj, Host):
        bumped = obj.id in state.session.info.get(TOUCHED_KEY, ())  # generation is stale
        if (_history(obj, "generation_applied").added and not bumped
                and obj.generation_applied >= obj.generation):
            obj.converged_at = now
    elif isinstance(obj, Instance):
        if _history(obj, "status").added and is_converged(
                desired_power=obj.desired_power, deleting=obj.delete_requested_at is not None,
                status=obj.status):
            obj.converged_at = now


# ---- reading -----------------------------------------------------------------------

def list_events(db: Database, *, resource_id: str | None = None,
                resource_type: str | None = None, kind: str | None = None,
                since: datetime | None = None, after: int | None = None,
                newest_first: bool = False, limit: int = 50) -> list[Event]:
    stmt = select(Event)
    if resource_id:
        stmt = stmt.where(Event.resource_id == resource_id)
    if resource_type:
        stmt = stmt.where(Event.resource_type == resource_type)
    if kind:
        stmt = stmt.where(Event.kind == kind)
    if since is not None:
        stmt = stmt.where(Event.created_at >= since)
    if after is not None:
        stmt = stmt.where(Event.id < after if newest_first else Event.id > after)
    stmt = stmt.order_by(Event.id.desc() if newest_first else Event.id).limit(limit)
    with db.read() as session:
        return list(session.scalars(stmt))


def latest_event_id(db: Database) -> int:
    with db.read() as session:
        return session.scalar(select(func.max(Event.id))) or 0


class EventNotifier:
    """Wakes follow long-polls after a commit that added events (this process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def notify(self) -> None:
        with self._lock:
            targets = list(self._waiters)
        for loop, ev in targets:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ev.set)

    def subscribe(self) -> asyncio.Event:
        ev = asyncio.Event()
        with self._lock:
            self._waiters.add((asyncio.get_running_loop(), ev))
        return ev

    def unsubscribe(self, ev: asyncio.Event) -> None:
        with self._lock:
            self._waiters = {w for w in self._waiters if w[1] is not ev}


# ---- retention ---------------------------------------------------------------------

def enforce_retention(db: Database, *, max_age_days: float | None, max_rows: int | None,
                      now: datetime | None = None) -> int:
    """Delete events older than ``max_age_days`` and all but the newest ``max_rows``."""
    now = now or datetime.now(UTC)
    removed = 0
    with db.write() as session:
        if max_age_days:
            cutoff = now - timedelta(days=max_age_days)
            removed += session.execute(delete(Event).where(Event.created_at < cutoff)
                                       .execution_options(synchronize_session=False)).rowcount
        if max_rows:
            keep_from = session.scalar(select(Event.id).order_by(Event.id.desc())
                                       .offset(max_rows - 1).limit(1))
            if keep_from is not None:
                removed += session.execute(delete(Event).where(Event.id < keep_from)
                                           .execution_options(synchronize_session=False)
                                           ).rowcount
    if removed:
        log.info("event retention removed %d event(s)", removed)
    return removed


def purge_deleted_instances(db: Database, *, max_age_days: float | None,
                            now: datetime | None = None) -> int:
    """Remove the rows of instances Deleted more than ``max_age_days`` ago (with their
    NICs and operations, by the foreign keys' cascade; their addresses, disks and capacity
    were released at the delete). Their events stay. Returns how many."""
    if not max_age_days:
        return 0
    cutoff = (now or datetime.now(UTC)) - timedelta(days=max_age_days)
    with db.write() as session:
        purged = session.execute(delete(Instance).where(
            Instance.status == "Deleted", Instance.deleted_at.is_not(None),
            Instance.deleted_at < cutoff).execution_options(synchronize_session=False)).rowcount
    if purged:
        log.info("purged %d instance(s) deleted before %s", purged, cutoff.isoformat())
    return purged


async def retention_loop(db: Database, settings) -> None:
    """The controller's background duty: apply the retention settings periodically."""
    from fastapi.concurrency import run_in_threadpool

    while True:
        try:
            await run_in_threadpool(enforce_retention, db,
                                    max_age_days=settings.event_retention_days,
                                    max_rows=settings.event_retention_max_rows)
            await run_in_threadpool(purge_deleted_instances, db,
                                    max_age_days=settings.deleted_instance_retention_days)
        except Exception:  # noqa: BLE001 - keep going
            log.exception("event retention pass failed")
        await asyncio.sleep(settings.event_retention_interval_s)
