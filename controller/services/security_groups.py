"""Security groups: the object, its type and inner access, and membership (join/leave).

Rules are in ``security_group_rules``; every change that alters what a host
enforces bumps the hosts carrying the group's VPC.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller import ids
from controller.db import Database
from controller.errors import Conflict, InvalidParameter
from controller.models import Instance, Nic, NicSecurityGroup, SecurityGroup, Vpc
from controller.models_sg import SecurityGroupRule
from controller.schemas import security_groups as schema
from controller.services.common import get_or_404, paginate


def _members(session: Session, group_id: str) -> int:
    return session.scalar(select(func.count()).select_from(NicSecurityGroup)
                          .where(NicSecurityGroup.security_group_id == group_id)) or 0


def to_view(session: Session, group: SecurityGroup) -> schema.SecurityGroup:
    rules = session.scalar(select(func.count()).select_from(SecurityGroupRule)
                           .where(SecurityGroupRule.security_group_id == group.id)) or 0
    return schema.SecurityGroup(id=group.id, name=group.name, description=group.description,
                                vpc_id=group.vpc_id, type=group.type,
                                inner_access_policy=group.inner_access_policy,
                                member_count=_members(session, group.id), rule_count=rules,
                                created_at=group.created_at)


def create_security_group(db: Database, req: schema.SecurityGroupCreate) -> schema.SecurityGroup:
    with db.write() as session:
        get_or_404(session, Vpc, req.vpc_id, "InvalidVpcId.NotFound", "vpc_id")
        if req.type == "enterprise" and req.inner_access_policy == "accept" \
                and "inner_access_policy" in req.model_fields_set:
            raise InvalidParameter("InvalidSecurityGroup.InnerAccessPolicy", "inner_access_policy",
                                   "enterprise groups have no inner access")
        group = SecurityGroup(id=ids.new_id("security_group"), name=req.name,
                              description=req.description, vpc_id=req.vpc_id, type=req.type,
                              inner_access_policy="drop" if req.type == "enterprise"
                              else req.inner_access_policy)
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
        referrers = session.scalars(select(SecurityGroupRule.security_group_id).distinct()
                                    .where(SecurityGroupRule.peer_group_id == group_id,
                                           SecurityGroupRule.security_group_id != group_id)).all()
        if referrers:
            raise Conflict("DependencyViolation.SecurityGroupRule",
                           f"rules of {', '.join(referrers)} name security group {group_id}",
                           "security_group_id")
        if members:
            raise Conflict("DependencyViolation.Instance",
                           f"security group {group_id} still has {members} member NIC(s)",
                           "security_group_id")
        session.delete(group)


def update_security_group(db: Database, group_id: str,
                          req: schema.SecurityGroupUpdate) -> schema.SecurityGroup:
    from controller.services.specs import bump_hosts_of_vpc

    with db.write() as session:
        group = get_or_404(session, SecurityGroup, group_id, "InvalidSecurityGroupId.NotFound",
                           "security_group_id", for_update=True)
        if req.name is not None:
            group.name = req.name
        if req.description is not None:
            group.description = req.description
        if req.inner_access_policy is not None and req.inner_access_policy != \
                group.inner_access_policy:
            if group.type == "enterprise":
                raise InvalidParameter("InvalidSecurityGroup.InnerAccessPolicy",
                                       "inner_access_policy",
                                       "enterprise groups have no inner access")
            group.inner_access_policy = req.inner_access_policy
            bump_hosts_of_vpc(session, group.vpc_id)
        session.flush()
        return to_view(session, group)


def join_security_group(db: Database, group_id: str, instance_id: str) -> schema.SecurityGroup:
    """Add the instance's primary NIC to the group (a no-op when it is a member already)."""
    from controller.services.security_group_rules import check_nic_groups
    from controller.services.specs import bump_hosts_of_vpc

    with db.write() as session:
        group = get_or_404(session, SecurityGroup, group_id, "InvalidSecurityGroupId.NotFound",
                           "security_group_id", for_update=True)
        nic = _primary_nic(session, instance_id)
        current = [m.security_group_id for m in nic.security_groups]
        if group_id not in current:
            check_nic_groups(session, nic, current + [group_id])
            nic.security_groups.append(NicSecurityGroup(security_group_id=group_id,
                                                        position=len(current)))
            session.flush()
            bump_hosts_of_vpc(session, group.vpc_id)
        return to_view(session, group)


def leave_security_group(db: Database, group_id: str, instance_id: str) -> schema.SecurityGroup:
    """Remove the instance's NIC from the group; a NIC keeps at least one group."""
    from controller.services.specs import bump_hosts_of_vpc

    with db.write() as session:
        group = get_or_404(session, SecurityGroup, group_id, "InvalidSecurityGroupId.NotFound",
                           "security_group_id", for_update=True)
        nic = _primary_nic(session, instance_id)
        member = [m for m in nic.security_groups if m.security_group_id == group_id]
        if member:
            if len(nic.security_groups) == 1:
                raise Conflict("InvalidOperation.LastSecurityGroup",
                               f"{group_id} is the only group of instance {instance_id}",
                               "security_group_id")
            nic.security_groups.remove(member[0])
            session.flush()
            bump_hosts_of_vpc(session, group.vpc_id)
        return to_view(session, group)


def _primary_nic(session: Session, instance_id: str) -> Nic:
    inst = get_or_404(session, Instance, instance_id, "InvalidInstanceId.NotFound",
                      "instance_id")
    if inst.delete_requested_at is not None or not inst.nics:
        raise Conflict("IncorrectInstanceStatus", f"instance {instance_id} is being deleted",
                       "instance_id")
    return inst.nics[0]
