"""Batch create (ECS RunInstances with Amount): N instances, all accepted or none.

Names and host names may carry one ECS sequence pattern,
``prefix[begin,digits]suffix``: ``web-[1,3]`` gives web-001, web-002, …
(``begin`` 0-999999, ``digits`` 1-6; numbers wider than ``digits`` keep
their digits), or the placeholder ``${instance_id}``. Every expanded value is
then validated like a single create's, so a bad pattern is refused before
anything is written.

The whole batch is one write transaction: each member is placed under the
scheduler's host row locks, and a member that does not fit rolls back the
members before it. A client token covers the batch: its first member holds
the token, every member the batch id, and a retry answers the same members.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import ids, validation
from controller.config import Settings
from controller.db import Database
from controller.errors import InvalidParameter
from controller.models import Instance, VSwitch, utcnow
from controller.schemas import instance_ops as ops_schema
from controller.schemas import instances as schema
from controller.services import instances as single
from controller.services import placement_fast

PLACEHOLDER = "${instance_id}"
_GROUP = re.compile(r"\[(\d{1,6}),(\d)\]")
MAX_BEGIN = 999_999
MAX_DIGITS = 6


@dataclass(frozen=True)
class NamePattern:
    """A parsed name or host name: literal text, or prefix + sequence + suffix."""

    prefix: str
    begin: int | None = None
    digits: int = 0
    suffix: str = ""

    def render(self, index: int, instance_id: str) -> str:
        text = self.prefix if self.begin is None else \
            f"{self.prefix}{self.begin + index:0{self.digits}d}{self.suffix}"
        return text.replace(PLACEHOLDER, instance_id)


def parse_name_pattern(value: str, field: str = "name") -> NamePattern:
    """Parse ``prefix[begin,digits]suffix`` (at most one group) or a plain value.

    A bracket that is not exactly one well-formed group is refused with
    ``InvalidParameter.<Field>Pattern`` naming the field.
    """
    code = f"InvalidParameter.{_camel(field)}Pattern"
    if "[" not in value and "]" not in value:
        return NamePattern(value)
    groups = list(_GROUP.finditer(value))
    if len(groups) != 1 or value.count("[") != 1 or value.count("]") != 1:
        raise InvalidParameter(code, field,
                               f"{field} {value!r}: a pattern has exactly one [begin,digits] "
                               "group, e.g. web-[1,3]")
    m = groups[0]
    begin, digits = int(m.group(1)), int(m.group(2))
    if begin > MAX_BEGIN or not 1 <= digits <= MAX_DIGITS:
        raise InvalidParameter(code, field,
                               f"{field} {value!r}: begin must be 0-{MAX_BEGIN} and digits "
                               f"1-{MAX_DIGITS}")
    return NamePattern(value[:m.start()], begin, digits, value[m.end():])


def expand(pattern: NamePattern, amount: int, instance_ids: list[str], field: str,
           check: Callable[[str, str], str]) -> list[str]:
    """The ``amount`` values of a pattern, each validated with ``check(value, field)``."""
    out = []
    for i in range(amount):
        value = pattern.render(i, instance_ids[i])
        try:
            out.append(check(value, field))
        except InvalidParameter as exc:
            raise InvalidParameter(exc.code, field,
                                   f"{field} #{i + 1} of the batch is {value!r}: {exc.message}"
                                   ) from None
    return out


def create_batch(db: Database, settings: Settings, req: ops_schema.InstanceBatchCreate
                 ) -> ops_schema.InstanceBatch:
    """Create ``req.amount`` instances in one transaction (all or none)."""
    if not 1 <= req.amount <= ops_schema.MAX_BATCH:
        raise InvalidParameter("InvalidParameter.Amount", "amount",
                               f"amount must be 1-{ops_schema.MAX_BATCH}, not {req.amount}")
    if req.dry_run:
        raise InvalidParameter("InvalidParameter.DryRun", "dry_run",
                               "dry_run is answered by POST /instances (one member); a batch "
                               "is never created half-way to explain it")
    instance_ids = [ids.new_id("instance") for _ in range(req.amount)]
    names = expand(parse_name_pattern(req.name, "name"), req.amount, instance_ids, "name",
                   validation.validate_name)
    hostnames: list[str | None] = [None] * req.amount
    if req.hostname is not None:
        hostnames = expand(parse_name_pattern(req.hostname, "hostname"), req.amount,
                           instance_ids, "hostname", validation.validate_hostname)
    base = req.model_dump(exclude={"amount", "name", "hostname", "client_token"})
    members = [schema.InstanceCreate.model_validate(
        {**base, "name": names[i], "hostname": hostnames[i]}) for i in range(req.amount)]
    batch_id = instance_ids[0] if req.amount > 1 else None
    return db.write_retrying(lambda session: _create_all(
        session, settings, members, instance_ids, batch_id, req.client_token))


def _create_all(session: Session, settings: Settings, members: list[schema.InstanceCreate],
                instance_ids: list[str], batch_id: str | None, client_token: str | None
                ) -> ops_schema.InstanceBatch:
    if client_token:
        first_id = single.instance_of_client_token(session, client_token, members[0].vswitch_id)
        if first_id is not None:
            first = session.get(Instance, first_id)
            return ops_schema.InstanceBatch(items=_batch_of(session, first), created=False)
    batch = single.Batch(amount=len(members))
    if session.get_bind().dialect.name != "sqlite" and members:
        # Each member locks its host and its VPC's hosts in id order, but one member's set
        # after another's is no global order: two batches deadlocked. Take the zone's host
        # rows at once, in id order (the members then lock nothing more); SQLite's one
        # writer needs none of this. The vSwitch row first, as every create locks.
        vsw = session.get(VSwitch, members[0].vswitch_id, with_for_update=True)
        if vsw is not None:
            placement_fast.hold_zone(session, vsw.zone_id)
    with session.no_autoflush:  # the members are flushed together (Batch.finish)
        for i, member in enumerate(members):
            inst = single.new_instance(session, settings, member, instance_id=instance_ids[i],
                                       batch=batch)
            inst.batch_id = batch_id
            inst.created_at = utcnow()  # members answer a retry in this order, not by id
            if i == 0:
                inst.client_token = client_token
            batch.add(session, inst)
    batch.finish(session)
    return ops_schema.InstanceBatch(items=[single.to_view(i, batch.hosts)
                                           for i in batch.instances], created=True)


def _batch_of(session: Session, first: Instance) -> list[schema.Instance]:
    if first.batch_id is None:
        return [single.to_view(single.load_instance(session, first.id))]
    rows = session.scalars(select(Instance.id).where(Instance.batch_id == first.batch_id)
                           .order_by(Instance.created_at, Instance.id))
    return [single.to_view(single.load_instance(session, iid)) for iid in rows]


def _camel(field: str) -> str:
    return "".join(part.capitalize() for part in field.split("_"))
