"""Routes: /api/v1/zones"""

from fastapi import APIRouter, status

from controller.api.deps import AdminDep, DbDep, PageDep
from controller.schemas import zones as schema
from controller.services import zones as service

router = APIRouter(prefix="/zones", tags=["zones"])


@router.get("", response_model=schema.ZoneList, summary="List zones")
def list_zones(_: AdminDep, db: DbDep, page: PageDep) -> schema.ZoneList:
    return service.list_zones(db, page.max_results, page.next_token)


@router.post("", response_model=schema.Zone, status_code=status.HTTP_201_CREATED,
             summary="Create a zone")
def create_zone(_: AdminDep, db: DbDep, req: schema.ZoneCreate) -> schema.Zone:
    return service.create_zone(db, req)
