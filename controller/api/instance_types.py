"""Routes: /api/v1/instance-types"""

from fastapi import APIRouter, status

from controller.api.deps import AdminDep, DbDep, PageDep
from controller.schemas import instance_types as schema
from controller.services import instance_types as service

router = APIRouter(prefix="/instance-types", tags=["instance-types"])


@router.get("", response_model=schema.InstanceTypeList, summary="List instance types")
def list_instance_types(_: AdminDep, db: DbDep, page: PageDep) -> schema.InstanceTypeList:
    return service.list_instance_types(db, page.max_results, page.next_token)


@router.post("", response_model=schema.InstanceType, status_code=status.HTTP_201_CREATED,
             summary="Add an instance type")
def create_instance_type(_: AdminDep, db: DbDep,
                         req: schema.InstanceTypeCreate) -> schema.InstanceType:
    return service.create_instance_type(db, req)
