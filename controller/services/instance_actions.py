"""Instance power actions (start, stop, reboot) and delete.

Each changes desired columns, bumps the host's generation first (lock order:
host row, then instance row) and re-derives the status from the last
observation, so a stop shows Stopping at once and Stopped when the agent
reports it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from controller import ids
from controller.config import Settings
from controller.db import Database
from controller.errors import Conflict, Forbidden, NotFound
from controller.models import Host, Instance, Operation
from controller.schemas import instances as schema
from controller.schemas import operations as op_schema
from controller.services.instances import load_instance, to_view
from controller.services.notify import bump_generation
from controller.services.specs import bump_hosts_of_vpc
from controller.services.status import derive_status

FINAL_OUTCOMES = ("succeeded", "failed", "cancelled")


def _rederive(inst: Instance) -> None:
    derived = derive_status(desired_power=inst.desired_power,
                            deleting=inst.delete_requested_at is not None,
                            observed_power=inst.observed_power)
    inst.status, inst.status_reason = derived.status, derived.reason


def _refuse_if_deleting(inst: Instance) -> None:
    if inst.delete_requested_at is not None:
        raise Conflict("IncorrectInstanceStatus",
                       f"instance {inst.id} is {inst.status}", "instance_id")


def start_instance(db: Database, instance_id: str) -> schema.Instance:
    """Desired power running (idempotent)."""
    with db.write() as session:
        inst = load_instance(session, instance_id)
        _refuse_if_deleting(inst)
        if inst.desired_power != "running":
            bump_generation(session, inst.host_id)
            inst.desired_power, inst.force_stop = "running", False
            inst.power_serial = (inst.power_serial or 0) + 1
            _rederive(inst)
        return to_view(inst)


def stop_instance(db: Database, settings: Settings, instance_id: str, force: bool,
                  stop_timeout_s: int | None) -> schema.Instance:
    """Desired power stopped: ACPI shutdown, power-off after the timeout; or at once with force.

    Stopping again with ``force`` escalates a graceful stop in progress.
    """
    with db.write() as session:
        inst = load_instance(session, instance_id)
        _refuse_if_deleting(inst)
        timeout = stop_timeout_s or settings.stop_timeout_s
        wanted = ("stopped", force, timeout)
        if (inst.desired_power, inst.force_stop, inst.stop_timeout_s) != wanted:
            bump_generation(session, inst.host_id)
            inst.desired_power, inst.force_stop, inst.stop_timeout_s = "stopped", force, timeout
            _rederive(inst)
        return to_view(inst)


def reboot_instance(db: Database, instance_id: str, force: bool) -> op_schema.Operation:
    """A one-shot reboot operation; only for a Running instance."""
    with db.write() as session:
        inst = load_instance(session, instance_id)
        if inst.status != "Running" or inst.desired_power != "running":
            raise Conflict("IncorrectInstanceStatus",
                           f"instance {inst.id} is {inst.status}; only a Running instance "
                           "reboots", "instance_id")
        bump_generation(session, inst.host_id)
        op = Operation(id=ids.new_id("operation"), instance_id=inst.id, host_id=inst.host_id,
                       kind="reboot", force=force, outcome="pending")
        session.add(op)
        session.flush()
        return operation_view(op)


def delete_instance(db: Database, instance_id: str, force: bool) -> schema.Instance:
    """Take the instance out of its host's spec; it becomes Deleted (and its IP, MAC and
    capacity are released) once the agent reports a spec without it applied.

    Without ``force`` only a Stopped (or Error) instance may be deleted, as in ECS;
    with ``force`` a running one is powered off by its removal. Deletion
    protection refuses either way.
    """
    with db.write() as session:
        inst = load_instance(session, instance_id)
        if inst.delete_requested_at is not None:
            return to_view(inst)  # already on its way: idempotent
        if inst.deletion_protection:
            raise Forbidden("InvalidOperation.DeletionProtection",
                            f"instance {inst.id} has deletion protection; turn it off first",
                            "instance_id")
        if not force and inst.status not in ("Stopped", "Error"):
            raise Conflict("IncorrectInstanceStatus",
                           f"instance {inst.id} is {inst.status}; stop it first or use force",
                           "instance_id")
        bump_generation(session, inst.host_id)
        generation = session.scalar(select(Host.generation).where(Host.id == inst.host_id))
        bump_hosts_of_vpc(session, inst.vpc_id)  # the others drop its FDB entry and neighbour
        inst.delete_requested_at = datetime.now(UTC)
        inst.delete_generation = generation
        now = datetime.now(UTC)
        for op in inst.operations:
            if op.outcome == "pending":
                op.outcome, op.message, op.finished_at = "cancelled", "instance deleted", now
        _rederive(inst)
        return to_view(inst)


def operation_view(op: Operation) -> op_schema.Operation:
    return op_schema.Operation(
        id=op.id, instance_id=op.instance_id, kind=op.kind, force=op.force, outcome=op.outcome,
        is_final=op.outcome in FINAL_OUTCOMES, message=op.message, created_at=op.created_at,
        finished_at=op.finished_at)


def get_operation(db: Database, operation_id: str) -> op_schema.Operation:
    with db.read() as session:
        op = session.get(Operation, operation_id)
        if op is None:
            raise NotFound("InvalidOperationId.NotFound",
                           f"operation {operation_id!r} does not exist", "operation_id")
        return operation_view(op)
