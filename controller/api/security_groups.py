"""Routes: /api/v1/security-groups"""

from fastapi import APIRouter, Query, Response, status

from controller.api.deps import AdminDep, DbDep, PageDep
from controller.schemas import security_groups as schema
from controller.services import security_groups as service

router = APIRouter(prefix="/security-groups", tags=["security-groups"])


@router.post("", response_model=schema.SecurityGroup, status_code=status.HTTP_201_CREATED,
             summary="Create a security group in a VPC")
def create_security_group(_: AdminDep, db: DbDep,
                          req: schema.SecurityGroupCreate) -> schema.SecurityGroup:
    return service.create_security_group(db, req)


@router.get("", response_model=schema.SecurityGroupList, summary="List security groups")
def list_security_groups(_: AdminDep, db: DbDep, page: PageDep,
                         vpc_id: str | None = Query(None, description="Only this VPC",
                                                    examples=["vpc-2m4n6p8r0t2v4x6z8b0d"]),
                         ) -> schema.SecurityGroupList:
    return service.list_security_groups(db, page.max_results, page.next_token, vpc_id)


@router.get("/{security_group_id}", response_model=schema.SecurityGroup,
            summary="Show a security group")
def get_security_group(_: AdminDep, db: DbDep, security_group_id: str) -> schema.SecurityGroup:
    return service.get_security_group(db, security_group_id)


@router.delete("/{security_group_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a security group (refused while NICs are members)")
def delete_security_group(_: AdminDep, db: DbDep, security_group_id: str) -> Response:
    service.delete_security_group(db, security_group_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
