"""Heartbeats written together.

A report identical to the host's last one (what every agent sends every 10 s)
changes nothing but ``hosts.last_heartbeat``. With 500 agents that was 50
write transactions a second, each queued on SQLite's one writer (and on
PostgreSQL each a round trip and a commit), and under load they held creates
back. Here such a heartbeat is remembered in memory and every pending one is
written in one transaction, at most ``interval_s`` later (the controller's
flusher task), and always before the heartbeat watchdog judges a host
(``hosts.mark_stale_hosts_down`` flushes first): a heartbeat can be late by
the interval, never lost for the judgement. A host that is down, or has a
migration (which advances on every report), is not taken here: its report
goes the full way.

A report that differs from the last one applied only in its generations (what
every host of a VPC sends after a peer's create changed its spec) is taken the
same way, with the generations it acknowledges: the host's generation_applied
and generation_seen are written with its heartbeat. Whatever shows them (the
host views, the drift view, the metrics) writes the batch first (``settle``),
so they are never shown older than the last report.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime

from sqlalchemy import bindparam, case, or_, update

from controller.models import Host

log = logging.getLogger(__name__)


class HeartbeatBatch:
    def __init__(self, db) -> None:
        self.db = db
        self._lock = threading.Lock()
        # host id -> (heartbeat time, (generation applied, seen) or None: beat only)
        self._pending: dict[str, tuple[datetime, tuple[int, int] | None]] = {}
        self.flushes = 0

    def add(self, host_id: str, at: datetime | None = None,
            generations: tuple[int, int] | None = None) -> None:
        """A heartbeat of ``host_id`` at ``at``; with ``generations`` (applied, seen) its
        report's acknowledgement too (a later beat alone keeps it: the same report)."""
        with self._lock:
            old = self._pending.get(host_id)
            if generations is None and old is not None:
                generations = old[1]
            self._pending[host_id] = (at or datetime.now(UTC), generations)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write every pending heartbeat in one transaction; the number written."""
        with self._lock:
            items, self._pending = self._pending, {}
        if not items:
            return 0
        hosts = Host.__table__
        # never back in time: a full report may have written a newer beat meanwhile (and
        # with it newer generations, which an older acknowledgement must not overwrite)
        newer = (hosts.c.id == bindparam("host"), hosts.c.state != "down",
                 or_(hosts.c.last_heartbeat.is_(None),
                     hosts.c.last_heartbeat < bindparam("beat")))
        beats = update(hosts).where(*newer).values(last_heartbeat=bindparam("beat"))
        acks = update(hosts).where(*newer).values(
            last_heartbeat=bindparam("beat"), generation_applied=bindparam("applied"),
            generation_seen=bindparam("seen"),
            # converged when it applied the generation it has (as the full path stamps it)
            converged_at=case((hosts.c.generation <= bindparam("applied"), bindparam("beat")),
                              else_=hosts.c.converged_at))
        ordered = sorted(items.items())
        only = [{"host": h, "beat": at} for h, (at, g) in ordered if g is None]
        with_gens = [{"host": h, "beat": at, "applied": g[0], "seen": g[1]}
                     for h, (at, g) in ordered if g is not None]
        try:
            with self.db.write() as session:
                if only:
                    session.connection().execute(beats, only)
                if with_gens:
                    session.connection().execute(acks, with_gens)
        except Exception:
            with self._lock:  # keep them (newer ones win) for the next flush
                for host_id, item in items.items():
                    self._pending.setdefault(host_id, item)
            raise
        self.flushes += 1
        return len(items)


def settle(db) -> None:
    """Write the pending heartbeats and acknowledgements now (before showing a host's
    generations or heartbeat, or judging it)."""
    batch_of(db).flush()  # nothing pending: nothing written


def batch_of(db) -> HeartbeatBatch:
    """The process's batch for ``db`` (one per Database, like the report digests)."""
    batch = db.__dict__.get("heartbeat_batch")
    if batch is None:
        batch = db.__dict__.setdefault("heartbeat_batch", HeartbeatBatch(db))
    return batch


async def flush_loop(db, interval_s: float) -> None:
    """Flush the pending heartbeats every ``interval_s`` (a controller background task)."""
    from fastapi.concurrency import run_in_threadpool

    batch = batch_of(db)
    try:
        while True:
            await asyncio.sleep(interval_s)
            if batch.pending():
                try:
                    await run_in_threadpool(batch.flush)
                except Exception:  # noqa: BLE001 - kept for the next pass
                    log.exception("writing heartbeats failed; retrying")
    finally:
        if batch.pending():  # stopping: what arrived last is not lost
            batch.flush()
