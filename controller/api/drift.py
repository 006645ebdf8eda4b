"""Routes: /api/v1/status — the drift view (desired versus observed, per resource)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from controller.api.deps import AdminDep, DbDep
from controller.schemas import drift as schema
from controller.services import drift as service

router = APIRouter(tags=["status"])


@router.get("/status", response_model=schema.DriftView,
            summary="Drift view: what is not yet as asked (desired vs observed, last converged, "
                    "agent errors)")
def drift_view(
    _: AdminDep, db: DbDep,
    all_: Annotated[bool, Query(alias="all", description="Every host and instance, converged "
                                "or not (default: only what is not yet as asked)")] = False,
    host_id: Annotated[str | None, Query(max_length=64, description="Only this host")] = None,
    resource_type: Annotated[str | None, Query(max_length=32, description="Only this type",
                                               examples=["instance"])] = None,
    max_results: Annotated[int, Query(ge=1, le=5000, description="At most this many items")]
    = 500,
) -> schema.DriftView:
    return service.drift_view(db, include_all=all_, host_id=host_id,
                              resource_type=resource_type, max_results=max_results)
