"""Online, consistent backups of the SQLite default database, and restores.

``backup_sqlite`` uses SQLite's online backup API, which copies a consistent
snapshot page by page while the controller keeps writing (WAL mode); the copy
is checked with ``PRAGMA integrity_check`` and renamed into place only when
whole. ``restore_sqlite`` refuses a file that is not a sound miniecs database
and refuses while anything holds the live database (a running controller),
keeps the replaced database beside it, and writes the restored one through the
same backup API so the live file is never half-written.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path


class BackupError(RuntimeError):
    """The backup or restore cannot be done; nothing was changed."""


def _check(conn: sqlite3.Connection, what: str) -> dict:
    result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    if result != "ok":
        raise BackupError(f"{what} fails its integrity check: {result}")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not {"alembic_version", "instances", "hosts"} <= tables:
        raise BackupError(f"{what} is not a miniecs controller database")
    version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]  # noqa: S608 - names from sqlite_master
              for t in ("instances", "hosts", "vpcs", "images")}
    return {"schema": sorted(v[0] for v in version), **counts}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_sqlite(source: Path, target: Path) -> dict:
    """Write a consistent copy of ``source`` to ``target``; returns what it holds."""
    if not source.exists():
        raise BackupError(f"no database at {source}")
    target = target.absolute()
    tmp = target.with_name(f".{target.name}.partial")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(tmp)
    try:
        src.backup(dst, pages=1024)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        info = _check(dst, "the backup")
    except BaseException:
        dst.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    dst.close()
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    return info


def restore_sqlite(backup: Path, live: Path) -> Path:
    """Replace ``live`` with ``backup``; returns where the replaced database was kept."""
    if not backup.exists():
        raise BackupError(f"no backup at {backup}")
    src = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        _check(src, str(backup))
        live.parent.mkdir(parents=True, exist_ok=True)
        kept = live.with_name(f"{live.name}.pre-restore-{time.strftime('%Y%m%d%H%M%S')}")
        dst = sqlite3.connect(live, timeout=0.5, isolation_level=None)
        try:
            try:
                dst.execute("BEGIN EXCLUSIVE")
                dst.execute("ROLLBACK")
            except sqlite3.OperationalError:
                raise BackupError(f"{live} is in use; stop the controller first") from None
            if live.stat().st_size:
                keep = sqlite3.connect(kept)
                dst.backup(keep)
                keep.close()
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    return kept
