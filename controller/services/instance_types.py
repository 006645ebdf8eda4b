"""Instance types (seeded defaults; admins may add more)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.db import Database
from controller.errors import Conflict
from controller.models import InstanceType
from controller.schemas import instance_types as schema
from controller.services.common import paginate

DEFAULT_TYPES = (
    ("ecs.t1.nano", 1, 256, "tiny, for tests and demos"),
    ("ecs.t1.small", 1, 1024, "burstable, small"),
    ("ecs.t1.medium", 1, 2048, "burstable, medium"),
    ("ecs.c1.large", 2, 4096, "compute, large"),
)


def seed_instance_types(session: Session) -> None:
    for type_id, vcpus, memory, description in DEFAULT_TYPES:
        if session.get(InstanceType, type_id) is None:
            session.add(InstanceType(id=type_id, vcpus=vcpus, memory_mib=memory,
                                     description=description))


def create_instance_type(db: Database, req: schema.InstanceTypeCreate) -> schema.InstanceType:
    with db.write() as session:
        if session.get(InstanceType, req.id) is not None:
            raise Conflict("InvalidInstanceType.Duplicate",
                           f"instance type {req.id!r} already exists", "id")
        row = InstanceType(id=req.id, vcpus=req.vcpus, memory_mib=req.memory_mib,
                           description=req.description)
        session.add(row)
        session.flush()
        return schema.InstanceType.model_validate(row)


def list_instance_types(db: Database, max_results: int,
                        next_token: str | None) -> schema.InstanceTypeList:
    with db.read() as session:
        rows, token = paginate(session, select(InstanceType), InstanceType, max_results,
                               next_token)
        return schema.InstanceTypeList(
            items=[schema.InstanceType.model_validate(r) for r in rows], next_token=token)
