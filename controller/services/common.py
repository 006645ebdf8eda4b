"""Helpers every service uses: fetch-or-404 and keyset pagination."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from controller.errors import InvalidParameter, NotFound

M = TypeVar("M")


def get_or_404(session: Session, model: type[M], resource_id: str, code: str,
               field: str | None = None, *, for_update: bool = False) -> M:
    """The row with this id, or ``NotFound(code)`` (e.g. ``InvalidVpcId.NotFound``)."""
    obj = session.get(model, resource_id, with_for_update=for_update or None)
    if obj is None:
        raise NotFound(code, f"{field or 'resource'} {resource_id!r} does not exist", field)
    return obj


def paginate(session: Session, stmt: Select, model, max_results: int,
             next_token: str | None) -> tuple[list, str | None]:
    """One page of ``stmt`` in creation order, and the token of the next page (or None)."""
    if next_token:
        created, last_id = _decode_token(next_token)
        stmt = stmt.where(or_(model.created_at > created,
                              and_(model.created_at == created, model.id > last_id)))
    rows = list(session.scalars(stmt.order_by(model.created_at, model.id).limit(max_results + 1)))
    if len(rows) <= max_results:
        return rows, None
    rows = rows[:max_results]
    last = rows[-1]
    return rows, _encode_token(last.created_at, last.id)


def _encode_token(created: datetime, last_id: str) -> str:
    raw = f"{created.isoformat()}|{last_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        created, last_id = raw.split("|", 1)
        stamp = datetime.fromisoformat(created)
        if stamp.tzinfo is None:
            raise ValueError("naive")
        return stamp, last_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidParameter("InvalidParameter.NextToken", "next_token",
                               "next_token is not one this API returned") from None
