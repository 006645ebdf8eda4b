"""Wiring of events, audit and metrics into the app (kept out of ``app.py``)."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from controller.api import drift as drift_api
from controller.api import events as events_api
from controller.api.errors import ERROR_RESPONSES
from controller.audit import AuditMiddleware
from controller.config import Settings
from controller.db import Database
from controller.services import events

API_PREFIX = "/api/v1"


def install(app: FastAPI, db: Database, settings: Settings) -> None:
    """Record status transitions and API mutations; wake event followers on commit.

    Call after every other middleware is added: the audit middleware must be
    the outermost, so it sees the final answer of every request.
    """
    notifier = events.EventNotifier()
    app.state.event_notifier = notifier
    metrics = getattr(app.state, "metrics", None)

    def on_recorded(kind: str, n: int) -> None:
        if metrics is not None:
            metrics.events_recorded.labels(kind=kind).inc(n)
        notifier.notify()

    events.install(db, on_recorded=on_recorded)
    app.include_router(events_api.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(drift_api.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.add_middleware(AuditMiddleware, db=db,
                       observe=metrics.observe_request if metrics is not None else None)


def start_background(db: Database, settings: Settings) -> list[asyncio.Task]:
    """The observability duties of the controller's lifespan (event retention)."""
    return [asyncio.create_task(events.retention_loop(db, settings))]
