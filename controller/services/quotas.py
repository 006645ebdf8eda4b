"""Project quotas: usage counters kept exact in the transaction that changes a resource.

Called from the write sessions' ``before_flush`` (``controller.tenancy``): every
new, changed or deleted instance, disk, EIP or snapshot in the flush turns into
a delta per project and counter, and each project's counters move in ONE
guarded UPDATE::

    UPDATE projects SET used_x = used_x + :dx, ...
     WHERE id = :p AND (quota_x IS NULL OR used_x + :dx <= quota_x) AND ...

the same pattern as the scheduler's host counters: the row is locked by the
UPDATE until the transaction ends (PostgreSQL re-evaluates the guard against
the committed row; SQLite's writers are serialised by ``BEGIN IMMEDIATE``), so
concurrent creates can never together exceed a quota. A guard that fails
matches no row and the whole transaction is refused with
``QuotaExceeded.<Resource>``. Releases (negative deltas) are never guarded.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import and_, inspect, or_, select, update
from sqlalchemy.orm import Session

from controller.errors import Forbidden
from controller.models import Disk, Instance
from controller.models_net import Eip
from controller.models_storage import Snapshot
from controller.models_tenancy import QUOTAS, Project

projects = Project.__table__


def usage_of(model: type, values) -> dict[str, int]:
    """What one row of ``model`` counts against its project, from ``values(attr)``."""
    if model is Instance:
        if values("deleted_at") is not None:
            return {}
        return {"instances": 1, "vcpus": values("vcpus") or 0,
                "memory_mib": values("memory_mib") or 0}
    if model is Disk:
        return {"disks": 1, "disk_gib": values("size_gib") or 0}
    if model is Eip:
        return {"eips": 1}
    if model is Snapshot:
        return {"snapshots": 1}
    return {}


COUNTED = (Instance, Disk, Eip, Snapshot)


def _old_value(state, attr: str):
    committed = state.committed_state
    return committed[attr] if attr in committed else getattr(state.obj(), attr)


def account(session: Session) -> None:
    """Charge and release the counters of everything this flush adds, changes or deletes."""
    deltas: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for obj in session.new:
        if type(obj) in COUNTED:
            for k, v in usage_of(type(obj), lambda a, o=obj: getattr(o, a)).items():
                deltas[obj.project_id][k] += v
    for obj in session.deleted:
        if type(obj) in COUNTED:
            state = inspect(obj)
            for k, v in usage_of(type(obj), lambda a, s=state: _old_value(s, a)).items():
                deltas[obj.project_id][k] -= v
    for obj in session.dirty:
        if type(obj) not in COUNTED or not session.is_modified(obj):
            continue
        state = inspect(obj)
        old = usage_of(type(obj), lambda a, s=state: _old_value(s, a))
        new = usage_of(type(obj), lambda a, o=obj: getattr(o, a))
        for k in set(old) | set(new):
            deltas[obj.project_id][k] += new.get(k, 0) - old.get(k, 0)
    for project_id, delta in sorted(deltas.items(), key=lambda kv: str(kv[0])):
        apply_delta(session, project_id, {k: v for k, v in delta.items() if v})


def apply_delta(session: Session, project_id: str | None, delta: dict[str, int]) -> None:
    """Move one project's counters by ``delta`` at once; raise if a charge breaks a quota."""
    if not delta or project_id is None:
        return
    values = {f"used_{k}": projects.c[f"used_{k}"] + v for k, v in delta.items()}
    guards = [or_(projects.c[f"quota_{k}"].is_(None),
                  projects.c[f"used_{k}"] + v <= projects.c[f"quota_{k}"])
              for k, v in delta.items() if v > 0]
    stmt = update(projects).where(and_(projects.c.id == project_id, *guards)).values(**values)
    if session.connection().execute(stmt).rowcount == 1:
        return
    row = session.connection().execute(select(projects).where(projects.c.id == project_id)).first()
    if row is None:  # a project deleted under its resources: nothing left to count against
        return
    for k, v in sorted(delta.items()):
        limit, used = getattr(row, f"quota_{k}"), getattr(row, f"used_{k}")
        if v > 0 and limit is not None and used + v > limit:
            raise QuotaExceeded(project_id, k, limit, used, v)
    raise QuotaExceeded(project_id, next(iter(delta)), 0, 0, 0)  # unreachable in practice


class QuotaExceeded(Forbidden):
    """403 ``QuotaExceeded.<Resource>``: the request would take the project past a quota."""

    def __init__(self, project_id: str, quota: str, limit: int, used: int, wanted: int) -> None:
        super().__init__(f"QuotaExceeded.{QUOTAS[quota]}",
                         f"project {project_id!r} quota {quota} is {limit}; {used} in use, "
                         f"this request needs {wanted} more", quota)
