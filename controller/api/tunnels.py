"""Routes for tunnels to instances (see ``controller/services/tunnels.py``).

* ``WS /api/v1/instances/{id}/tunnel?port=22`` — the operator side (admin token or a
  member's API key; another project's instance is 4404 like a missing one);
* ``GET /api/v1/agent/tunnels?wait=`` — an agent's long-poll for tunnel requests;
* ``WS /api/v1/agent/tunnels/{tunnel_id}`` — the agent side (host token).

Both WebSockets carry the TCP stream as binary messages. A failure on the way
closes the operator's WebSocket with a 4xxx code and a reason: 4401 bad token,
4403 a read-only key,
4404 no such instance, 4409 the instance is not running, 4504 no agent came,
4502 the agent could not connect to the guest (its reason passed on).
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool

from agent.tunnel import TunnelRequest, TunnelRequests
from controller import ids
from controller.api.deps import HostDep, close_ws, host_of_token, ws_bearer
from controller.db import Database
from controller.errors import DomainError
from controller.models import Instance
from controller.services.access import resolve_principal
from controller.services.tunnels import CLAIM_TIMEOUT_S, TunnelBroker
from controller.tenancy import PROJECT_HEADER, Principal, visible_to

log = logging.getLogger(__name__)

router = APIRouter(tags=["tunnels"])
agent_router = APIRouter(prefix="/agent", tags=["agent"])

MAX_POLL_S = 60.0


def broker(app) -> TunnelBroker:
    if getattr(app.state, "tunnels", None) is None:
        app.state.tunnels = TunnelBroker()
    return app.state.tunnels


def _caller(db: Database, token: str, project: str | None) -> Principal | None:
    """The admin token's or API key's principal, or None when unknown or revoked."""
    if not token:
        return None
    try:
        return resolve_principal(db, token, project)
    except DomainError:
        return None


def _target(db: Database, instance_id: str, caller: Principal | None
            ) -> tuple[int, str, dict | None]:
    """(close code, reason, target) for an instance: where its port can be reached.

    Another project's instance answers exactly as a missing one.
    """
    with db.read() as session:
        inst = session.get(Instance, instance_id)
        if inst is None or not visible_to(inst, caller) or inst.status == "Deleted":
            return 4404, f"instance {instance_id} not found", None
        if inst.status != "Running" or not inst.nics:
            return 4409, f"instance {instance_id} is {inst.status}, not Running", None
        nic = min(inst.nics, key=lambda n: n.device_index)
        return 0, "", {"host_id": inst.host_id, "router_ns": ids.router_ns_name(inst.vpc_id),
                       "ip": nic.ip}


async def _pump(src: WebSocket, dst: WebSocket) -> tuple[int, str]:
    """Copy binary messages from ``src`` to ``dst`` until ``src`` closes; its close code."""
    while True:
        msg = await src.receive()
        if msg["type"] == "websocket.disconnect":
            return int(msg.get("code") or 1000), str(msg.get("reason") or "")
        data = msg.get("bytes")
        if data is None and msg.get("text") is not None:
            data = msg["text"].encode()
        if data:
            await dst.send_bytes(data)


@router.websocket("/instances/{instance_id}/tunnel")
async def instance_tunnel(websocket: WebSocket, instance_id: str, port: int = 22) -> None:
    """A TCP stream to ``port`` of the instance's primary private IP, from its VPC's router."""
    db: Database = websocket.app.state.db
    caller = await run_in_threadpool(_caller, db, ws_bearer(websocket),
                                     websocket.headers.get(PROJECT_HEADER))
    if caller is None:
        await close_ws(websocket, 4401, "a valid admin token or API key is required")
        return
    if caller.role == "read-only":  # a shell can change the instance: members and admins only
        await close_ws(websocket, 4403, "a read-only key cannot open a tunnel")
        return
    if not 1 <= port <= 65535:
        await close_ws(websocket, 4400, "port must be 1-65535")
        return
    code, reason, target = await run_in_threadpool(_target, db, instance_id, caller)
    if target is None:
        await close_ws(websocket, code, reason)
        return
    await websocket.accept()
    tunnels = broker(websocket.app)
    t = tunnels.open(target["host_id"], instance_id, target["router_ns"], target["ip"], port)
    log.info("tunnel %s to %s:%d (%s) requested", t.id, instance_id, port, target["host_id"])
    try:
        try:
            agent_ws: WebSocket = await asyncio.wait_for(asyncio.shield(t.agent), CLAIM_TIMEOUT_S)
        except (TimeoutError, asyncio.CancelledError):
            await close_ws(websocket, 4504, "the instance's agent did not pick the tunnel up")
            return
        up = asyncio.create_task(_pump(websocket, agent_ws))
        down = asyncio.create_task(_pump(agent_ws, websocket))
        finished, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        first = finished.pop()
        try:
            code, reason = first.result()
        except (WebSocketDisconnect, RuntimeError) as exc:
            code, reason = 1011, str(exc)
        if first is down:  # the agent side ended: pass its code on (4502: no connection)
            await close_ws(websocket, code if code >= 4000 else 1000, reason)
        else:
            await close_ws(agent_ws, 1000)
    finally:
        tunnels.close(t.id)
        log.info("tunnel %s closed", t.id)


@agent_router.get("/tunnels", response_model=TunnelRequests,
                  summary="Long-poll tunnel requests for this host (miniecs ssh)")
async def agent_tunnels(request: Request, host_id: HostDep,
                        wait: float = Query(25.0, ge=0, description="Seconds to wait (max 60)")
                        ) -> TunnelRequests:
    found = await broker(request.app).wait_pending(host_id, min(wait, MAX_POLL_S))
    return TunnelRequests(items=[TunnelRequest(**t.request()) for t in found])


@agent_router.websocket("/tunnels/{tunnel_id}")
async def agent_tunnel(websocket: WebSocket, tunnel_id: str) -> None:
    """The agent's end of a tunnel, already connected to the guest's port."""
    db: Database = websocket.app.state.db
    token = ws_bearer(websocket)
    host = await host_of_token(db, token) if token else None
    if host is None:
        await close_ws(websocket, 4401, "unknown host token")
        return
    t = broker(websocket.app).claim(host[0], tunnel_id)
    if t is None:
        await close_ws(websocket, 4404, "no such tunnel for this host")
        return
    await websocket.accept()
    if not t.agent.done():
        t.agent.set_result(websocket)
    await t.done.wait()
