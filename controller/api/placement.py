"""Routes: /api/v1/placement"""

from fastapi import APIRouter

from controller.api.deps import AdminDep, DbDep, SettingsDep
from controller.schemas import placement as schema
from controller.services import placement_explain as service

router = APIRouter(prefix="/placement", tags=["placement"])


@router.post("/explain", response_model=schema.PlacementExplanation,
             summary="Explain where an instance create body would be placed: every host, "
                     "with why it was filtered out or how it scored (creates nothing)")
def explain(_: AdminDep, db: DbDep, settings: SettingsDep,
            req: schema.PlacementQuery) -> schema.PlacementExplanation:
    return service.explain(db, settings, req)
