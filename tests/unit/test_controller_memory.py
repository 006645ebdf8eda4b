"""What keeps the controller's memory at rest down: a small page cache per SQLite
connection (the pool keeps up to 80), and few malloc arenas for its ~60 threads."""

from __future__ import annotations

import ctypes

from sqlalchemy import text

from controller import server_cli
from controller.db import SQLITE_CACHE_KIB, Database


def test_every_sqlite_connection_keeps_a_small_page_cache(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/t.db")
    try:
        # several connections at once: each is set up when the pool opens it
        conns = [db.engine.connect() for _ in range(3)]
        try:
            sizes = {c.execute(text("PRAGMA cache_size")).scalar_one() for c in conns}
        finally:
            for c in conns:
                c.close()
        assert sizes == {-SQLITE_CACHE_KIB}  # negative: KiB (SQLite's default is -2000)
        assert SQLITE_CACHE_KIB < 2000
    finally:
        db.dispose()


def test_the_malloc_arenas_are_limited_unless_the_operator_chose(monkeypatch):
    calls = []
    real = ctypes.CDLL(None).mallopt

    class Libc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return real(param, value)  # glibc's own answer: 1 when applied

    monkeypatch.setattr(ctypes, "CDLL", lambda _name: Libc())
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert server_cli._limit_malloc_arenas() is True
    assert calls == [(-8, server_cli.MALLOC_ARENAS)]  # M_ARENA_MAX

    calls.clear()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert server_cli._limit_malloc_arenas() is False
    assert calls == []  # glibc already took the operator's value at start
