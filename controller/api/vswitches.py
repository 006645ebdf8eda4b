"""Routes: /api/v1/vswitches"""

from fastapi import APIRouter, Query, Response, status

from controller.api.deps import AdminDep, DbDep, PageDep
from controller.schemas import vswitches as schema
from controller.services import vswitches as service

router = APIRouter(prefix="/vswitches", tags=["vswitches"])


@router.post("", response_model=schema.VSwitch, status_code=status.HTTP_201_CREATED,
             summary="Create a vSwitch in a VPC and zone")
def create_vswitch(_: AdminDep, db: DbDep, req: schema.VSwitchCreate) -> schema.VSwitch:
    return service.create_vswitch(db, req)


@router.get("", response_model=schema.VSwitchList, summary="List vSwitches")
def list_vswitches(_: AdminDep, db: DbDep, page: PageDep,
                   vpc_id: str | None = Query(None, description="Only this VPC",
                                              examples=["vpc-2m4n6p8r0t2v4x6z8b0d"]),
                   zone_id: str | None = Query(None, description="Only this zone",
                                               examples=["zone-a"])) -> schema.VSwitchList:
    return service.list_vswitches(db, page.max_results, page.next_token, vpc_id, zone_id)


@router.patch("/{vswitch_id}", response_model=schema.VSwitch,
              summary="Change a vSwitch (outbound NAT)")
def update_vswitch(_: AdminDep, db: DbDep, vswitch_id: str,
                   req: schema.VSwitchUpdate) -> schema.VSwitch:
    return service.update_vswitch(db, vswitch_id, req)


@router.get("/{vswitch_id}", response_model=schema.VSwitch, summary="Show a vSwitch")
def get_vswitch(_: AdminDep, db: DbDep, vswitch_id: str) -> schema.VSwitch:
    return service.get_vswitch(db, vswitch_id)


@router.delete("/{vswitch_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a vSwitch (refused while NICs use it)")
def delete_vswitch(_: AdminDep, db: DbDep, vswitch_id: str) -> Response:
    service.delete_vswitch(db, vswitch_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
