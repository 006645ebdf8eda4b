"""HTTP calls to the controller (docs/agent-api.md). Tokens are never logged."""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

# httpx imports its command-line client (rich, pygments) when it can: a third of a second
# of every agent start, for nothing the agent uses. An absent module makes httpx skip it.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
import httpx  # noqa: E402

from agent.errors import Cancelled, PermanentError, TemporaryError
from agent.spec import HostEnrolled, HostRegistration, HostReport, HostSpec

log = logging.getLogger(__name__)

API = "/api/v1/agent"


class Unauthorized(TemporaryError):
    """The controller refused our token (re-keyed host?): enrol again."""


class ControllerUnreachable(TemporaryError):
    """The controller refused the connection: nothing listens (stopped or restarting)."""


class NoChannel(PermanentError):
    """The controller has no agent channel (an older one): long-poll and POST instead."""


class Channel:
    """The agent channel (``WS /api/v1/agent/channel``): specs arrive, reports leave.

    One thread receives (``receive``), any other may send (``send_report``): the
    websockets connection serialises sends and allows one receiver."""

    def __init__(self, ws) -> None:
        self._ws = ws

    def receive(self, timeout: float) -> HostSpec | None:
        """The next spec the controller pushed, or None when none came within ``timeout``."""
        from websockets.exceptions import ConnectionClosed

        try:
            data = self._ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        except ConnectionClosed as exc:
            code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
            if code == 4401:
                raise Unauthorized(f"controller closed the channel: {reason}") from None
            raise TemporaryError(f"channel closed ({code} {reason})".strip()) from None
        return HostSpec.model_validate_json(data)

    def send_report(self, report: HostReport) -> bool:
        """Send ``report``; False when the channel is closed (the caller POSTs it)."""
        from websockets.exceptions import ConnectionClosed

        try:
            self._ws.send(report.model_dump_json())
            return True
        except (ConnectionClosed, OSError):
            return False

    def close(self) -> None:
        self._ws.close()


def _refused(exc: BaseException) -> bool:
    """Whether a connect error was a refusal (nothing listening), not e.g. a TLS failure."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 8:
        if isinstance(cur, ConnectionRefusedError):
            return True
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    return "Connection refused" in str(exc)


class ControllerClient:
    def __init__(self, base_url: str, timeout_s: float = 10.0, ca_file: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.ca_file = ca_file
        self.token = ""
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s,
                                  verify=(ssl.create_default_context(cafile=str(ca_file))
                                          if ca_file else True),
                                  limits=httpx.Limits(max_connections=8))

    def close(self) -> None:
        self._http.close()

    def _headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token if token is not None else self.token}"}

    def _request(self, method: str, path: str, *, token: str | None = None,
                 timeout: float | None = None, headers_extra: dict[str, str] | None = None,
                 **kw) -> httpx.Response:
        try:
            r = self._http.request(method, path, headers={**self._headers(token),
                                                          **(headers_extra or {})},
                                   timeout=timeout or self.timeout_s, **kw)
        except httpx.ConnectError as exc:
            if not _refused(exc):
                raise TemporaryError(
                    f"controller {method} {path}: {type(exc).__name__}: {exc}") from None
            raise ControllerUnreachable(
                f"controller {method} {path}: {type(exc).__name__}: {exc}") from None
        except httpx.HTTPError as exc:
            raise TemporaryError(f"controller {method} {path}: {type(exc).__name__}: {exc}") from None
        if r.status_code == 401:
            raise Unauthorized(f"controller {method} {path}: 401 unauthorized")
        if r.status_code >= 500 or r.status_code == 429:
            raise TemporaryError(f"controller {method} {path}: {r.status_code} {r.text[:200]}")
        if r.status_code >= 400:
            raise PermanentError(f"controller {method} {path}: {r.status_code} {r.text[:300]}")
        return r

    def register(self, enrolment_token: str, registration: HostRegistration) -> HostEnrolled:
        r = self._request("POST", f"{API}/register", token=enrolment_token,
                          json=registration.model_dump(mode="json"))
        return HostEnrolled.model_validate(r.json())

    def get_spec(self, after: int, wait_s: float) -> HostSpec:
        """Long-poll the host spec (answers when generation > ``after`` or after ``wait_s``)."""
        r = self._request("GET", f"{API}/spec", params={"after": after, "wait": wait_s},
                          timeout=wait_s + self.timeout_s)
        return HostSpec.model_validate(r.json())

    def open_channel(self, after: int) -> Channel:
        """Open the agent channel; the controller pushes the spec whenever its generation
        differs from ``after`` (-1: at once), then from the one it sent last. ``NoChannel``
        from a controller without one."""
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        from agent.tunnel import ws_url

        url = ws_url(self.base_url, f"{API}/channel?after={after}")
        try:
            # entered as a context (websockets >= 17.1 warns otherwise); closed by Channel
            ws = connect(url, additional_headers=self._headers(), ssl=self.ssl_context(),
                         max_size=None, compression=None,
                         open_timeout=self.timeout_s).__enter__()
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 404:
                raise NoChannel("controller has no agent channel") from None
            if status == 401:
                raise Unauthorized("controller channel: 401 unauthorized") from None
            raise TemporaryError(f"controller channel: HTTP {status}") from None
        except ConnectionRefusedError as exc:
            raise ControllerUnreachable(f"controller channel: {exc}") from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise TemporaryError(f"controller channel: {type(exc).__name__}: {exc}") from None
        return Channel(ws)

    def ssl_context(self) -> ssl.SSLContext | None:
        """For a WebSocket to the controller: verified like the HTTP calls (None: http)."""
        if not self.base_url.startswith("https://"):
            return None
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else \
            ssl.create_default_context()

    def post_report(self, report: HostReport) -> None:
        self._request("POST", f"{API}/report", json=report.model_dump(mode="json"))

    def push_console(self, instance_id: str, offset: int, data: bytes) -> int:
        """Store ``data`` at ``offset`` of the instance's console log; returns the stored size."""
        r = self._request("POST", f"{API}/console/{instance_id}", params={"offset": offset},
                          content=data, headers_extra={"Content-Type": "application/octet-stream"})
        return int(r.json()["offset"])

    def upload(self, url: str, path: Path, stop: Callable[[], bool] | None = None) -> None:
        """PUT ``path`` to ``url`` with its sha256, which the controller verifies.

        Streamed with chunked transfer encoding (no Content-Length): the controller's
        body limit applies to declared lengths, and this route streams to its store.
        ``stop`` is asked between chunks; when it answers True the transfer is cut
        (``Cancelled``).
        """
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                sha.update(chunk)

        def body():
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    if stop is not None and stop():
                        raise Cancelled(f"upload to {url} cancelled")
                    yield chunk

        self._request("PUT", url, content=body(), timeout=max(self.timeout_s, 600.0),
                      headers_extra={"Content-Type": "application/octet-stream",
                                     "X-Content-SHA256": sha.hexdigest()})

    def download(self, url: str, part: Path, stop: Callable[[], bool] | None = None) -> None:
        """Fetch ``url`` into ``part``, resuming from its current size with an HTTP Range;
        ``stop`` is asked between chunks (True cuts the transfer: ``Cancelled``)."""
        offset = part.stat().st_size if part.exists() else 0
        headers = self._headers()
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            with self._http.stream("GET", url, headers=headers,
                                   timeout=httpx.Timeout(self.timeout_s, read=60.0)) as r:
                if r.status_code == 416:  # already complete
                    return
                if r.status_code == 401:
                    raise Unauthorized(f"image download {url}: 401 unauthorized")
                if r.status_code not in (200, 206):
                    err = TemporaryError if r.status_code >= 500 else PermanentError
                    raise err(f"image download {url}: {r.status_code}")
                mode = "ab" if r.status_code == 206 and offset else "wb"
                if offset and r.status_code == 200:
                    log.info("controller ignored Range; downloading %s from the start", url)
                with open(part, mode) as f:
                    for chunk in r.iter_bytes(1 << 20):
                        if stop is not None and stop():
                            raise Cancelled(f"download of {url} cancelled")
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
        except httpx.HTTPError as exc:
            raise TemporaryError(f"image download {url}: {type(exc).__name__}: {exc} "
                                 f"(will resume)") from None
