"""One-time enrolment tokens: minted for one host name, consumed by that host's enrolment.

The region's enrolment token (``init``, ``enrolment-token rotate``) stays as it
is; these are what an installer hands to a single agent, so a leaked agent
config enrols nothing once its host has enrolled. Stored in ``settings`` (key
``enrol1:`` + a prefix of the token's hash; value JSON with the full hash, the
host name and the expiry), so no schema change is needed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from controller.db import Database
from controller.errors import InvalidParameter, Unauthorized
from controller.models import Setting
from controller.schemas import enrolment_tokens as schema
from controller.tokens import ENROLMENT_PREFIX, hash_token, new_token

KEY_PREFIX = "enrol1:"


def _key(digest: str) -> str:
    return KEY_PREFIX + digest[:56]


def mint(db: Database, req: schema.EnrolmentTokenCreate) -> schema.EnrolmentTokenCreated:
    token = new_token(ENROLMENT_PREFIX)
    digest = hash_token(token)
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=req.ttl_seconds)
    with db.write() as session:
        # expired tokens are dropped whenever a new one is minted
        for row in session.scalars(select(Setting).where(Setting.key.like(KEY_PREFIX + "%"))):
            if datetime.fromisoformat(json.loads(row.value)["expires_at"]) <= now:
                session.delete(row)
        session.add(Setting(key=_key(digest), value=json.dumps(
            {"hash": digest, "host_name": req.host_name, "expires_at": expires.isoformat()})))
    return schema.EnrolmentTokenCreated(token=token, host_name=req.host_name, expires_at=expires)


def lookup(session: Session, digest: str) -> str | None:
    """The settings key of a valid (unexpired) one-time token with this hash, else None."""
    row = session.get(Setting, _key(digest))
    if row is None:
        return None
    data = json.loads(row.value)
    if data["hash"] != digest or datetime.fromisoformat(data["expires_at"]) <= datetime.now(UTC):
        return None
    return row.key


def consume(session: Session, key: str, host_name: str) -> None:
    """Use up the one-time token ``key`` for ``host_name`` (inside the enrolment's transaction)."""
    row = session.get(Setting, key)
    if row is None:
        raise Unauthorized("enrolment token already used")
    bound = json.loads(row.value)["host_name"]
    if bound != host_name:
        raise InvalidParameter("InvalidParameter.HostName", "name",
                               f"this enrolment token is for host {bound!r}, not {host_name!r}")
    session.execute(delete(Setting).where(Setting.key == key))
