"""Audit: every API mutation recorded as an event, centrally, by one ASGI middleware.

For POST/PUT/PATCH/DELETE the middleware keeps a copy of the (JSON) request
body, lets the app answer, and before the client sees the answer writes one
``Event(kind="api")``: who (the token or host the auth dependency resolved,
or ``anonymous``), what (method, route template, resource type and id, the
redacted request), when, and the outcome (status code and, for errors, the
ECS code from the error body). Failed mutations (400, 401, 404, 409...) are
recorded like successful ones. Recording before answering means a client that
lists events after its call always finds it.

Not recorded: reads, and the agents' high-rate protocol calls (reports are the
heartbeat; console pushes are streaming data) whose effects show up as status
events instead.

Secrets never reach the table: values under keys that name tokens, passwords,
keys or user data are replaced by ``"<redacted>"`` and responses (which carry
new tokens and private keys) are never stored.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from datetime import UTC, datetime

from fastapi.concurrency import run_in_threadpool

from controller.db import Database
from controller.models_events import Event
from controller.services import events

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NOT_AUDITED = frozenset({
    "/api/v1/agent/report", "/api/v1/agent/console/{instance_id}",
    "/api/v1/security-group-explain",  # a read that takes a body
})
SECRET_KEY = re.compile(r"token|password|passwd|secret|private|user_data|api_key|credential"
                        r"|authorization", re.IGNORECASE)
REDACTED = "<redacted>"
MAX_CAPTURE = 64 * 1024
MAX_STORED = 4000
# route segment -> resource type, where dropping an "s" is not enough
RESOURCE_TYPES = {"vswitches": "vswitch", "snapshot-policies": "snapshot_policy",
                  "agent": "host", "security-group-explain": "security_group"}
SCOPE_KEY = "miniecs.actor"


def redact(value, key: str = ""):
    """A copy of a JSON value with every secret-looking field replaced."""
    if key and SECRET_KEY.search(key):
        return REDACTED if value not in (None, "", [], {}) else value
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def redacted_request(body: bytes, query: str) -> str:
    """The request as stored: redacted JSON body and query, bounded in size."""
    doc: dict = {}
    if body:
        try:
            doc["body"] = redact(json.loads(body))
        except (ValueError, UnicodeDecodeError):
            doc["body"] = f"<{len(body)} bytes, not JSON>"
    if query:
        pairs = [p.partition("=") for p in query.split("&") if p]
        doc["query"] = {k: (REDACTED if SECRET_KEY.search(k) else v) for k, _, v in pairs}
    text = json.dumps(doc, separators=(",", ":")) if doc else ""
    return text if len(text) <= MAX_STORED else text[:MAX_STORED - 14] + "...<truncated>"


def resource_of(route: str, path_params: dict, response: dict | None) -> tuple[str, str]:
    """(resource type, id) of a route template such as ``/api/v1/instances/{instance_id}/stop``."""
    parts = [p for p in route.removeprefix("/api/v1").split("/") if p]
    if not parts:
        return "", ""
    head = parts[0]
    rtype = RESOURCE_TYPES.get(head) or head.removesuffix("s").replace("-", "_")
    rid = ""
    if len(parts) > 1 and parts[1].startswith("{"):
        rid = str(path_params.get(parts[1].strip("{}"), ""))
    if not rid and response:
        rid = str(response.get("id") or response.get("host_id") or "")
    return rtype, rid


def route_template(scope) -> str | None:
    """The matched route as a template (``/api/v1/instances/{instance_id}``), or None.

    Rebuilt from the path and its parameters, because nested routers know only
    their own part of the template.
    """
    if scope.get("route") is None:
        return None
    by_value = {str(v): k for k, v in (scope.get("path_params") or {}).items()}
    return "/".join("{%s}" % by_value[seg] if seg in by_value else seg
                    for seg in scope["path"].split("/"))


def principal(request, actor_type: str, actor_id: str, name: str, caller=None) -> None:
    """Called by the auth dependencies: who this request acts as.

    ``caller`` is the ``tenancy.Principal`` of an API caller: the project filter
    of the services running for this request reads it from the actor.
    """
    actor = request.scope.get(SCOPE_KEY)
    if actor is None and caller is not None:
        raise RuntimeError("tenancy needs the audit middleware: no actor to carry the caller")
    if actor is not None:
        actor.type, actor.id, actor.name = actor_type, actor_id, name
        actor.principal = caller
        route = route_template(request.scope) or request.scope["path"]
        actor.cause = f"{request.scope['method']} {route}"[:256]


class AuditMiddleware:
    """Pure ASGI middleware (streams pass through untouched for reads)."""

    def __init__(self, app, db: Database, observe=None) -> None:
        self.app = app
        self.db = db
        self.observe = observe  # metrics hook: (method, route, status, seconds)
        self._group = GroupCommit(db)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method = scope["method"]
        actor = events.Actor(type="anonymous", cause=f"{method} {scope['path']}"[:256])
        scope[SCOPE_KEY] = actor
        token = events.set_actor(actor)
        started = time.perf_counter()
        status_holder: dict = {}
        try:
            if method not in MUTATING:
                async def send_status(message):
                    if message["type"] == "http.response.start":
                        status_holder["status"] = message["status"]
                    await send(message)
                await self.app(scope, receive, send_status)
            else:
                await self._mutation(scope, receive, send, actor, status_holder, started)
        finally:
            events.reset_actor(token)
            if self.observe is not None:
                route = route_template(scope) or "<unmatched>"
                self.observe(method, route, status_holder.get("status", 500),
                             time.perf_counter() - started)

    async def _mutation(self, scope, receive, send, actor, status_holder, started) -> None:
        body = bytearray()

        async def tee_receive():
            message = await receive()
            if message["type"] == "http.request" and len(body) < MAX_CAPTURE:
                body.extend(message.get("body", b"")[:MAX_CAPTURE - len(body)])
            return message

        held: list[dict] = []
        released = False

        async def hold_send(message):
            nonlocal released
            if released:
                return await send(message)
            held.append(message)
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                route = route_template(scope) or scope["path"]
                actor.cause = f"{scope['method']} {route}"[:256]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                released = True
                await self._record(scope, actor, status_holder.get("status", 500), body, held)
                for m in held:
                    await send(m)

        await self.app(scope, tee_receive, hold_send)
        if not released and held:  # the app ended without a final body message
            await self._record(scope, actor, status_holder.get("status", 500), body, held)
            for m in held:
                await send(m)

    async def _record(self, scope, actor, status: int, body: bytes, held: list[dict]) -> None:
        route = route_template(scope) or scope["path"]
        if route in NOT_AUDITED:
            return
        payload = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
        answer = None
        if payload[:1] == b"{" and len(payload) <= MAX_CAPTURE:
            try:
                answer = json.loads(payload)
            except ValueError:
                answer = None
        rtype, rid = resource_of(route, scope.get("path_params") or {},
                                 answer if status < 300 else None)
        error_code = str(answer.get("code", "")) if (answer and status >= 400) else ""
        request_id = str((scope.get("state") or {}).get("request_id", ""))
        row = Event(kind="api", created_at=datetime.now(UTC), resource_type=rtype[:32],
                    resource_id=rid[:64], actor_type=actor.type, actor_id=actor.id,
                    actor_name=actor.name[:128], method=scope["method"], route=route[:256],
                    status_code=status, error_code=error_code[:128],
                    request_id=request_id[:32],
                    request=redacted_request(bytes(body),
                                             scope.get("query_string", b"").decode("latin-1")))
        try:
            row.project_id = await run_in_threadpool(self._project_of, actor.principal, rid)
            await run_in_threadpool(self._write, row)
        except Exception:  # noqa: BLE001 - the answer must still reach the caller
            log.exception("could not record the audit event of %s %s", scope["method"], route)

    def _project_of(self, caller, resource_id: str) -> str | None:
        """The project an API event belongs to: the caller's, else its resource's."""
        if caller is not None and caller.project is not None:
            return caller.project
        from controller.tenancy import project_of_resource

        return project_of_resource(self.db, resource_id)

    def _write(self, row: Event) -> None:
        self._group.write(row)


class GroupCommit:
    """Commit concurrent requests' audit rows together: one transaction per batch.

    The first writer becomes the leader and commits whatever is pending,
    batch after batch, until nothing is; the others wait for the commit that
    carried their row. Under a storm of mutations this turns N audit
    transactions into a few (SQLite has one writer at a time).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._pending: list[list] = []
        self._leading = False

    def write(self, row: Event) -> None:
        slot = [row, threading.Event(), None]
        with self._lock:
            self._pending.append(slot)
            lead, self._leading = not self._leading, True
        if lead:
            self._lead()
        slot[1].wait()
        if slot[2] is not None:
            raise slot[2]

    def _lead(self) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending, []
                if not batch:
                    self._leading = False
                    return
            error = None
            try:
                with self.db.write() as session:
                    session.add_all(slot[0] for slot in batch)
                    events.count_added(session, "api", len(batch))
            except Exception as exc:  # noqa: BLE001 - handed to every waiter
                error = exc
            for slot in batch:
                slot[2] = error
                slot[1].set()
