"""Small persistent records of the compute reconciler, as versioned JSON in the state dir.

* ``ShutdownRecords`` (``compute.json``): when a graceful shutdown of an
  instance began, so the stop timeout keeps counting across agent restarts.
* ``OperationLog`` (``operations.json``): one-shot operations already run,
  with their outcome, so a retry or a restart never repeats one.
* ``GuestPower`` (``guest-power.json``): the instances seen running while
  their spec said running, and those whose guest then powered itself off
  (held stopped until the controller's spec says stopped).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agent.state import read_json, write_json_atomic

OPERATION_RETENTION_S = 7 * 24 * 3600


@dataclass
class Shutdown:
    started_at: float  # wall clock, so it survives a restart
    last_sent_at: float


class ShutdownRecords:
    def __init__(self, path: Path) -> None:
        self.path = path
        data = read_json(path) or {}
        self._items: dict[str, Shutdown] = {
            k: Shutdown(float(v["started_at"]), float(v.get("last_sent_at", v["started_at"])))
            for k, v in (data.get("shutdowns") or {}).items()}

    def get(self, instance_id: str) -> Shutdown | None:
        return self._items.get(instance_id)

    def snapshot(self) -> dict[str, Shutdown]:
        return dict(self._items)

    def sent(self, instance_id: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        rec = self._items.get(instance_id)
        self._items[instance_id] = Shutdown(rec.started_at if rec else now, now)
        self._save()

    def forget(self, instance_id: str) -> None:
        if self._items.pop(instance_id, None) is not None:
            self._save()

    def _save(self) -> None:
        write_json_atomic(self.path, {"shutdowns": {
            k: {"started_at": v.started_at, "last_sent_at": v.last_sent_at}
            for k, v in sorted(self._items.items())}})


class GuestPower:
    """Which stops were the guest's own, across agent restarts.

    A domain that shut off with libvirt's reason "shutdown" was powered off by its
    guest OS or by an ACPI request. It is the guest's own stop only when the agent saw it
    running under the same start (``running``: instance id -> the spec's
    ``power_serial``, which every start through the API changes) and sent no ACPI
    shutdown of its own. Such an instance is held stopped (``stopped``: id -> serial):
    not started again and reported ``stopped_by_guest`` until the spec says stopped (the
    controller took note: it is Stopped, as ECS shows it) or carries a new serial (the
    operator started it again, whatever spec the agent saw in between).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        data = read_json(path) or {}
        self.running: dict[str, int] = dict(data.get("running") or {})
        self.stopped: dict[str, int] = dict(data.get("stopped") or {})

    def update(self, running: dict[str, int], stopped: dict[str, int]) -> None:
        if (running, stopped) != (self.running, self.stopped):
            self.running, self.stopped = dict(running), dict(stopped)
            write_json_atomic(self.path, {"running": self.running, "stopped": self.stopped})


@dataclass(frozen=True)
class OperationOutcome:
    instance_id: str
    ok: bool
    message: str
    at: float


class OperationLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        data = read_json(path) or {}
        self._done: dict[str, OperationOutcome] = {
            k: OperationOutcome(v["instance_id"], bool(v["ok"]), v.get("message", ""), float(v["at"]))
            for k, v in (data.get("completed") or {}).items()}

    def outcome(self, op_id: str) -> OperationOutcome | None:
        return self._done.get(op_id)

    def completed_ids(self) -> set[str]:
        return set(self._done)

    def record(self, op_id: str, instance_id: str, ok: bool, message: str = "") -> None:
        """Written before the report is sent, so the outcome is never lost nor the op repeated."""
        with self._lock:
            self._done[op_id] = OperationOutcome(instance_id, ok, message, time.time())
            self._save()

    def prune(self, keep: set[str], now: float | None = None) -> None:
        """Forget old outcomes the controller no longer asks about."""
        now = time.time() if now is None else now
        with self._lock:
            old = [k for k, v in self._done.items()
                   if k not in keep and now - v.at > OPERATION_RETENTION_S]
            for k in old:
                del self._done[k]
            if old:
                self._save()

    def _save(self) -> None:
        write_json_atomic(self.path, {"completed": {
            k: {"instance_id": v.instance_id, "ok": v.ok, "message": v.message, "at": v.at}
            for k, v in sorted(self._done.items())}})
