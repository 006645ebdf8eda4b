"""Wake spec long-polls when a host's generation changes.

Services mark the hosts they bump in ``session.info``; after the commit this
notifier sets the waiting long-polls' events from whatever thread committed.
It is only a shortcut: one shared poller (``poll_generations``) reads the
generations of every waiting host every ``spec_poll_interval_s`` and wakes the
waiters whose ``after`` is older, so a change made by another controller
process (or directly in SQL) is still seen within that interval.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

from sqlalchemy import update
from sqlalchemy.orm import Session

from controller.models import Host

TOUCHED_KEY = "miniecs_touched_hosts"


def bump_generation(session: Session, host_id: str) -> None:
    """Bump the host's spec generation in this transaction (and wake its long-poll on commit).

    The UPDATE also takes the host row's lock on PostgreSQL, so callers that
    change an instance should bump first: locks are always host row, then
    instance rows.
    """
    bump_generations(session, [host_id])


def bump_generations(session: Session, host_ids) -> None:
    """``bump_generation`` for many hosts in one UPDATE (ids in a stable order).

    ``synchronize_session=False``: evaluating the increment against every Host
    in the session cost milliseconds per bump; readers of a generation after a
    bump query it (``select(Host.generation)``), never the stale attribute.
    """
    host_ids = sorted(set(host_ids))
    if not host_ids:
        return
    # anything of the host's may have changed: its own part and every VPC part of its spec
    session.execute(update(Host).where(Host.id.in_(host_ids))
                    .values(generation=Host.generation + 1,
                            local_generation=Host.local_generation + 1)
                    .execution_options(synchronize_session=False))
    session.info.setdefault(TOUCHED_KEY, set()).update(host_ids)


def bump_network(session: Session, vpc_id: str, host_ids) -> None:
    """A change to the VPC's part of host specs only (its ports, gateways, NAT, group
    members, rules and NICs' groups): the VPC's net generation and its hosts' generations.

    The hosts' own parts (instances, disks...) stay cached; a change to those must use
    ``bump_generations`` for the host(s) whose own part changed as well.
    """
    from controller.models import Vpc

    host_ids = sorted(set(host_ids))
    session.execute(update(Vpc).where(Vpc.id == vpc_id)
                    .values(net_generation=Vpc.net_generation + 1)
                    .execution_options(synchronize_session=False))
    if not host_ids:
        return
    session.execute(update(Host).where(Host.id.in_(host_ids))
                    .values(generation=Host.generation + 1)
                    .execution_options(synchronize_session=False))
    session.info.setdefault(TOUCHED_KEY, set()).update(host_ids)


async def poll_generations(db, notifier: "GenerationNotifier", interval_s: float) -> None:
    """Wake long-polls whose host's generation changed behind this process's back.

    One query per interval for every waiting host together, instead of one per
    waiting long-poll (500 agents long-polling cost 1,000 queries/s at rest).
    A waiter is woken when the host's generation is newer than the ``after`` it
    subscribed with, not when it changed between two polls: a change landing
    between the waiter's own read and the poller's first look at that host is
    seen too.

    The same query reads the token digests of those hosts and of every host whose token
    ``host_tokens`` remembers, and drops the remembered ones that moved: a token revoked
    by another process is refused here within the interval.
    """
    from fastapi.concurrency import run_in_threadpool
    from sqlalchemy import select

    from controller.services import host_tokens

    tokens = host_tokens.cache_of(db)

    def read(ids):
        stmt = select(Host.id, Host.generation, Host.token_hash)
        if len(ids) <= 5000:  # beyond, every host (bound parameters have a limit)
            stmt = stmt.where(Host.id.in_(ids))
        with db.read() as session:
            return session.execute(stmt).all()

    while True:
        await asyncio.sleep(interval_s)
        waiting = notifier.waiting_hosts()
        ids = sorted(set(waiting) | tokens.hosts())
        if not ids:
            continue
        try:
            rows = await run_in_threadpool(read, ids)
        except Exception:  # noqa: BLE001 - try again next interval
            continue
        tokens.validate({r.id: r.token_hash for r in rows}, ids)
        notifier.notify_newer({r.id: r.generation for r in rows})


class GenerationNotifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # host id -> {(loop, event, after)}: ``after`` is the generation the waiter holds
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event, int]]] = \
            defaultdict(set)

    def after_commit(self, session: Session) -> None:
        touched = session.info.pop(TOUCHED_KEY, None)
        if touched:
            self.notify(touched)

    def notify(self, host_ids) -> None:
        with self._lock:
            targets = [w for h in host_ids for w in self._waiters.get(h, ())]
        self._wake(targets)

    def notify_newer(self, generations: dict[str, int]) -> None:
        """Wake the waiters of each host whose generation is newer than their ``after``."""
        with self._lock:
            targets = [w for h, g in generations.items() for w in self._waiters.get(h, ())
                       if g > w[2]]
        self._wake(targets)

    @staticmethod
    def _wake(targets) -> None:
        for loop, event, _after in targets:
            if event.is_set():
                continue
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop closed: nobody is waiting any more
                pass

    def waiting_hosts(self) -> list[str]:
        with self._lock:
            return sorted(self._waiters)

    def subscribe(self, host_id: str, after: int = -1) -> asyncio.Event:
        """An event set when ``host_id``'s generation may have passed ``after``."""
        event = asyncio.Event()
        with self._lock:
            self._waiters[host_id].add((asyncio.get_running_loop(), event, after))
        return event

    def resubscribe(self, host_id: str, event: asyncio.Event, after: int) -> None:
        """The waiter of ``event`` now holds ``after`` (a spec channel sent it): the shared
        poller wakes it for generations newer than that. In place, under the lock, so no
        wake between an unsubscribe and a subscribe can be lost."""
        with self._lock:
            waiters = self._waiters[host_id]
            old = {w for w in waiters if w[1] is event}
            waiters.difference_update(old)
            waiters.add((asyncio.get_running_loop(), event, after))

    def unsubscribe(self, host_id: str, event: asyncio.Event) -> None:
        with self._lock:
            waiters = self._waiters.get(host_id, set())
            waiters.difference_update({w for w in waiters if w[1] is event})
            if not waiters:
                self._waiters.pop(host_id, None)
