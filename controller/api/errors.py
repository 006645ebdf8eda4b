"""The one place where errors become HTTP answers of the ``ErrorBody`` shape."""

from __future__ import annotations

import logging
import secrets

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from controller.errors import DomainError
from controller.schemas.common import ErrorBody

log = logging.getLogger(__name__)


# Every API route can answer these; documented once, on every route.
ERROR_RESPONSES: dict[int | str, dict] = {
    400: {"model": ErrorBody, "description": "Bad input; `field` names the parameter"},
    401: {"model": ErrorBody, "description": "No token, or a token this controller does not know"},
    403: {"model": ErrorBody, "description": "Refused (deletion protection, another host's object)"},
    404: {"model": ErrorBody, "description": "No such resource"},
    409: {"model": ErrorBody, "description": "Conflicts with the resource's state or a sibling"},
    413: {"model": ErrorBody, "description": "Request body too large"},
}


def request_id(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = "req-" + secrets.token_hex(6)
    return rid


def _body(request: Request, status: int, code: str, message: str, field: str | None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, headers=headers, content={
        "code": code, "message": message, "field": field, "request_id": request_id(request)})


def _field_of(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def _camel(field: str | None) -> str:
    if not field:
        return "Body"
    leaf = next((p for p in reversed(field.split(".")) if not p.isdigit()), field)
    return "".join(w.capitalize() for w in leaf.split("_"))


def validation_code(error: dict) -> str:
    """ECS-style code for one pydantic error: our own codes pass through."""
    kind = error.get("type", "")
    field = _field_of(tuple(error.get("loc", ())))
    if "." in kind and kind[0].isupper():
        return kind
    if kind == "missing":
        return f"MissingParameter.{_camel(field)}"
    if kind in ("json_invalid", "model_attributes_type", "dict_type") and not field:
        return "InvalidParameter.MalformedBody"
    if kind == "extra_forbidden":
        return f"InvalidParameter.Unknown{_camel(field)}"
    return f"InvalidParameter.{_camel(field)}"


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _body(request, exc.status, exc.code, exc.message, exc.field, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"type": "invalid", "loc": (), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        message = first.get("msg", "invalid request")
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem(s))"
        return _body(request, 400, validation_code(first), message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed", 413: "RequestTooLarge"}.get(
            exc.status_code, f"Http{exc.status_code}")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # RFC 9110: Allow lists every method of the path, across all its routes
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return _body(request, exc.status_code, code, str(exc.detail), None, headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        log.exception("request %s failed", rid)
        return _body(request, 500, "InternalError", f"internal error; see request {rid}", None)
