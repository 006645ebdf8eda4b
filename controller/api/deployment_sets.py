"""Routes: /api/v1/deployment-sets"""

from fastapi import APIRouter, Query, Response, status

from controller.api.deps import AdminDep, DbDep, PageDep
from controller.schemas import deployment_sets as schema
from controller.services import deployment_sets as service

router = APIRouter(prefix="/deployment-sets", tags=["deployment-sets"])


@router.post("", response_model=schema.DeploymentSet, status_code=status.HTTP_201_CREATED,
             summary="Create a deployment set (strategy Availability: one member per host)")
def create_set(_: AdminDep, db: DbDep, req: schema.DeploymentSetCreate) -> schema.DeploymentSet:
    return service.create_set(db, req)


@router.get("", response_model=schema.DeploymentSetList, summary="List deployment sets")
def list_sets(_: AdminDep, db: DbDep, page: PageDep,
              name: str | None = Query(None, max_length=128, description="Only this exact name")
              ) -> schema.DeploymentSetList:
    return service.list_sets(db, page.max_results, page.next_token, name)


@router.get("/{deployment_set_id}", response_model=schema.DeploymentSet,
            summary="Show a deployment set and its members")
def get_set(_: AdminDep, db: DbDep, deployment_set_id: str) -> schema.DeploymentSet:
    return service.show_set(db, deployment_set_id)


@router.delete("/{deployment_set_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a deployment set (refused while it has instances)")
def delete_set(_: AdminDep, db: DbDep, deployment_set_id: str) -> Response:
    service.delete_set(db, deployment_set_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
