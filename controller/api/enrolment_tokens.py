"""Routes: /api/v1/enrolment-tokens (one-time host enrolment tokens)"""

from fastapi import APIRouter, status

from controller.api.deps import AdminDep, DbDep
from controller.schemas import enrolment_tokens as schema
from controller.services import enrolment_tokens as service

router = APIRouter(prefix="/enrolment-tokens", tags=["hosts"])


@router.post("", response_model=schema.EnrolmentTokenCreated, status_code=status.HTTP_201_CREATED,
             summary="Mint a one-time enrolment token for one host name (shown once)")
def create_enrolment_token(_: AdminDep, db: DbDep, req: schema.EnrolmentTokenCreate
                           ) -> schema.EnrolmentTokenCreated:
    return service.mint(db, req)
