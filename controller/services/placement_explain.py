"""``placement explain`` and ``instance create --dry-run``.

Explain resolves what placement needs from a create body (instance type, image
and system disk size, the vSwitch's zone, policy, deployment set), runs the
same ``placement.decide`` as a create, without locks, over every host of the
region, and reports each host's verdict. A dry run goes further: it runs the
whole create (every check, the address, the host with its locks) in a
transaction that is always rolled back, so it fails exactly as the create
would, and nothing is written.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from controller import tenancy
from controller.config import Settings
from controller.db import Database
from controller.models import Host
from controller.schemas import instances as instance_schema
from controller.schemas import placement as schema
from controller.services import instances, placement
from controller.services.scheduler import Demand

DRY_RUN_MESSAGE = "Request validation has been passed with DryRun flag set."


def placement_request(session: Session, settings: Settings,
                      req: instance_schema.InstanceCreate) -> placement.PlacementRequest:
    """The placement inputs of a create body, checked as the create checks them."""
    itype, _image, vsw, disk_gib = instances.check_placement_inputs(session, req)
    return placement.PlacementRequest(
        vsw.zone_id, Demand(itype.vcpus, itype.memory_mib, disk_gib),
        req.placement_policy or settings.placement_policy, req.deployment_set_id)


def to_view(decision: placement.Decision) -> schema.PlacementExplanation:
    req = decision.request
    hosts = []
    for rank, v in enumerate(decision.verdicts, start=1):
        result = ("chosen" if v is decision.chosen else "eligible") if v.eligible else "filtered"
        hosts.append(schema.HostVerdict(
            host_id=v.host_id, host_name=v.host_name, zone_id=v.zone_id, state=v.state,
            result=result, rank=rank if v.eligible else None, score=v.score,
            load_after=v.load_after,
            rejected_by=[schema.FilterRejection(filter=f, reason=r) for f, r in v.rejected_by]))
    return schema.PlacementExplanation(
        zone_id=req.zone_id, policy=req.policy, deployment_set_id=req.deployment_set_id,
        demand=schema.PlacementDemand(vcpus=req.demand.vcpus, memory_mib=req.demand.memory_mib,
                                      disk_gib=req.demand.disk_gib),
        chosen_host_id=decision.chosen.host_id if decision.chosen else None,
        chosen_host_name=decision.chosen.host_name if decision.chosen else None, hosts=hosts)


def explain(db: Database, settings: Settings,
            req: instance_schema.InstanceCreate) -> schema.PlacementExplanation:
    """Every host's verdict for this create body (200 even when no host fits)."""
    with db.read() as session:
        request = placement_request(session, settings, req)
        decision = placement.decide(session, settings, request, lock=False, all_zones=True)
        return to_view(decision)


class _RollBack(Exception):
    """Raised out of the dry run's transaction so that it is rolled back."""

    def __init__(self, host_id: str) -> None:
        super().__init__(host_id)
        self.host_id = host_id


def dry_run(db: Database, settings: Settings,
            req: instance_schema.InstanceCreate) -> schema.DryRunResult:
    """Run the create and roll it back: its errors, or the host it would have chosen."""
    trial = req.model_copy(update={"client_token": None, "dry_run": False})
    try:
        with db.write() as session:
            view, _ = instances._create(session, settings, trial)
            raise _RollBack(view.host_id)
    except _RollBack as done:
        host_id = done.host_id
    if not tenancy.sees_hosts():  # the hosts' names and loads are the operator's
        return schema.DryRunResult(code="DryRunOperation", message=DRY_RUN_MESSAGE,
                                   host_id=tenancy.host_ref(host_id))
    explanation = explain(db, settings, trial)
    with db.read() as session:
        host_name = session.get(Host, host_id).name
    return schema.DryRunResult(code="DryRunOperation", message=DRY_RUN_MESSAGE, host_id=host_id,
                               host_name=host_name, placement=explanation)
