"""The FastAPI application: routers under /api/v1, error mapping, background duties."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from controller.api import (
    agent, health, hosts, images, instance_types, instances, key_pairs, security_groups, tokens,
    vpcs, vswitches, zones,
)
from controller.api import eips
from controller.api import disks, snapshots
from controller.api import instance_ops
from controller.api import tunnels
from controller.api import deployment_sets, placement
from controller.api import migrations
from controller.api.limits import BodyLimit
from controller import observability
from controller.api import enrolment_tokens
from controller.api.errors import ERROR_RESPONSES, install_error_handlers
from controller.config import Settings
from controller.db import Database
from controller.services.hosts import mark_stale_hosts_down
from controller.services.images import fail_interrupted_imports
from controller.services.notify import GenerationNotifier, poll_generations
from controller.services import heartbeats
from controller.services.spec_cache import SpecCache
from controller.services.snapshot_policies import snapshot_policy_loop

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
MAX_BODY_BYTES = 1024 * 1024  # user data is at most 32 KiB; nothing needs more


def create_app(settings: Settings | None = None, db: Database | None = None) -> FastAPI:
    """Build the app. ``db`` must be migrated already (``serve`` and ``init`` do it)."""
    settings = settings or Settings()
    db = db or Database(settings.effective_database_url,
                        busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    notifier = GenerationNotifier()
    db.on_commit(notifier.after_commit)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        failed = await run_in_threadpool(fail_interrupted_imports, db)
        if failed:
            log.warning("%d image import(s) interrupted by a restart marked Error", failed)
        watchdog = asyncio.create_task(_heartbeat_watchdog(db, settings))
        policies = asyncio.create_task(snapshot_policy_loop(db))
        duties = observability.start_background(db, settings, app)
        duties.append(asyncio.create_task(
            poll_generations(db, notifier, settings.spec_poll_interval_s)))
        duties.append(asyncio.create_task(heartbeats.flush_loop(db, 1.0)))
        try:
            yield
        finally:
            for task in (watchdog, policies, *duties):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="miniecs controller", version="0.1.0", lifespan=lifespan,
                  description="A small Elastic Compute Service: the region's REST API. Every "
                  "route but /healthz needs `Authorization: Bearer <token>`.")
    app.state.settings = settings
    app.state.db = db
    app.state.notifier = notifier
    app.state.spec_cache = SpecCache(max_age_s=settings.spec_cache_max_age_s,
                                     check=settings.spec_cache_check)
    install_error_handlers(app)
    # inside the http middleware below: its task group would wrap the 413 of a body read
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)  # also chunked bodies

    # pure ASGI: Starlette's BaseHTTPMiddleware (``@app.middleware``) costs a task group
    # and a memory stream per request, much of the controller's CPU with 500 agents
    app.add_middleware(RequestIdHeader)

    app.include_router(health.router)
    for module in (zones, hosts, instance_types, images, key_pairs, vpcs, vswitches,
                   security_groups, instances, tokens, agent, eips, disks, snapshots):
        app.include_router(module.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(security_groups.explain_router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(instance_ops.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(enrolment_tokens.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(tunnels.router, prefix=API_PREFIX)
    app.include_router(deployment_sets.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(placement.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(tunnels.agent_router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(migrations.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    _install_tenancy(app, db)
    observability.install(app, db, settings)  # last: its middleware must be the outermost
    return app


class RequestIdHeader:
    """Every answer carries ``X-Request-Id`` (the id error bodies name)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                state = scope.setdefault("state", {})
                rid = state.get("request_id")
                if rid is None:
                    rid = state["request_id"] = "req-" + secrets.token_hex(6)
                message = {**message, "headers": [
                    *(h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"),
                    (b"x-request-id", rid.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_id)


async def _heartbeat_watchdog(db: Database, settings: Settings) -> None:
    period = max(1.0, settings.heartbeat_timeout_s / 3)
    # After a (re)start, every agent gets a full timeout of this controller answering
    # before it can be marked down: the heartbeats it missed while the controller was
    # away (or still starting) are not its fault, and a Down host shows its instances
    # Unknown and takes no placements.
    await asyncio.sleep(settings.heartbeat_timeout_s)
    while True:
        try:
            await run_in_threadpool(mark_stale_hosts_down, db, settings)
        except Exception:  # noqa: BLE001 - keep watching
            log.exception("heartbeat watchdog pass failed")
        await asyncio.sleep(period)


def _install_tenancy(app: FastAPI, db: Database) -> None:
    """Projects, users and API keys; the project filter and quota hooks on every session."""
    from controller import tenancy
    from controller.api import projects

    tenancy.install(db)
    for router in (projects.router, projects.users_router, projects.keys_router):
        app.include_router(router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
