"""Wake spec long-polls when a host's generation changes.

Services mark the hosts they bump in ``session.info``; after the commit this
notifier sets the waiting long-polls' events from whatever thread committed.
It is only a shortcut: long-polls also re-read the database every
``spec_poll_interval_s``, so a change made by another controller process (or
directly in SQL) is still seen.
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
    session.execute(update(Host).where(Host.id == host_id)
                    .values(generation=Host.generation + 1))
    session.info.setdefault(TOUCHED_KEY, set()).add(host_id)


class GenerationNotifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = \
            defaultdict(set)

    def after_commit(self, session: Session) -> None:
        touched = session.info.pop(TOUCHED_KEY, None)
        if touched:
            self.notify(touched)

    def notify(self, host_ids) -> None:
        with self._lock:
            targets = [w for h in host_ids for w in self._waiters.get(h, ())]
        for loop, event in targets:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop closed: nobody is waiting any more
                pass

    def subscribe(self, host_id: str) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self._waiters[host_id].add((asyncio.get_running_loop(), event))
        return event

    def unsubscribe(self, host_id: str, event: asyncio.Event) -> None:
        with self._lock:
            waiters = self._waiters.get(host_id, set())
            waiters.difference_update({w for w in waiters if w[1] is event})
            if not waiters:
                self._waiters.pop(host_id, None)
