"""Zones."""

from __future__ import annotations

from sqlalchemy import select

from controller.db import Database
from controller.errors import Conflict
from controller.models import Zone
from controller.schemas import zones as schema
from controller.services.common import paginate


def create_zone(db: Database, req: schema.ZoneCreate) -> schema.Zone:
    with db.write() as session:
        if session.get(Zone, req.id) is not None:
            raise Conflict("InvalidZoneId.Duplicate", f"zone {req.id!r} already exists", "id")
        zone = Zone(id=req.id, description=req.description)
        session.add(zone)
        session.flush()
        return schema.Zone.model_validate(zone)


def list_zones(db: Database, max_results: int, next_token: str | None) -> schema.ZoneList:
    with db.read() as session:
        rows, token = paginate(session, select(Zone), Zone, max_results, next_token)
        return schema.ZoneList(items=[schema.Zone.model_validate(z) for z in rows],
                               next_token=token)
