"""Tunnels to guests for ``miniecs ssh``: the agent's end.

The controller cannot dial an agent, so a thread long-polls
``GET /api/v1/agent/tunnels`` for requests. For each one the agent checks
that the target is a port of a VPC it serves (a router namespace in its
current spec, an address of a port on this host), connects to it from inside
that router namespace (the socket is made by a short thread that switches
into the namespace; the connected socket stays there), and dials back
``WS /api/v1/agent/tunnels/{id}`` with its host token; then bytes flow both
ways until either end closes. A refused target still dials back and closes
with 4502 and the reason, so the operator sees why at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agent.errors import AgentError
from agent.spec import ROUTER_NS_PREFIX, HostSpec

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
_CLONE_NEWNET = 0x40000000


class TunnelRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(description="Tunnel id", examples=["tun-4c6e8g0j2l4n6q8s0u2w"])
    instance_id: str = Field(description="Instance", examples=["i-9f3b1c7d2e4a6b8c0d1e"])
    router_ns: str = Field(description="Router namespace to connect from",
                           examples=["mrt-2m4n6p8r0t2v4x6z"])
    ip: str = Field(description="Private IP of the instance", examples=["10.0.1.5"])
    port: int = Field(description="TCP port", examples=[22])


class TunnelRequests(BaseModel):
    items: list[TunnelRequest] = Field(default_factory=list,
                                       description="Tunnel requests waiting for this host",
                                       examples=[[]])


def ws_url(controller_url: str, path: str) -> str:
    base = controller_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://"):]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://"):]
    return base + path


def connect_in_netns(ns_path: str | Path, ip: str, port: int,
                     timeout: float = CONNECT_TIMEOUT_S) -> socket.socket:
    """A TCP connection to ip:port made from inside the network namespace at ``ns_path``."""
    result: dict[str, object] = {}

    def work() -> None:
        try:
            from agent import netlink  # here: the controller imports this module's types only

            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            fd = os.open(netlink.open_path(ns_path), os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed", str(ns_path))
            finally:
                os.close(fd)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            result["error"] = exc
            return
        result["sock"] = s  # created in the namespace: it stays there

    t = threading.Thread(target=work, name="netns-socket")
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    sock: socket.socket = result["sock"]  # type: ignore[assignment]
    try:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        sock.close()
        raise
    return sock


def check_target(spec: HostSpec | None, req: TunnelRequest) -> str | None:
    """Why the agent refuses ``req`` (None: it may connect)."""
    if spec is None:
        return "the agent has no spec yet"
    if not req.router_ns.startswith(ROUTER_NS_PREFIX):
        return f"{req.router_ns!r} is not a router namespace"
    nets = [n for n in spec.networks if n.router_ns == req.router_ns]
    if not nets:
        return f"no VPC with router namespace {req.router_ns} on this host"
    local = {p.ip for n in nets for p in n.ports if p.vtep is None}
    if req.ip not in local:
        return f"{req.ip} is not a port of that VPC on this host"
    if not 1 <= req.port <= 65535:
        return f"bad port {req.port}"
    return None


def _pump_socket_to_ws(sock: socket.socket, ws) -> None:
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            ws.send(data)
    except Exception:  # noqa: BLE001 - either end went away
        pass
    finally:
        try:
            ws.close()
        except Exception:  # noqa: BLE001
            pass


def relay(sock: socket.socket, ws) -> None:
    """Copy between a connected socket and a sync websockets connection until one ends."""
    t = threading.Thread(target=_pump_socket_to_ws, args=(sock, ws), name="tunnel-up", daemon=True)
    t.start()
    try:
        for msg in ws:
            sock.sendall(msg if isinstance(msg, bytes) else msg.encode())
    except Exception:  # noqa: BLE001
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        t.join(timeout=5)


class TunnelService:
    """The agent's tunnel thread: long-poll requests, serve each in its own thread."""

    def __init__(self, client, ns_path: Callable[[str], Path],
                 spec: Callable[[], HostSpec | None], stop: threading.Event,
                 wait_s: float = 25.0) -> None:
        self.client = client
        self.ns_path = ns_path
        self.spec = spec
        self.stop = stop
        self.wait_s = wait_s
        self._seen: set[str] = set()

    def poll(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                r = self.client._request("GET", "/api/v1/agent/tunnels",
                                         params={"wait": self.wait_s},
                                         timeout=self.wait_s + self.client.timeout_s)
                reqs = TunnelRequests.model_validate(r.json()).items
                backoff = 0.5
            except AgentError as exc:
                log.debug("tunnel poll failed: %s", exc)
                self.stop.wait(backoff)
                backoff = min(10.0, backoff * 2)
                continue
            for req in reqs:
                if req.id in self._seen:
                    continue
                self._seen.add(req.id)
                threading.Thread(target=self.serve, args=(req,), name=f"tunnel-{req.id}",
                                 daemon=True).start()
            if len(self._seen) > 1000:
                self._seen = {r.id for r in reqs}

    def serve(self, req: TunnelRequest) -> None:
        from websockets.sync.client import connect

        why = check_target(self.spec(), req)
        sock = None
        if why is None:
            try:
                sock = connect_in_netns(self.ns_path(req.router_ns), req.ip, req.port)
            except (OSError, ValueError) as exc:
                why = f"cannot connect to {req.ip}:{req.port}: {exc}"
        url = ws_url(self.client.base_url, f"/api/v1/agent/tunnels/{req.id}")
        try:
            # entered as a context (websockets >= 17.1 warns otherwise); relay closes it
            ws = connect(url, additional_headers={"Authorization": f"Bearer {self.client.token}"},
                         ssl=self.client.ssl_context(), max_size=None, open_timeout=10,
                         compression=None).__enter__()
        except Exception as exc:  # noqa: BLE001
            log.warning("tunnel %s: cannot dial back: %s", req.id, exc)
            if sock is not None:
                sock.close()
            return
        if sock is None:
            log.info("tunnel %s to %s refused: %s", req.id, req.instance_id, why)
            ws.close(code=4502, reason=(why or "")[:120])
            return
        log.info("tunnel %s to %s (%s:%d) open", req.id, req.instance_id, req.ip, req.port)
        relay(sock, ws)
        log.info("tunnel %s closed", req.id)
