"""Routes: /api/v1/projects, /api/v1/users, /api/v1/api-keys (tenancy).

Who may call what is decided in ``controller.tenancy.check_route``: tenants may
read their own project (quota and usage); everything else here is admin only.
"""

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from controller.api.deps import AdminDep, DbDep, PageDep
from controller.schemas import projects as schema
from controller.services import projects as service
from controller.tenancy import current_principal

router = APIRouter(prefix="/projects", tags=["projects"])
users_router = APIRouter(prefix="/users", tags=["projects"])
keys_router = APIRouter(prefix="/api-keys", tags=["projects"])

Filter = Annotated[str | None, Query(max_length=64, description="Only this one's")]


@router.post("", response_model=schema.Project, status_code=status.HTTP_201_CREATED,
             summary="Create a project (admin)")
def create_project(_: AdminDep, db: DbDep, req: schema.ProjectCreate) -> schema.Project:
    return service.create_project(db, req)


@router.get("", response_model=schema.ProjectList,
            summary="List projects (a tenant key sees its own)")
def list_projects(_: AdminDep, db: DbDep, page: PageDep) -> schema.ProjectList:
    return service.list_projects(db, current_principal(), page.max_results, page.next_token)


@router.get("/{project_id}", response_model=schema.Project,
            summary="Show a project with its quota and usage")
def get_project(_: AdminDep, db: DbDep, project_id: str) -> schema.Project:
    return service.get_project(db, project_id, current_principal())


@router.put("/{project_id}/quota", response_model=schema.Project,
            summary="Set quota limits (admin; only the fields sent change)")
def set_quota(_: AdminDep, db: DbDep, project_id: str, req: schema.QuotaUpdate) -> schema.Project:
    return service.set_quota(db, project_id, req)


@router.delete("/{project_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete an empty project (admin)")
def delete_project(_: AdminDep, db: DbDep, project_id: str) -> Response:
    service.delete_project(db, project_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@users_router.post("", response_model=schema.User, status_code=status.HTTP_201_CREATED,
                   summary="Create a user in a project (admin)")
def create_user(_: AdminDep, db: DbDep, req: schema.UserCreate) -> schema.User:
    return service.create_user(db, req)


@users_router.get("", response_model=schema.UserList, summary="List users (admin)")
def list_users(_: AdminDep, db: DbDep, page: PageDep,
               project_id: Filter = None) -> schema.UserList:
    return service.list_users(db, project_id, page.max_results, page.next_token)


@users_router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT,
                     summary="Delete a user and revoke its keys (admin)")
def delete_user(_: AdminDep, db: DbDep, user_id: str) -> Response:
    service.delete_user(db, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@keys_router.post("", response_model=schema.ApiKeyCreated, status_code=status.HTTP_201_CREATED,
                  summary="Create an API key for a user (admin; the key is shown once)")
def create_api_key(_: AdminDep, db: DbDep, req: schema.ApiKeyCreate) -> schema.ApiKeyCreated:
    return service.create_api_key(db, req)


@keys_router.get("", response_model=schema.ApiKeyList, summary="List API keys (never the key)")
def list_api_keys(_: AdminDep, db: DbDep, page: PageDep, user_id: Filter = None,
                  project_id: Filter = None) -> schema.ApiKeyList:
    return service.list_api_keys(db, user_id, project_id, page.max_results, page.next_token)


@keys_router.delete("/{api_key_id}", status_code=status.HTTP_204_NO_CONTENT,
                    summary="Revoke an API key (admin)")
def revoke_api_key(_: AdminDep, db: DbDep, api_key_id: str) -> Response:
    service.revoke_api_key(db, api_key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
