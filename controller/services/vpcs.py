"""VPCs: a CIDR, a VNI for VXLAN, and the bridge name used on every host."""

from __future__ import annotations

import secrets

from sqlalchemy import func, select

from controller import ids
from controller.db import Database
from controller.errors import Conflict
from controller.models import Instance, SecurityGroup, Vpc, VSwitch
from controller.schemas import vpcs as schema
from controller.services.common import get_or_404, paginate

# Below 2**22 so that each VPC's router transit address (100.64.0.0/10, see
# services/net_compile.py) is unique on a host.
VNI_RANGE = (1000, (1 << 22) - 8)


def create_vpc(db: Database, req: schema.VpcCreate) -> schema.Vpc:
    def attempt(session) -> schema.Vpc:
        vpc_id = ids.new_id("vpc")
        vpc = Vpc(id=vpc_id, name=req.name, description=req.description,
                  cidr_block=req.cidr_block, vni=_random_vni(),
                  bridge_name=ids.bridge_name(vpc_id))
        session.add(vpc)
        session.flush()
        return schema.Vpc.model_validate(vpc)

    # A VNI or bridge-name collision is a unique-constraint race: retried.
    return db.write_retrying(attempt)


def get_vpc(db: Database, vpc_id: str) -> schema.Vpc:
    with db.read() as session:
        return schema.Vpc.model_validate(
            get_or_404(session, Vpc, vpc_id, "InvalidVpcId.NotFound", "vpc_id"))


def list_vpcs(db: Database, max_results: int, next_token: str | None) -> schema.VpcList:
    with db.read() as session:
        rows, token = paginate(session, select(Vpc), Vpc, max_results, next_token)
        return schema.VpcList(items=[schema.Vpc.model_validate(v) for v in rows],
                              next_token=token)


def delete_vpc(db: Database, vpc_id: str) -> None:
    """Refused while the VPC has instances, vSwitches or security groups."""
    with db.write() as session:
        vpc = get_or_404(session, Vpc, vpc_id, "InvalidVpcId.NotFound", "vpc_id",
                         for_update=True)
        instances = session.scalar(select(func.count()).select_from(Instance)
                                   .where(Instance.vpc_id == vpc_id,
                                          Instance.status != "Deleted"))
        if instances:
            raise Conflict("DependencyViolation.Instance",
                           f"VPC {vpc_id} still has {instances} instance(s)", "vpc_id")
        vswitches = session.scalar(select(func.count()).select_from(VSwitch)
                                   .where(VSwitch.vpc_id == vpc_id))
        if vswitches:
            raise Conflict("DependencyViolation.VSwitch",
                           f"VPC {vpc_id} still has {vswitches} vSwitch(es)", "vpc_id")
        groups = session.scalar(select(func.count()).select_from(SecurityGroup)
                                .where(SecurityGroup.vpc_id == vpc_id))
        if groups:
            raise Conflict("DependencyViolation.SecurityGroup",
                           f"VPC {vpc_id} still has {groups} security group(s)", "vpc_id")
        session.delete(vpc)


def _random_vni() -> int:
    lo, hi = VNI_RANGE
    return lo + secrets.randbelow(hi - lo)
