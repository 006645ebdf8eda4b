"""Serial console logs: pushed by agents, stored under the state dir, read by operators.

The controller cannot reach hypervisors (agents pull), so each agent pushes
what its guests' consoles print, as byte ranges of the host's log file. The
controller keeps one file per instance under ``<state_dir>/consoles``; a push
at an offset below the stored size (agent restart, console file recreated by
a domain start) rewrites from that offset, so a retried push never doubles
text. A log is capped at ``MAX_CONSOLE_BYTES``; past that, pushes are ignored.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from controller.config import Settings
from controller.db import Database
from controller.errors import Conflict, NotFound
from controller.models import Instance
from controller.services.instances import load_instance

MAX_CONSOLE_BYTES = 4 << 20
MAX_READ_BYTES = 1 << 20


def _path(settings: Settings, instance_id: str) -> Path:
    return settings.state_dir / "consoles" / f"{instance_id}.log"


def store_console(db: Database, settings: Settings, host_id: str, instance_id: str,
                  offset: int, data: bytes) -> int:
    """Write ``data`` at ``offset`` of the instance's log; returns the new size."""
    with db.read() as session:
        owner = session.scalar(select(Instance.host_id).where(Instance.id == instance_id))
    if owner is None or owner != host_id:
        # another host's instance is as unknown to this token as a missing one
        raise NotFound("InvalidInstanceId.NotFound", f"instance {instance_id!r} is not on this host",
                       "instance_id")
    path = _path(settings, instance_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = path.stat().st_size if path.exists() else 0
    if offset > size:
        raise Conflict("InvalidConsoleOffset.Gap",
                       f"offset {offset} is past the stored {size} bytes", "offset")
    if offset + len(data) > MAX_CONSOLE_BYTES:
        return size
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, offset)
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
    return offset + len(data)


def read_console(db: Database, settings: Settings, instance_id: str, offset: int,
                 max_bytes: int) -> tuple[bytes, int, int]:
    """The log from ``offset`` (at most ``max_bytes``): (data, offset used, total size)."""
    with db.read() as session:
        load_instance(session, instance_id)  # 404 for an unknown id
    path = _path(settings, instance_id)
    if not path.exists():
        return b"", 0, 0
    size = path.stat().st_size
    offset = min(offset, size)
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(min(max_bytes, MAX_READ_BYTES))
    return data, offset, size


def remove_console(settings: Settings, instance_id: str) -> None:
    _path(settings, instance_id).unlink(missing_ok=True)


async def follow_console(db: Database, settings: Settings, instance_id: str, offset: int,
                         is_disconnected, poll_s: float = 0.25, recheck_s: float = 2.0):
    """Yield the log from ``offset`` on, then every byte pushed later, as it arrives.

    Ends when the client goes away or the instance is deleted. A log that
    shrank (the guest was started again: QEMU truncated its console and the
    agent pushed it anew) is followed from its start again.
    """
    def alive() -> bool:
        with db.read() as session:
            status = session.scalar(select(Instance.status).where(Instance.id == instance_id))
        return status is not None and status != "Deleted"

    path = _path(settings, instance_id)
    pos = offset
    checked = time.monotonic()
    while True:
        size = path.stat().st_size if path.exists() else 0
        if size < pos:
            pos = 0
        if size > pos:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read(min(size - pos, MAX_READ_BYTES))
            pos += len(data)
            yield data
            continue
        if await is_disconnected():
            return
        if time.monotonic() - checked >= recheck_s:
            checked = time.monotonic()
            if not await run_in_threadpool(alive):
                return
        await asyncio.sleep(poll_s)
