"""Who is calling and what they may see: the principal, the route policy, the project filter.

Everything about tenancy that the rest of the controller must not repeat lives here:

* ``Principal``: resolved once per request from the bearer token (an admin
  token of old, or an API key with a role in a project) by
  ``controller.api.deps.require_caller``, and kept on the request's
  ``events.Actor`` so the service code running for the request finds it.
* ``check_route``: the role policy (admin / member / read-only) for a route
  template and method, in one table.
* ``install``: two session hooks. ``do_orm_execute`` adds
  ``project_id == <caller's project>`` to every ORM SELECT/UPDATE/DELETE of an
  owned table, so another project's row is simply not there (the services'
  usual ``NotFound`` follows, identical to a missing id: no route or service
  needs its own check, and a reference by id — a source group, a vSwitch, an
  image — fails the same way). ``before_flush`` stamps new rows with their
  project (a child inherits its parent's, e.g. a snapshot its disk's) and
  charges or releases the project's quota counters (``services.quotas``).

Background duties and agents have no principal: they see every project.
Queries that must see every project even inside a request (allocators of
region-unique values such as EIP addresses) pass ``ALL_PROJECTS``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import event, or_
from sqlalchemy.orm import Session, with_loader_criteria

from controller.errors import Forbidden, NotFound
from controller.models import (
    Disk, Image, Instance, KeyPair, Operation, SecurityGroup, Vpc, VSwitch,
)
from controller.models_events import Event
from controller.models_migration import Migration
from controller.models_net import Eip
from controller.models_owner import DEFAULT_PROJECT
from controller.models_placement import DeploymentSet
from controller.models_sg import SecurityGroupRule
from controller.models_storage import Snapshot, SnapshotPolicy, StorageOperation
from controller.services import events

# Every user-facing resource: its rows always belong to exactly one project. A new
# resource table must be added here (tests/unit/test_tenancy.py checks every table
# with a project_id column is).
OWNED: tuple[type, ...] = (
    Instance, Disk, Snapshot, StorageOperation, SnapshotPolicy, KeyPair, Vpc, VSwitch,
    SecurityGroup, SecurityGroupRule, Eip, DeploymentSet, Migration, Operation,
)
# Rows with no project are shared by every project, read-only to tenants.
SHARED_WHEN_NULL: tuple[type, ...] = (Image,)
# Rows with no project are seen by admins only (events about hosts, projects...).
PRIVATE_WHEN_NULL: tuple[type, ...] = (Event,)

ROLES = ("admin", "member", "read-only")
ALL_PROJECTS = {"miniecs_all_projects": True}
PROJECT_HEADER = "X-Miniecs-Project"


@dataclass(frozen=True)
class Principal:
    """The caller: an admin token or an API key. ``project`` None: every project (admin)."""

    kind: str  # token (an admin token) | apikey
    id: str
    name: str
    role: str
    project: str | None
    user_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def create_project(self) -> str:
        """Where this caller's new resources go."""
        return self.project or DEFAULT_PROJECT


def current_principal() -> Principal | None:
    """The principal of the request being served (None: a background duty or an agent)."""
    return getattr(events.current_actor(), "principal", None)


def target_project() -> str:
    """The project the current caller's new (parentless) resources go to; names
    (key pairs, snapshot policies) are unique within it."""
    p = current_principal()
    return p.create_project if p is not None else DEFAULT_PROJECT


def caller_project() -> str | None:
    """The project the current caller is confined to (None: unconfined)."""
    p = current_principal()
    return None if p is None else p.project


def sees_hosts() -> bool:
    """Whether the caller may know the region's hosts (ids, names, load): an admin, or
    no principal at all (agents, background duties)."""
    p = current_principal()
    return p is None or p.is_admin


def host_ref(host_id: str | None) -> str | None:
    """A host id as the caller may see it.

    An admin sees the host's id. A tenant sees an opaque id of that host within its
    project, like Nova's ``hostId``: ``hh-`` and 20 hex digits of sha224(project, host
    id). Two of the project's resources on one host show the same value (so a deployment
    set's spread can be checked), but nothing ties it to a real host, and another
    project's value for the same host differs: no tenant can tell it shares a host with
    another's instance, nor count or name the region's hosts.
    """
    p = current_principal()
    if host_id is None or p is None or p.is_admin:
        return host_id
    digest = hashlib.sha224(f"{p.create_project}\0{host_id}".encode()).hexdigest()
    return "hh-" + digest[:20]


# ---- route policy ------------------------------------------------------------------

# First path segment after /api/v1 -> who may call. Anything not listed is admin only,
# so a new route is closed to tenants until it is put here.
TENANT_SEGMENTS = frozenset({
    "images", "key-pairs", "vpcs", "vswitches", "security-groups", "security-group-explain",
    "instances", "operations", "eips", "disks", "disk-operations", "snapshots",
    "snapshot-policies", "deployment-sets", "events", "projects",
})
READ_ONLY_SEGMENTS = frozenset({"zones", "instance-types", "migrations"})  # tenants may read
ADMIN_ONLY_ROUTES = frozenset({
    ("POST", "/api/v1/instances/{instance_id}/migrate"),  # picks hosts: an operator's call
    ("POST", "/api/v1/projects"), ("DELETE", "/api/v1/projects/{project_id}"),
    ("PUT", "/api/v1/projects/{project_id}/quota"),
})
READS_BY_POST = frozenset({"/api/v1/security-group-explain", "/api/v1/placement/explain"})
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def check_route(principal: Principal, method: str, route: str) -> None:
    """Raise ``Forbidden`` unless ``principal``'s role may call ``method route``.

    ``route`` is the route template (``/api/v1/instances/{instance_id}``).
    """
    if principal.is_admin:
        return
    segment = route.removeprefix("/api/v1/").split("/", 1)[0]
    mutating = method in MUTATING and route not in READS_BY_POST
    if (method, route) in ADMIN_ONLY_ROUTES or (
            segment not in TENANT_SEGMENTS
            and not (segment in READ_ONLY_SEGMENTS and not mutating)):
        raise Forbidden("Forbidden.AdminOnly",
                        f"{method} {route} needs an admin key; this key is {principal.role} "
                        f"in project {principal.project!r}")
    if mutating and principal.role == "read-only":
        raise Forbidden("Forbidden.ReadOnly",
                        f"this key is read-only in project {principal.project!r}; "
                        f"{method} {route} changes state")


# ---- ownership helpers -------------------------------------------------------------

def visible_to(obj, principal: Principal | None) -> bool:
    """Whether ``principal`` may see this row (shared rows: NULL project)."""
    if principal is None or principal.project is None:
        return True
    project = getattr(obj, "project_id", None)
    return project == principal.project or (project is None and type(obj) in SHARED_WHEN_NULL)


def get_owned(session: Session, model: type, resource_id: str, principal: Principal | None,
              code: str, field: str | None = None):
    """The row of ``model`` with this id if ``principal`` may see it, else the usual 404.

    Looks past the session filter (so it also works outside a request) and
    answers exactly as a missing id does.
    """
    obj = session.get(model, resource_id, execution_options=ALL_PROJECTS)
    if obj is None or not visible_to(obj, principal):
        raise NotFound(code, f"{field or 'resource'} {resource_id!r} does not exist", field)
    return obj


def require_project_writable(obj) -> None:
    """Shared rows (public images) are read-only to tenants."""
    p = current_principal()
    if p is not None and not p.is_admin and getattr(obj, "project_id", "") is None:
        raise Forbidden("Forbidden.SharedResource",
                        f"{obj.id} is shared by every project; only an admin may change it")


def require_admin_for(field: str, what: str) -> None:
    """Refuse a field only an admin may use (403 ``Forbidden.AdminOnly``)."""
    p = current_principal()
    if p is not None and not p.is_admin:
        raise Forbidden("Forbidden.AdminOnly", f"{field}: {what} needs an admin key", field)


# ---- session hooks -----------------------------------------------------------------

# child model -> (attribute holding the parent's id, parent model): a new child joins
# its parent's project whoever creates it (an admin acting across projects too).
PARENTS: dict[type, tuple[str, type]] = {
    Disk: ("instance_id", Instance), Snapshot: ("disk_id", Disk),
    StorageOperation: ("disk_id", Disk), Operation: ("instance_id", Instance),
    Migration: ("instance_id", Instance), SecurityGroupRule: ("security_group_id", SecurityGroup),
    VSwitch: ("vpc_id", Vpc), SecurityGroup: ("vpc_id", Vpc), Instance: ("vswitch_id", VSwitch),
}


def _filter(state) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.is_column_load or state.is_relationship_load:
        return  # the parent row was filtered; its children follow it
    if state.execution_options.get("miniecs_all_projects"):
        return
    project = caller_project()
    if project is None:
        return
    options = [with_loader_criteria(m, m.project_id == project, include_aliases=True)
               for m in (*OWNED, *PRIVATE_WHEN_NULL)]
    options += [with_loader_criteria(m, or_(m.project_id == project, m.project_id.is_(None)),
                                     include_aliases=True) for m in SHARED_WHEN_NULL]
    state.statement = state.statement.options(*options)


def _stamp_new_rows(session: Session) -> None:
    principal = current_principal()
    for obj in list(session.new):
        model = type(obj)
        if model not in OWNED and model is not Image:
            continue
        if getattr(obj, "project_id", None) is not None:
            continue
        parent = PARENTS.get(model)
        parent_id = getattr(obj, parent[0], None) if parent else None
        if parent_id:
            row = session.get(parent[1], parent_id, execution_options=ALL_PROJECTS)
            if row is not None and row.project_id is not None:
                obj.project_id = row.project_id
                continue
        if model is Image:  # an admin's (or the controller's) image is public
            obj.project_id = principal.project if principal is not None else None
        else:
            obj.project_id = principal.create_project if principal else DEFAULT_PROJECT


def _before_flush(session: Session, _ctx, _instances) -> None:
    from controller.services import quotas

    _stamp_new_rows(session)
    quotas.account(session)


def install(db) -> None:
    """Hook the project filter into every session of ``db`` and stamping/quotas into writes."""
    if getattr(db, "tenancy_installed", False):  # several apps over one Database (tests)
        return
    db.tenancy_installed = True
    event.listen(db._read, "do_orm_execute", _filter)
    event.listen(db._write, "do_orm_execute", _filter)
    event.listen(db._write, "before_flush", _before_flush)


def _model_by_prefix() -> dict[str, type]:
    from controller import ids

    by_kind = {m.__tablename__.removesuffix("s").replace("vswitche", "vswitch")
               .replace("snapshot_policie", "snapshot_policy"): m for m in OWNED}
    by_kind["image"] = Image
    return {prefix: by_kind[kind] for kind, prefix in ids.PREFIXES.items() if kind in by_kind}


def project_of_resource(db, resource_id: str) -> str | None:
    """The project of the resource with this id (by its prefix), or None."""
    if not resource_id or "-" not in resource_id:
        return None
    model = _model_by_prefix().get(resource_id.split("-", 1)[0] + "-")
    if model is None:
        return None
    with db.read() as session:
        row = session.get(model, resource_id, execution_options=ALL_PROJECTS)
        return None if row is None else row.project_id
