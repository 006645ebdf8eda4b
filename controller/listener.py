"""The API's listening sockets, bound before the controller loads its application.

``serve`` binds and listens first, then imports FastAPI, SQLAlchemy and the
routes, checks the migrations and builds the app (1.5–2 s of CPU), and only
then hands the sockets to uvicorn. A client that connects meanwhile (an agent
resuming its long-poll, the CLI, a health check) is queued by the kernel in the
listen backlog and answered once the application is up, instead of being
refused and falling into its retry back-off — the same thing systemd socket
activation gives a service. Nothing is read from a queued connection before the
application is ready, so nothing is answered early.
"""

from __future__ import annotations

import socket

BACKLOG = 2048  # uvicorn's default: room for every agent of a large region at once


class ListenError(Exception):
    """The address cannot be listened on (in use, not local, not resolvable)."""


def bind_listeners(host: str, port: int, backlog: int = BACKLOG) -> list[socket.socket]:
    """Listening TCP sockets for ``host:port`` (every address ``host`` resolves to, as
    asyncio's ``create_server`` would bind them); raises ``ListenError``."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot resolve {host!r}: {exc}") from None
    sockets: list[socket.socket] = []
    seen: set[tuple] = set()
    try:
        for family, kind, proto, _name, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio: the IPv4 address gets its own socket
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(backlog)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sockets
