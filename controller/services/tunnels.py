"""Tunnels to instances through the controller (``miniecs ssh``).

The controller cannot reach an agent (agents pull), so a tunnel is met in the
middle: the CLI opens a WebSocket to the controller (admin token), the
controller queues a tunnel request for the instance's host, the agent's
tunnel long-poll (``GET /agent/tunnels``) hands it over, and the agent dials
back (``WS /agent/tunnels/{id}``, host token) after connecting to the guest's
port from inside the VPC's router namespace. The controller then relays bytes
between the two WebSockets.

The broker is in memory: one controller process holds the tunnels it brokers
(a restart drops open tunnels, which the CLI sees as a closed connection). A
request that no agent claims within ``CLAIM_TIMEOUT_S`` is dropped.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field

CLAIM_TIMEOUT_S = 20.0


@dataclass
class Tunnel:
    id: str
    host_id: str
    instance_id: str
    router_ns: str
    ip: str
    port: int
    created: float = field(default_factory=time.monotonic)
    claimed: bool = False
    agent: asyncio.Future = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def request(self) -> dict:
        return {"id": self.id, "instance_id": self.instance_id, "router_ns": self.router_ns,
                "ip": self.ip, "port": self.port}


class TunnelBroker:
    """Pending and open tunnels; every method runs on the app's event loop."""

    def __init__(self) -> None:
        self._tunnels: dict[str, Tunnel] = {}
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def open(self, host_id: str, instance_id: str, router_ns: str, ip: str, port: int) -> Tunnel:
        self._expire()
        t = Tunnel(id="tun-" + secrets.token_hex(10), host_id=host_id, instance_id=instance_id,
                   router_ns=router_ns, ip=ip, port=port)
        self._tunnels[t.id] = t
        for ev in self._waiters.get(host_id, ()):
            ev.set()
        return t

    def close(self, tunnel_id: str) -> None:
        t = self._tunnels.pop(tunnel_id, None)
        if t is not None:
            t.done.set()
            if not t.agent.done():
                t.agent.cancel()

    def pending(self, host_id: str) -> list[Tunnel]:
        self._expire()
        return [t for t in self._tunnels.values() if t.host_id == host_id and not t.claimed]

    async def wait_pending(self, host_id: str, timeout: float) -> list[Tunnel]:
        """The host's unclaimed requests, waiting up to ``timeout`` for one to appear."""
        found = self.pending(host_id)
        if found or timeout <= 0:
            return found
        ev = asyncio.Event()
        self._waiters.setdefault(host_id, set()).add(ev)
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(host_id)
            if waiters is not None:
                waiters.discard(ev)
                if not waiters:
                    del self._waiters[host_id]
        return self.pending(host_id)

    def claim(self, host_id: str, tunnel_id: str) -> Tunnel | None:
        t = self._tunnels.get(tunnel_id)
        if t is None or t.host_id != host_id or t.claimed:
            return None
        t.claimed = True
        return t

    def _expire(self) -> None:
        now = time.monotonic()
        for t in [t for t in self._tunnels.values()
                  if not t.claimed and now - t.created > CLAIM_TIMEOUT_S]:
            self.close(t.id)
