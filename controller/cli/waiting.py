"""``--wait``: poll a resource until its status settles, showing progress on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from rich.console import Console
from rich.text import Text

from controller.cli.client import ApiClient, ApiError
from controller.cli.errors import CliError

EXIT_TIMEOUT = 5
DEFAULT_TIMEOUT_S = 600.0


class Progress:
    """A spinner on a terminal; one plain line per change otherwise (logs, CI)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.console = Console(stderr=True, highlight=False)
        self.interactive = sys.stderr.isatty()
        self.started = time.monotonic()
        self._last: str | None = None
        self._status = None

    def __enter__(self) -> Progress:
        if self.interactive:
            self._status = self.console.status(f"waiting for {self.label}")
            self._status.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)

    def update(self, state: str) -> None:
        elapsed = time.monotonic() - self.started
        if self._status is not None:
            self._status.update(Text(f"{self.label}: {state} ({elapsed:.0f}s)"))
        elif state != self._last:
            self.console.print(Text(f"{self.label}: {state} ({elapsed:.1f}s)"))
        self._last = state


def wait_for_status(client: ApiClient, path: str, *, label: str, want: set[str],
                    timeout: float = DEFAULT_TIMEOUT_S, interval: float = 0.5,
                    gone_ok: bool = False, progress: AbstractContextManager | None = None,
                    describe: Callable[[dict], str] | None = None) -> dict:
    """GET ``path`` until ``status`` is in ``want``; the last object read.

    ``Error`` (unless wanted) stops with the resource's ``status_reason``;
    ``gone_ok`` treats a 404 as success (deletes), answering ``{}``.
    """
    deadline = time.monotonic() + timeout
    delay = min(0.1, interval)  # fast first polls: most transitions take well under a second
    last = "?"
    with progress or Progress(label) as shown:
        while True:
            try:
                obj = client.get(path)
            except ApiError as exc:
                if gone_ok and exc.status == 404:
                    return {}
                raise
            status = str(obj.get("status", "?"))
            reason = obj.get("status_reason") or ""
            if shown is not None:
                shown.update((describe(obj) if describe else status)
                             + (f" - {reason}" if reason else ""))
            if status in want:
                return obj
            if status == "Error":
                raise CliError(f"{label} went to Error: {reason or 'no reason given'}")
            last = status
            if time.monotonic() >= deadline:
                raise CliError(f"gave up after {timeout:.0f}s waiting for {label} to become "
                               f"{'/'.join(sorted(want))}; it is {last}", EXIT_TIMEOUT)
            time.sleep(delay)
            delay = min(interval, delay * 1.5)


def wait_for_operation(api: ApiClient, operation: dict, path: str, timeout: float) -> dict:
    """Poll a one-shot operation at ``path/<id>`` until ``is_final``; a failed one exits non-zero."""
    deadline = time.monotonic() + timeout
    with Progress(f"{operation.get('kind', 'operation')} {operation['id']}") as shown:
        while not operation.get("is_final"):
            shown.update(str(operation.get("outcome")))
            if time.monotonic() >= deadline:
                raise CliError(f"gave up after {timeout:.0f}s waiting for operation "
                               f"{operation['id']}", EXIT_TIMEOUT)
            time.sleep(0.2)
            operation = api.get(f"{path}/{operation['id']}")
        shown.update(str(operation.get("outcome")))
    if operation.get("outcome") != "succeeded":
        raise CliError(f"operation {operation['id']} {operation.get('outcome')}: "
                       f"{operation.get('message') or 'no message'}")
    return operation
