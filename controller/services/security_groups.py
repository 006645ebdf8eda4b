"""Security groups: the object and its membership (rules come in their own issue)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller import ids
from controller.db import Database
from controller.errors import Conflict
from controller.models import NicSecurityGroup, SecurityGroup, Vpc
from controller.schemas import security_groups as schema
from controller.services.common import get_or_404, paginate


def _members(session: Session, group_id: str) -> int:
    return session.scalar(select(func.count()).select_from(NicSecurityGroup)
                          .where(NicSecurityGroup.security_group_id == group_id)) or 0


def to_view(session: Session, group: SecurityGroup) -> schema.SecurityGroup:
    return schema.SecurityGroup(id=group.id, name=group.name, description=group.description,
                                vpc_id=group.vpc_id, member_count=_members(session, group.id),
                                created_at=group.created_at)


def create_security_group(db: Database, req: schema.SecurityGroupCreate) -> schema.SecurityGroup:
    with db.write() as session:
        get_or_404(session, Vpc, req.vpc_id, "InvalidVpcId.NotFound", "vpc_id")
        group = SecurityGroup(id=ids.new_id("security_group"), name=req.name,
                              description=req.description, vpc_id=req.vpc_id)
        session.add(group)
        session.flush()
        return to_view(session, group)


def get_security_group(db: Database, group_id: str) -> schema.SecurityGroup:
    with db.read() as session:
        group = get_or_404(session, SecurityGroup, group_id, "InvalidSecurityGroupId.NotFound",
                           "security_group_id")
        return to_view(session, group)


def list_security_groups(db: Database, max_results: int, next_token: str | None,
                         vpc_id: str | None = None) -> schema.SecurityGroupList:
    stmt = select(SecurityGroup)
    if vpc_id:
        stmt = stmt.where(SecurityGroup.vpc_id == vpc_id)
    with db.read() as session:
        rows, token = paginate(session, stmt, SecurityGroup, max_results, next_token)
        return schema.SecurityGroupList(items=[to_view(session, g) for g in rows],
                                        next_token=token)


def delete_security_group(db: Database, group_id: str) -> None:
    """Refused while any NIC is a member."""
    with db.write() as session:
        group = get_or_404(session, SecurityGroup, group_id, "InvalidSecurityGroupId.NotFound",
                           "security_group_id", for_update=True)
        members = _members(session, group_id)
        if members:
            raise Conflict("DependencyViolation.Instance",
                           f"security group {group_id} still has {members} member NIC(s)",
                           "security_group_id")
        session.delete(group)
