"""Host tokens recognised without a database read on every agent call.

Every agent call (long-poll, report, console push, image download) names its
host by its token; looking the digest up was a read transaction and a thread
hop per call, a tenth of the controller's CPU with 500 agents. A digest found
in the database is remembered here for ``ttl_s``. Anything that changes a host
token in this process (enrolment, re-key, host removal) clears the cache when
it commits, so a revoked token is refused at once here. A change made by
another controller process over the same database is seen by the poller that
already reads the waiting hosts' generations every ``spec_poll_interval_s``
(``notify.poll_generations``): it reads their token digests in the same query
and drops every entry whose host's digest moved or whose host is gone
(``validate``). The TTL is the backstop for a process without that poller.

The TTL was 2 s, which with agents calling every few seconds made most calls
miss: a read per long-poll woken by a peer's create.
"""

from __future__ import annotations

import threading
import time

TTL_S = 60.0


class HostTokenCache:
    def __init__(self, ttl_s: float = TTL_S, max_entries: int = 20000) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[tuple[str, str], float]] = {}
        self._epoch = 0

    def get(self, digest: str) -> tuple[str, str] | None:
        """(host id, host name) of a token digest seen within the TTL, else None."""
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or time.monotonic() - entry[1] > self.ttl_s:
            return None
        return entry[0]

    def epoch(self) -> int:
        with self._lock:
            return self._epoch

    def put(self, digest: str, host: tuple[str, str], epoch: int) -> None:
        """Remember ``host`` for ``digest``, read from the database at ``epoch`` (a lookup
        that raced with a token change is not kept)."""
        with self._lock:
            if epoch != self._epoch:
                return
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[digest] = (host, time.monotonic())

    def hosts(self) -> set[str]:
        """The host ids remembered (what ``validate`` needs the digests of)."""
        with self._lock:
            return {host[0] for host, _at in self._entries.values()}

    def validate(self, digests: dict[str, str], asked) -> None:
        """Forget entries of hosts in ``asked`` whose digest is not ``digests[host]`` (the
        token changed) or that ``digests`` lacks (the host is gone): read from the database,
        by another process's changes as much as this one's."""
        asked = set(asked)
        with self._lock:
            stale = [d for d, (host, _at) in self._entries.items()
                     if host[0] in asked and digests.get(host[0]) != d]
            for digest in stale:
                del self._entries[digest]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._epoch += 1


def cache_of(db) -> HostTokenCache:
    """The process's cache for ``db`` (one per Database, like the heartbeat batch)."""
    cache = db.__dict__.get("host_token_cache")
    if cache is None:
        cache = db.__dict__.setdefault("host_token_cache", HostTokenCache())
    return cache


def tokens_changed(db) -> None:
    """Call after committing a change of any host's token (or the removal of a host)."""
    cache_of(db).clear()
