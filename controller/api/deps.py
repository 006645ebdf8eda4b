"""Typed dependencies: the database, the settings, and who is calling."""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import Depends, Query, Request, WebSocket
from fastapi.concurrency import run_in_threadpool
from starlette.websockets import WebSocketState
from sqlalchemy import select

from controller import audit
from controller.config import Settings
from controller.db import Database
from controller.errors import Unauthorized
from controller.models import Host, Setting
from controller.schemas.common import DEFAULT_PAGE, MAX_PAGE
from controller.services import host_tokens
from controller.services.api_tokens import ENROLMENT_KEY
from controller.services.notify import GenerationNotifier
from controller.tokens import hash_token


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_notifier(request: Request) -> GenerationNotifier:
    return request.app.state.notifier


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
NotifierDep = Annotated[GenerationNotifier, Depends(get_notifier)]


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    return token.strip()


def ws_bearer(ws: WebSocket) -> str:
    scheme, _, token = ws.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def close_ws(ws: WebSocket, code: int, reason: str = "") -> None:
    """Close with a code and reason the client sees (accepting first if need be: a refusal
    before the handshake would only show as HTTP 403)."""
    with contextlib.suppress(Exception):
        if ws.application_state == WebSocketState.CONNECTING:
            await ws.accept()
        await ws.close(code=code, reason=reason[:120])


def require_caller(request: Request, db: DbDep) -> str:
    """Resolve the caller (admin token or API key), check its role may call this route.

    The principal is kept on the request's audit actor, where the project filter
    (``controller.tenancy``) and the audit record find it. 401 for a missing,
    unknown or revoked token; 403 for a role that may not call the route.
    """
    from controller import tenancy
    from controller.services.access import resolve_principal

    principal = resolve_principal(db, bearer_token(request),
                                  request.headers.get(tenancy.PROJECT_HEADER))
    audit.principal(request, principal.kind, principal.id, principal.name, principal)
    route = audit.route_template(request.scope) or request.scope["path"]
    tenancy.check_route(principal, request.method, route)
    return principal.id


# Every /api/v1 route but the agents' takes this; the route table in
# ``controller.tenancy.check_route`` decides which roles pass (admin: all).
require_admin = require_caller


def _host_of_digest(db: Database, digest: str) -> tuple[str, str] | None:
    with db.read() as session:
        row = session.execute(select(Host.id, Host.name).where(Host.token_hash == digest)).first()
    return (row.id, row.name) if row is not None else None


async def host_of_token(db: Database, token: str) -> tuple[str, str] | None:
    """(id, name) of the host whose token this is, or None (unknown or revoked); known
    tokens are answered from ``host_tokens`` without a database read."""
    digest = hash_token(token)
    cache = host_tokens.cache_of(db)
    host = cache.get(digest)
    if host is None:
        epoch = cache.epoch()
        host = await run_in_threadpool(_host_of_digest, db, digest)
        if host is None:
            return None
        cache.put(digest, host, epoch)
    return host


async def require_host(request: Request, db: DbDep) -> str:
    """The calling agent's host id, taken from its token (never from a body)."""
    host = await host_of_token(db, bearer_token(request))
    if host is None:
        raise Unauthorized("unknown or revoked host token")
    audit.principal(request, "host", host[0], host[1])
    return host[0]


def require_enrolment(request: Request, db: DbDep) -> str | None:
    """The region's enrolment token, or a one-time one (only for ``POST /agent/register``).

    Returns None for the region's token, else the one-time token's key, which the
    enrolment consumes.
    """
    from controller.services.enrolment_tokens import lookup

    digest = hash_token(bearer_token(request))
    with db.read() as session:
        expected = session.get(Setting, ENROLMENT_KEY)
        if expected is not None and expected.value == digest:
            audit.principal(request, "enrolment", "", "enrolment token")
            return None
        one_time = lookup(session, digest)
    if one_time is None:
        raise Unauthorized("unknown enrolment token")
    audit.principal(request, "enrolment", "", "one-time enrolment token")
    return one_time


AdminDep = Annotated[str, Depends(require_caller)]
CallerDep = AdminDep
EnrolmentDep = Annotated[str | None, Depends(require_enrolment)]
HostDep = Annotated[str, Depends(require_host)]


class Page:
    """Paging query parameters shared by every list route."""

    def __init__(self,
                 max_results: Annotated[int, Query(ge=1, le=MAX_PAGE, description=(
                     f"Page size, at most {MAX_PAGE}"), examples=[DEFAULT_PAGE])] = DEFAULT_PAGE,
                 next_token: Annotated[str | None, Query(max_length=512, description=(
                     "Token from the previous page's answer"))] = None) -> None:
        self.max_results = max_results
        self.next_token = next_token


PageDep = Annotated[Page, Depends()]
