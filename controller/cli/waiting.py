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


def wait_until_final(api: ApiClient, item: dict, path: str, timeout: float, *, noun: str,
                     title: str, field: str, success: str, interval: float = 0.2,
                     failed_as: str | None = None) -> dict:
    """Poll ``path/<id>`` until ``is_final``, showing ``field``; not ``success`` exits non-zero."""
    deadline = time.monotonic() + timeout
    with Progress(title) as shown:
        while not item.get("is_final"):
            shown.update(str(item.get(field)))
            if time.monotonic() >= deadline:
                raise CliError(f"gave up after {timeout:.0f}s waiting for {noun} {item['id']}",
                               EXIT_TIMEOUT)
            time.sleep(interval)
            item = api.get(f"{path}/{item['id']}")
        shown.update(str(item.get(field)))
    if item.get(field) != success:
        verdict = failed_as or item.get(field)
        raise CliError(f"{noun} {item['id']} {verdict}: {item.get('message') or 'no message'}")
    return item


def wait_for_operation(api: ApiClient, operation: dict, path: str, timeout: float) -> dict:
    """Poll a one-shot operation at ``path/<id>`` until ``is_final``; a failed one exits non-zero."""
    return wait_until_final(api, operation, path, timeout, noun="operation",
                            title=f"{operation.get('kind', 'operation')} {operation['id']}",
                            field="outcome", success="succeeded")
