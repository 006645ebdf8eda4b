"""Admin API tokens and the one-time bootstrap (``miniecs-controller init``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import ids
from controller.db import Database
from controller.errors import NotFound
from controller.models import ApiToken, Setting, Zone
from controller.schemas import tokens as schema
from controller.services.common import paginate
from controller.services.instance_types import seed_instance_types
from controller.tokens import ADMIN_PREFIX, ENROLMENT_PREFIX, hash_token, new_token

ENROLMENT_KEY = "enrolment_token_hash"
INITIALISED_KEY = "initialised_at"


@dataclass(frozen=True)
class Bootstrap:
    admin_token: str
    enrolment_token: str


def is_initialised(session: Session) -> bool:
    return session.get(Setting, INITIALISED_KEY) is not None


def bootstrap(db: Database, default_zone: str | None) -> Bootstrap | None:
    """Seed instance types (and a zone), mint the first admin and enrolment tokens.

    Returns None when the database was already initialised: tokens are shown once.
    """
    with db.write() as session:
        if is_initialised(session):
            return None
        seed_instance_types(session)
        if default_zone and session.get(Zone, default_zone) is None:
            session.add(Zone(id=default_zone, description="created by init"))
        admin = new_token(ADMIN_PREFIX)
        session.add(ApiToken(id=ids.new_id("api_token"), name="admin", role="admin",
                             token_hash=hash_token(admin)))
        enrolment = new_token(ENROLMENT_PREFIX)
        session.add(Setting(key=ENROLMENT_KEY, value=hash_token(enrolment)))
        session.add(Setting(key=INITIALISED_KEY, value=datetime.now(UTC).isoformat()))
        return Bootstrap(admin, enrolment)


def rotate_enrolment_token(db: Database) -> str:
    token = new_token(ENROLMENT_PREFIX)
    with db.write() as session:
        session.merge(Setting(key=ENROLMENT_KEY, value=hash_token(token)))
    return token


def create_api_token(db: Database, req: schema.ApiTokenCreate) -> schema.ApiTokenCreated:
    token = new_token(ADMIN_PREFIX)
    with db.write() as session:
        row = ApiToken(id=ids.new_id("api_token"), name=req.name, role="admin",
                       token_hash=hash_token(token))
        session.add(row)
        session.flush()
        return schema.ApiTokenCreated(**schema.ApiToken.model_validate(row).model_dump(),
                                      token=token)


def list_api_tokens(db: Database, max_results: int, next_token: str | None) -> schema.ApiTokenList:
    with db.read() as session:
        rows, token = paginate(session, select(ApiToken), ApiToken, max_results, next_token)
        return schema.ApiTokenList(items=[schema.ApiToken.model_validate(t) for t in rows],
                                   next_token=token)


def revoke_api_token(db: Database, token_id: str) -> None:
    revoke_row(db, token_id, NotFound("InvalidTokenId.NotFound",
                                      f"token {token_id!r} does not exist", "token_id"))


def revoke_row(db: Database, token_id: str, missing: NotFound) -> None:
    """Revoke an admin token or API key (one table); ``missing`` when there is no such row.
    Revoking twice keeps the first time."""
    with db.write() as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise missing
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
