"""The one libvirt connection factory: opened lazily, reopened after a failure.

Lifecycle events (a guest powering off from inside) are delivered through the
libvirt default event loop, run in one daemon thread; ``on_event`` is called
from that thread and must only wake the reconciler.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import libvirt

from agent.errors import TemporaryError

log = logging.getLogger(__name__)

_event_loop_started = False
_event_loop_lock = threading.Lock()


def _silence_default_error_handler() -> None:
    # libvirt prints every error to stderr by default; we raise and log them ourselves.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _start_event_loop() -> None:
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def loop() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


class LibvirtConnection:
    """Holds one connection to ``uri`` and hands it out, reconnecting when it is dead."""

    def __init__(self, uri: str, on_event: Callable[[str, int], None] | None = None) -> None:
        self.uri = uri
        self.on_event = on_event
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        _silence_default_error_handler()
        if on_event is not None:
            _start_event_loop()

    def get(self) -> libvirt.virConnect:
        """A live connection; raises :class:`TemporaryError` when libvirtd does not answer."""
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                log.warning("libvirt connection to %s lost; reconnecting", self.uri)
                self._close_locked()
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise TemporaryError(f"libvirt {self.uri}: {exc}") from None
            if self.on_event is not None:
                try:
                    conn.setKeepAlive(5, 3)
                    conn.domainEventRegisterAny(
                        None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None)
                except libvirt.libvirtError as exc:
                    log.warning("libvirt events unavailable: %s", exc)
            self._conn = conn
            return conn

    def _lifecycle(self, _conn, dom, event, _detail, _opaque) -> None:
        try:
            if self.on_event is not None:
                self.on_event(dom.name(), event)
        except Exception:  # an event callback must never kill the event loop
            log.exception("lifecycle event handler failed")

    def invalidate(self) -> None:
        """Drop the connection so the next :meth:`get` reopens it."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass
            self._conn = None

    def close(self) -> None:
        self.invalidate()
