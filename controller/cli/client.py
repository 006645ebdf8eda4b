"""A small HTTP client for the controller's ``/api/v1``: the profile's endpoint and token in,
the API's JSON out, and every failure turned into one clean ``CliError`` line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ssl

import httpx

from controller.cli.errors import CliError
from controller.cli.profiles import Profile

API_PREFIX = "/api/v1"

# Exit codes beside click's 2 (usage): scripts can tell "the API said no" from
# "no controller there" from "wrong token".
EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 3
EXIT_UNAUTHORIZED = 4


class ApiError(CliError):
    """The controller answered with an error body ``{"code", "message", "field"}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        text = f"{code}: {message}" + (f" (field: {field})" if field else "")
        super().__init__(text, EXIT_UNAUTHORIZED if status == 401 else EXIT_API_ERROR)
        self.status = status
        self.code = code
        self.api_message = message
        self.field = field


def api_base_url(endpoint: str) -> str:
    """``http://h:p`` (or ``http://h:p/api/v1``) → ``http://h:p/api/v1``."""
    base = endpoint.rstrip("/")
    return base if base.endswith(API_PREFIX) else base + API_PREFIX


class ApiClient:
    """Wraps ``httpx.Client`` with the profile's endpoint, token and CA file."""

    def __init__(self, profile: Profile, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not profile.endpoint:
            raise CliError(f"profile {profile.name!r} has no endpoint; run `miniecs configure`")
        if not profile.token:
            raise CliError(f"profile {profile.name!r} has no token; run `miniecs configure`")
        self.profile = profile
        self.endpoint = profile.endpoint.rstrip("/")
        self._http = httpx.Client(
            base_url=api_base_url(profile.endpoint), timeout=timeout, transport=transport,
            verify=ssl.create_default_context(cafile=profile.ca_file) if profile.ca_file else True,
            headers={"Authorization": f"Bearer {profile.token}",
                     "User-Agent": "miniecs-cli/0.1",
                     **({"X-Miniecs-Project": profile.project} if profile.project else {})})

    def close(self) -> None:
        self._http.close()

    # -- requests ----------------------------------------------------------------------------
    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None) -> httpx.Response:
        """Send one request; a non-2xx answer or a transport failure raises ``CliError``."""
        if params:
            params = {k: _param(v) for k, v in params.items() if v is not None}
        try:
            response = self._http.request(method, path, json=json, params=params or None)
        except httpx.ConnectError as exc:
            raise CliError(f"cannot reach controller at {self.endpoint} ({_reason(exc)})",
                           EXIT_UNREACHABLE) from None
        except httpx.TimeoutException:
            raise CliError(f"controller at {self.endpoint} did not answer in time",
                           EXIT_UNREACHABLE) from None
        except httpx.TransportError as exc:
            raise CliError(f"talking to controller at {self.endpoint} failed: {_reason(exc)}",
                           EXIT_UNREACHABLE) from None
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return _json(self.request("GET", path, params=params))

    def post(self, path: str, body: Any = None) -> Any:
        return _json(self.request("POST", path, json=body))

    def patch(self, path: str, body: Any) -> Any:
        return _json(self.request("PATCH", path, json=body))

    def delete(self, path: str, **params: Any) -> Any:
        return _json(self.request("DELETE", path, params=params))

    def list_all(self, path: str, **params: Any) -> dict:
        """Every page of a list, merged: ``{"items": [...], "next_token": null}``."""
        items: list = []
        token = None
        while True:
            page = self.get(path, **params, next_token=token)
            items.extend(page.get("items", []))
            token = page.get("next_token")
            if not token:
                return {"items": items, "next_token": None}

    def stream(self, path: str, *, params: dict[str, Any] | None = None) -> Iterator[bytes]:
        """GET a streaming answer and yield its body as it arrives (no read timeout)."""
        try:
            with self._http.stream("GET", path, params=params,
                                   timeout=httpx.Timeout(30.0, read=None)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response)
                yield from response.iter_raw()  # each piece as it arrives
        except httpx.ConnectError as exc:
            raise CliError(f"cannot reach controller at {self.endpoint} ({_reason(exc)})",
                           EXIT_UNREACHABLE) from None
        except httpx.TransportError as exc:
            raise CliError(f"stream from controller at {self.endpoint} broke: {_reason(exc)}",
                           EXIT_UNREACHABLE) from None

    # -- errors ------------------------------------------------------------------------------
    def _error(self, response: httpx.Response) -> CliError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 401:
            detail = f" ({body['message']})" if isinstance(body, dict) and body.get("message") else ""
            return ApiError(401, "InvalidToken",
                            f"token refused by controller at {self.endpoint}{detail}; "
                            f"check profile {self.profile.name!r} (`miniecs configure`)")
        if isinstance(body, dict) and "code" in body:
            return ApiError(response.status_code, str(body["code"]),
                            str(body.get("message", "")), body.get("field"))
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return ApiError(response.status_code, f"HTTP{response.status_code}", text)


def _json(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise CliError(f"controller answered {response.request.url.path} with non-JSON "
                       f"({response.headers.get('content-type', 'no content type')})") from None


def _param(value: Any) -> Any:
    return ("true" if value else "false") if isinstance(value, bool) else value


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.split("] ")[-1] if text.startswith("[Errno") else text
