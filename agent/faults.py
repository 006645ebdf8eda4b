"""Fault injection for crash tests: the agent kills itself at a named point.

Crash-safety tests start an agent with ``MINIECS_AGENT_FAULT`` set to a point
name (optionally ``name@N`` for the N-th time the point is reached, default
the first). When the running code reaches that point the process sends
itself SIGKILL — no cleanup, no flush, exactly like a power cut of the agent.
Before dying it appends the point's name to ``MINIECS_AGENT_FAULT_LOG`` (when
set) so a test can tell that the point really was reached. The test then
restarts the agent without the variable and checks that the host converges.

With the variable unset (every real deployment) ``point`` is one dict lookup.
Point names are dotted: ``<area>.<step>``, e.g. ``compute.after_define``,
``storage.snapshot.before_record``; ``known_points()`` lists those reached in
this process so tests can enumerate coverage.
"""

from __future__ import annotations

import os
import signal

ENV = "MINIECS_AGENT_FAULT"
LOG_ENV = "MINIECS_AGENT_FAULT_LOG"

_reached: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return None
    name, _, nth = spec.partition("@")
    return name, int(nth) if nth.isdigit() and int(nth) > 0 else 1


def point(name: str) -> None:
    """Mark a crash point; SIGKILL this process if the test asked for it."""
    count = _reached.get(name, 0) + 1
    _reached[name] = count
    target = _target()
    if target is None or target != (name, count):
        return
    log_path = os.environ.get(LOG_ENV)
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, f"{name}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def known_points() -> dict[str, int]:
    """Points reached so far in this process, with how often."""
    return dict(_reached)
