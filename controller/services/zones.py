"""Zones."""

from __future__ import annotations

from sqlalchemy import select

from controller.db import Database
from controller.errors import Conflict
from controller.models import Zone
from controller.schemas import zones as schema
from controller.services.common import paginate


def to_view(zone: Zone) -> schema.Zone:
    return schema.Zone(id=zone.id, name=zone.id, description=zone.description,
                       created_at=zone.created_at)


def create_zone(db: Database, req: schema.ZoneCreate) -> schema.Zone:
    with db.write() as session:
        if session.get(Zone, req.name) is not None:
            raise Conflict("InvalidZoneId.Duplicate", f"zone {req.name!r} already exists", "name")
        zone = Zone(id=req.name, description=req.description)
        session.add(zone)
        session.flush()
        return to_view(zone)


def list_zones(db: Database, max_results: int, next_token: str | None) -> schema.ZoneList:
    with db.read() as session:
        rows, token = paginate(session, select(Zone), Zone, max_results, next_token)
        return schema.ZoneList(items=[to_view(z) for z in rows],
                               next_token=token)
