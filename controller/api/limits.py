"""Request body limit: 413 ``RequestTooLarge`` whether or not the client sent a Content-Length.

A ``Content-Length`` over the limit is answered at once, before the body is
read; a body without one (chunked transfer) is counted as it arrives and
refused as soon as it passes the limit, so no route ever buffers more than
``max_bytes`` of a request. Streaming uploads that check what they receive
themselves (an agent's image export) are exempt.
"""

from __future__ import annotations

import re

from fastapi import HTTPException  # raised inside the route's body read; answered as 413
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.api.errors import request_id

# (method, path) of routes that stream their body to disk and verify it (sha256, qemu-img)
STREAMED = ((re.compile(r"^/api/v1/agent/images/[^/]+/data$"), "PUT"),
            # a cold migration's disk files (sha256 checked against the source's report)
            (re.compile(r"^/api/v1/agent/migrations/[^/]+/disks/[^/]+$"), "PUT"))


def _too_large(max_bytes: int) -> str:
    return f"request bodies are limited to {max_bytes} bytes"


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _exempt(self, scope: Scope) -> bool:
        return any(rx.match(scope.get("path", "")) and scope.get("method") == method
                   for rx, method in STREAMED)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"").decode("latin-1")
        if length and (not length.strip().isdigit() or int(length) > self.max_bytes):
            rid = request_id(Request(scope))  # the same id the X-Request-Id header gets
            bad = not length.strip().isdigit()
            response = JSONResponse(
                status_code=400 if bad else 413,
                content={"code": "InvalidParameter.ContentLength" if bad else "RequestTooLarge",
                         "message": "malformed Content-Length" if bad
                         else _too_large(self.max_bytes),
                         "field": None, "request_id": rid})
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # raised inside the route's body read: the app's handler answers 413
                    raise HTTPException(413, _too_large(self.max_bytes))
            return message

        await self.app(scope, limited, send)
