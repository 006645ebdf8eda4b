"""Routes: /api/v1/vpcs"""

from fastapi import APIRouter, Response, status

from controller.api.deps import AdminDep, DbDep, PageDep
from controller.schemas import vpcs as schema
from controller.services import vpcs as service

router = APIRouter(prefix="/vpcs", tags=["vpcs"])


@router.post("", response_model=schema.Vpc, status_code=status.HTTP_201_CREATED,
             summary="Create a VPC")
def create_vpc(_: AdminDep, db: DbDep, req: schema.VpcCreate) -> schema.Vpc:
    return service.create_vpc(db, req)


@router.get("", response_model=schema.VpcList, summary="List VPCs")
def list_vpcs(_: AdminDep, db: DbDep, page: PageDep) -> schema.VpcList:
    return service.list_vpcs(db, page.max_results, page.next_token)


@router.get("/{vpc_id}", response_model=schema.Vpc, summary="Show a VPC")
def get_vpc(_: AdminDep, db: DbDep, vpc_id: str) -> schema.Vpc:
    return service.get_vpc(db, vpc_id)


@router.delete("/{vpc_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a VPC (refused while it has vSwitches or security groups)")
def delete_vpc(_: AdminDep, db: DbDep, vpc_id: str) -> Response:
    service.delete_vpc(db, vpc_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
