"""Wiring of events, audit and metrics into the app (kept out of ``app.py``)."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from prometheus_client import start_http_server

from controller.api import drift as drift_api
from controller.api import events as events_api
from controller.api.errors import ERROR_RESPONSES
from controller.api import metrics as metrics_api
from controller.audit import AuditMiddleware
from controller.config import Settings
from controller.db import Database
from controller.metrics import ControllerMetrics
from controller.services import events

API_PREFIX = "/api/v1"


def install(app: FastAPI, db: Database, settings: Settings) -> None:
    """Record status transitions and API mutations; wake event followers on commit.

    Call after every other middleware is added: the audit middleware must be
    the outermost, so it sees the final answer of every request.
    """
    notifier = events.EventNotifier()
    app.state.event_notifier = notifier
    metrics = app.state.metrics = ControllerMetrics(db)

    def on_recorded(kind: str, n: int) -> None:
        metrics.events_recorded.labels(kind=kind).inc(n)
        notifier.notify()

    events.install(db, on_recorded=on_recorded)
    app.include_router(events_api.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(drift_api.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(metrics_api.router)
    app.add_middleware(AuditMiddleware, db=db, observe=metrics.observe_request)


def start_background(db: Database, settings: Settings, app: FastAPI | None = None
                     ) -> list[asyncio.Task]:
    """The observability duties of the controller's lifespan: event retention, and the
    unauthenticated metrics listener when ``metrics_listen`` is set."""
    tasks = [asyncio.create_task(events.retention_loop(db, settings))]
    if settings.metrics_listen and app is not None:
        host, _, port = settings.metrics_listen.rpartition(":")
        server, thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1",
                                           registry=app.state.metrics.registry)
        tasks.append(asyncio.create_task(_stop_on_cancel(server, thread)))
    return tasks


async def _stop_on_cancel(server, thread) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
