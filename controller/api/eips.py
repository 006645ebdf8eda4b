"""Routes: /api/v1/eips"""

from fastapi import APIRouter, Response, status

from controller.api.deps import AdminDep, DbDep, PageDep, SettingsDep
from controller.schemas import eips as schema
from controller.services import eips as service

router = APIRouter(prefix="/eips", tags=["eips"])


@router.post("", response_model=schema.Eip, status_code=status.HTTP_201_CREATED,
             summary="Allocate an EIP from the region's pool")
def allocate_eip(_: AdminDep, db: DbDep, settings: SettingsDep,
                 req: schema.EipAllocate) -> schema.Eip:
    return service.allocate_eip(db, settings, req)


@router.get("", response_model=schema.EipList, summary="List EIPs")
def list_eips(_: AdminDep, db: DbDep, page: PageDep) -> schema.EipList:
    return service.list_eips(db, page.max_results, page.next_token)


@router.get("/{eip_id}", response_model=schema.Eip, summary="Show an EIP")
def get_eip(_: AdminDep, db: DbDep, eip_id: str) -> schema.Eip:
    return service.get_eip(db, eip_id)


@router.post("/{eip_id}/associate", response_model=schema.Eip,
             summary="Map the EIP 1:1 onto an instance's private IP")
def associate_eip(_: AdminDep, db: DbDep, eip_id: str, req: schema.EipAssociate) -> schema.Eip:
    return service.associate_eip(db, eip_id, req)


@router.post("/{eip_id}/disassociate", response_model=schema.Eip,
             summary="Remove the EIP's mapping")
def disassociate_eip(_: AdminDep, db: DbDep, eip_id: str) -> schema.Eip:
    return service.disassociate_eip(db, eip_id)


@router.delete("/{eip_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Release an EIP back to the pool (refused while associated)")
def release_eip(_: AdminDep, db: DbDep, eip_id: str) -> Response:
    service.release_eip(db, eip_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
