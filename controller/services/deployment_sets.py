"""Deployment sets: create, read, list, delete (refused while it has members).

The placement side (the anti-affinity filter and its lock) is in
``services/placement.py``.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import ids
from controller.db import Database
from controller.errors import Conflict
from controller.models import Instance
from controller.models_placement import DeploymentSet
from controller.schemas import deployment_sets as schema
from controller.services.common import get_or_404, paginate
from controller.tenancy import host_ref

NOT_FOUND = "InvalidDeploymentSetId.NotFound"


def get_set(session: Session, set_id: str, *, for_update: bool = False) -> DeploymentSet:
    return get_or_404(session, DeploymentSet, set_id, NOT_FOUND, "deployment_set_id",
                      for_update=for_update)


def live_members(session: Session, set_id: str) -> list[tuple[str, str]]:
    """(instance id, host id) of every member not yet Deleted, in creation order."""
    rows = session.execute(
        select(Instance.id, Instance.host_id)
        .where(Instance.deployment_set_id == set_id, Instance.deleted_at.is_(None))
        .order_by(Instance.created_at, Instance.id))
    return [(inst, host) for inst, host in rows]


def _view(session: Session, ds: DeploymentSet) -> schema.DeploymentSet:
    members = live_members(session, ds.id)
    return schema.DeploymentSet(
        id=ds.id, name=ds.name, description=ds.description, strategy=ds.strategy,
        instance_ids=[i for i, _ in members], host_ids=[host_ref(h) for _, h in members],
        created_at=ds.created_at)


def create_set(db: Database, req: schema.DeploymentSetCreate) -> schema.DeploymentSet:
    with db.write() as session:
        ds = DeploymentSet(id=ids.new_id("deployment_set"), name=req.name,
                           description=req.description, strategy=req.strategy)
        session.add(ds)
        session.flush()
        return _view(session, ds)


def show_set(db: Database, set_id: str) -> schema.DeploymentSet:
    with db.read() as session:
        return _view(session, get_set(session, set_id))


def list_sets(db: Database, max_results: int, next_token: str | None,
              name: str | None = None) -> schema.DeploymentSetList:
    stmt = select(DeploymentSet)
    if name:
        stmt = stmt.where(DeploymentSet.name == name)
    with db.read() as session:
        rows, token = paginate(session, stmt, DeploymentSet, max_results, next_token)
        return schema.DeploymentSetList(items=[_view(session, d) for d in rows],
                                        next_token=token)


def delete_set(db: Database, set_id: str) -> None:
    """Refused while a member is not yet Deleted (a Deleting one still counts)."""
    with db.write() as session:
        ds = get_set(session, set_id, for_update=True)
        members = live_members(session, set_id)
        if members:
            shown = ", ".join(i for i, _ in members[:10])
            raise Conflict("DependencyViolation.DeploymentSet.Instances",
                           f"deployment set {set_id} still has {len(members)} instance(s): "
                           f"{shown}", "deployment_set_id")
        session.delete(ds)
