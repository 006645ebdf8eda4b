"""``GET /metrics``: Prometheus text exposition (outside /api/v1).

Authentication: a bearer token, either an admin API token or the scrape-only
``MINIECS_METRICS_TOKEN``; or none at all on the separate listener that
``MINIECS_METRICS_LISTEN`` opens (see docs/operations.md, Monitoring).
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.api.deps import DbDep, SettingsDep, bearer_token, require_admin
from controller.errors import Forbidden, Unauthorized
from controller.schemas.common import ErrorBody

router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus metrics (bearer: admin or metrics token)",
            response_class=Response, responses={
                200: {"content": {"text/plain": {}}},
                401: {"model": ErrorBody, "description": "Not an admin or metrics token"}})
async def metrics(request: Request, db: DbDep, settings: SettingsDep) -> Response:
    token = bearer_token(request)
    expected = settings.metrics_token
    if not (expected and hmac.compare_digest(token.encode(), expected.encode())):
        try:
            await run_in_threadpool(require_admin, request, db)
        except (Unauthorized, Forbidden):  # Forbidden: a tenant's API key
            raise Unauthorized("a valid admin or metrics token is required") from None
    body = await run_in_threadpool(generate_latest, request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
