"""Push guests' serial console logs to the controller (it cannot reach us: we push).

For each instance the agent tracks how many bytes of ``console.log`` the
controller holds. After a restart it knows nothing, so it pushes from 0 again
(the controller rewrites from the offset it is given: nothing is doubled). A
log that shrank (QEMU truncates it when the domain starts) is pushed from 0.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from agent.errors import AgentError
from agent.state import StateDir

log = logging.getLogger(__name__)

CHUNK = 256 * 1024


class ConsolePusher:
    def __init__(self, state: StateDir, client) -> None:
        self.state = state
        self.client = client
        self.pushed: dict[str, int] = {}
        self._lock = threading.Lock()

    def run(self, stop: threading.Event, instance_ids: Callable[[], list[str]],
            interval_s: float) -> None:
        """Push every ``interval_s`` (thread), so ``instance console --follow`` sees new
        lines within about a second; a push of an unchanged log costs one ``stat``."""
        while not stop.wait(interval_s):
            try:
                self.push(instance_ids())
            except Exception:  # noqa: BLE001 - the pusher must outlive any one failure
                log.exception("console push pass failed")

    def push(self, instance_ids: list[str]) -> None:
        """Send what each instance's console printed since the last push."""
        with self._lock:
            self._push_all(instance_ids)

    def _push_all(self, instance_ids: list[str]) -> None:
        for instance_id in instance_ids:
            try:
                self._push_one(instance_id, self.state.console_path(instance_id))
            except AgentError as exc:
                log.debug("console push for %s failed: %s", instance_id, exc)
            except (OSError, ValueError) as exc:
                log.warning("console of %s unreadable: %s", instance_id, exc)
        for gone in set(self.pushed) - set(instance_ids):
            del self.pushed[gone]

    def _push_one(self, instance_id: str, path: Path) -> None:
        if not path.exists():
            return
        size = path.stat().st_size
        offset = self.pushed.get(instance_id, 0)
        if size < offset:
            offset = 0
        if instance_id in self.pushed and size == offset:
            return
        with open(path, "rb") as f:
            while True:
                f.seek(offset)
                data = f.read(CHUNK)
                offset = self.client.push_console(instance_id, offset, data)
                self.pushed[instance_id] = offset
                if len(data) < CHUNK:
                    return
