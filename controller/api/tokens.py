"""Routes: /api/v1/tokens (admin API tokens)"""

from fastapi import APIRouter, Response, status

from controller.api.deps import AdminDep, DbDep, PageDep
from controller.schemas import tokens as schema
from controller.services import api_tokens as service

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.post("", response_model=schema.ApiTokenCreated, status_code=status.HTTP_201_CREATED,
             summary="Create an admin API token (shown once)")
def create_token(_: AdminDep, db: DbDep, req: schema.ApiTokenCreate) -> schema.ApiTokenCreated:
    return service.create_api_token(db, req)


@router.get("", response_model=schema.ApiTokenList, summary="List API tokens (never the secret)")
def list_tokens(_: AdminDep, db: DbDep, page: PageDep) -> schema.ApiTokenList:
    return service.list_api_tokens(db, page.max_results, page.next_token)


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke a token")
def revoke_token(_: AdminDep, db: DbDep, token_id: str) -> Response:
    service.revoke_api_token(db, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
