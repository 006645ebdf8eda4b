"""Routes: /api/v1/key-pairs"""

from fastapi import APIRouter, Response, status

from controller.api.deps import AdminDep, DbDep, PageDep
from controller.schemas import key_pairs as schema
from controller.services import key_pairs as service

router = APIRouter(prefix="/key-pairs", tags=["key-pairs"])


@router.post("", response_model=schema.KeyPairCreated, status_code=status.HTTP_201_CREATED,
             summary="Import a public key, or generate a pair (private key returned once)")
def create_key_pair(_: AdminDep, db: DbDep, req: schema.KeyPairCreate) -> schema.KeyPairCreated:
    return service.create_key_pair(db, req)


@router.get("", response_model=schema.KeyPairList, summary="List key pairs")
def list_key_pairs(_: AdminDep, db: DbDep, page: PageDep) -> schema.KeyPairList:
    return service.list_key_pairs(db, page.max_results, page.next_token)


@router.get("/{key_pair_id}", response_model=schema.KeyPair, summary="Show a key pair")
def get_key_pair(_: AdminDep, db: DbDep, key_pair_id: str) -> schema.KeyPair:
    return service.get_key_pair(db, key_pair_id)


@router.delete("/{key_pair_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a key pair (refused while an instance uses it)")
def delete_key_pair(_: AdminDep, db: DbDep, key_pair_id: str) -> Response:
    service.delete_key_pair(db, key_pair_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
