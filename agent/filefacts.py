"""Facts read from files, remembered while the files are unchanged — across agent restarts.

Reading a fact can be dear (``qemu-img info`` is a process per disk; a seed ISO
is parsed by pycdlib), yet on an idle host almost no file changes between two
passes, nor across an agent restart. ``FileFacts`` remembers a fact with the
file's identity and change stamps — device, inode, size, mtime and ctime in
nanoseconds — and hands it back only while all five are the same. Every write
to a file moves its mtime and ctime, and the kernel sets ctime itself (no
program can set it back), so a changed file is always read again.

A fact is remembered only when the file had not changed for ``settle_s``
before the fact was read: timestamps advance in clock ticks, so a write in the
same tick as the ``stat`` could otherwise leave the stamps equal ("racily
clean", as git calls it). A file being written (a running guest's disk) is
thus simply read every time.

The facts are saved (atomically) to a JSON file in the agent's state
directory at the end of a pass when any changed, and loaded on start, so the
first pass after a restart reads only the files that changed meanwhile. The
file carries a ``kind`` naming the fact's format; a file of another kind, or
an unreadable one, is ignored (everything is read again).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from agent.state import read_json, write_json_atomic

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int, int, int]
SETTLE_S = 1.0  # a file changed more recently than this is not remembered


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class FileFacts:
    """One fact per file path, valid while the file's stamp is unchanged."""

    def __init__(self, store: Path | None, kind: str, *, settle_s: float | None = None,
                 max_entries: int = 8192) -> None:
        self.store = store
        self.kind = kind
        self.settle_ns = int((SETTLE_S if settle_s is None else settle_s) * 1e9)
        self.max_entries = max_entries
        self._facts: dict[str, tuple[Stamp, Any]] = {}
        self._dirty = False
        self.hits = self.misses = 0
        if store is not None:
            self._load()

    def _load(self) -> None:
        assert self.store is not None
        data = read_json(self.store)
        if not data or data.get("kind") != self.kind or not isinstance(data.get("facts"), dict):
            return
        for path, entry in data["facts"].items():
            try:
                stamp, fact = entry
                self._facts[path] = (tuple(int(x) for x in stamp), fact)  # type: ignore[misc]
            except (TypeError, ValueError):
                continue

    def get(self, path: Path | str, st: os.stat_result) -> Any | None:
        """The fact remembered for ``path`` if the file is as it was then, else None."""
        hit = self._facts.get(str(path))
        if hit is not None and hit[0] == stamp_of(st):
            self.hits += 1
            return hit[1]
        self.misses += 1
        return None

    def put(self, path: Path | str, st: os.stat_result, fact: Any) -> None:
        """Remember ``fact``, read after the ``stat`` that gave ``st``; JSON-serialisable."""
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < self.settle_ns:
            self._facts.pop(str(path), None)  # changed just now: read it again next time
            return
        if len(self._facts) >= self.max_entries:
            self._facts.clear()
        self._facts[str(path)] = (stamp_of(st), fact)
        self._dirty = True

    def forget(self, path: Path | str) -> None:
        if self._facts.pop(str(path), None) is not None:
            self._dirty = True

    def save(self) -> None:
        """Write the facts of files that still exist to the store, when any changed."""
        if self.store is None or not self._dirty:
            return
        self._facts = {p: v for p, v in self._facts.items() if os.path.exists(p)}
        try:
            write_json_atomic(self.store, {"kind": self.kind,
                                           "facts": {p: [list(s), f] for p, (s, f)
                                                     in self._facts.items()}}, mode=0o600)
            self._dirty = False
        except OSError as exc:  # a full disk must not stop a pass; facts are re-read
            log.warning("cannot save %s: %s", self.store, exc)
