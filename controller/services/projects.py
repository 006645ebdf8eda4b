"""Projects (with quotas and usage), users, and their API keys."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controller import ids
from controller.db import Database
from controller.errors import Conflict, NotFound
from controller.models import ApiToken
from controller.models_tenancy import DEFAULT_PROJECT, QUOTAS, Project, User
from controller.schemas import projects as schema
from controller.services.access import project_not_found
from controller.services.api_tokens import revoke_row
from controller.services.common import paginate
from controller.tenancy import ALL_PROJECTS, OWNED, Principal
from controller.tokens import API_KEY_PREFIX, hash_token, new_token


def _view(p: Project) -> schema.Project:
    return schema.Project(
        id=p.id, description=p.description, created_at=p.created_at,
        quota=schema.Quota(**{q: getattr(p, f"quota_{q}") for q in QUOTAS}),
        usage=schema.Usage(**{q: getattr(p, f"used_{q}") for q in QUOTAS}))


def _load(session: Session, project_id: str, caller: Principal | None,
          for_update: bool = False) -> Project:
    if caller is not None and caller.project is not None and caller.project != project_id:
        raise project_not_found(project_id)  # another project: as if missing
    row = session.get(Project, project_id, with_for_update=for_update or None)
    if row is None:
        raise project_not_found(project_id)
    return row


def create_project(db: Database, req: schema.ProjectCreate) -> schema.Project:
    try:
        with db.write() as session:
            if session.get(Project, req.id) is not None:
                raise Conflict("InvalidProjectId.Duplicate", f"project {req.id!r} exists", "id")
            row = Project(id=req.id, description=req.description,
                          **{f"quota_{q}": v for q, v in req.quota.model_dump().items()},
                          **{f"used_{q}": 0 for q in QUOTAS}, created_at=datetime.now(UTC))
            session.add(row)
            session.flush()
            return _view(row)
    except IntegrityError:
        raise Conflict("InvalidProjectId.Duplicate", f"project {req.id!r} exists", "id") from None


def list_projects(db: Database, caller: Principal | None, max_results: int,
                  next_token: str | None) -> schema.ProjectList:
    stmt = select(Project)
    if caller is not None and caller.project is not None:
        stmt = stmt.where(Project.id == caller.project)
    with db.read() as session:
        rows, token = paginate(session, stmt, Project, max_results, next_token)
        return schema.ProjectList(items=[_view(p) for p in rows], next_token=token)


def get_project(db: Database, project_id: str, caller: Principal | None) -> schema.Project:
    with db.read() as session:
        return _view(_load(session, project_id, caller))


def set_quota(db: Database, project_id: str, req: schema.QuotaUpdate) -> schema.Project:
    """Change limits (only the fields sent). A limit below the usage stops new charges
    but takes nothing away."""
    with db.write() as session:
        row = _load(session, project_id, None, for_update=True)
        for q, v in req.model_dump(exclude_unset=True).items():
            setattr(row, f"quota_{q}", v)
        session.flush()
        return _view(row)


def delete_project(db: Database, project_id: str) -> None:
    """Refused for ``default`` and while any resource, user or key lives in the project."""
    if project_id == DEFAULT_PROJECT:
        raise Conflict("OperationDenied.DefaultProject", "the default project cannot be deleted",
                       "project_id")
    with db.write() as session:
        row = _load(session, project_id, None, for_update=True)
        for model in OWNED:
            stmt = select(func.count()).select_from(model).where(model.project_id == project_id)
            if hasattr(model, "deleted_at"):
                stmt = stmt.where(model.deleted_at.is_(None))
            if session.scalar(stmt.execution_options(**ALL_PROJECTS)):
                raise Conflict("DependencyViolation.Project",
                               f"project {project_id!r} still has {model.__tablename__}",
                               "project_id")
        if session.scalar(select(func.count()).select_from(User)
                          .where(User.project_id == project_id)):
            raise Conflict("DependencyViolation.Project",
                           f"project {project_id!r} still has users", "project_id")
        session.delete(row)


# ---- users --------------------------------------------------------------------------

def create_user(db: Database, req: schema.UserCreate) -> schema.User:
    try:
        with db.write() as session:
            _load(session, req.project_id, None)
            if session.scalar(select(User.id).where(User.name == req.name)):
                raise Conflict("InvalidUserName.Duplicate", f"user {req.name!r} exists", "name")
            row = User(id=ids.new_id("user"), name=req.name, project_id=req.project_id,
                       created_at=datetime.now(UTC))
            session.add(row)
            session.flush()
            return schema.User.model_validate(row)
    except IntegrityError:
        raise Conflict("InvalidUserName.Duplicate", f"user {req.name!r} exists", "name") from None


def list_users(db: Database, project_id: str | None, max_results: int,
               next_token: str | None) -> schema.UserList:
    stmt = select(User)
    if project_id:
        stmt = stmt.where(User.project_id == project_id)
    with db.read() as session:
        rows, token = paginate(session, stmt, User, max_results, next_token)
        return schema.UserList(items=[schema.User.model_validate(u) for u in rows],
                               next_token=token)


def delete_user(db: Database, user_id: str) -> None:
    """Deletes the user and revokes every key it holds."""
    with db.write() as session:
        row = session.get(User, user_id)
        if row is None:
            raise NotFound("InvalidUserId.NotFound", f"user {user_id!r} does not exist",
                           "user_id")
        now = datetime.now(UTC)
        for key in session.scalars(select(ApiToken).where(ApiToken.user_id == user_id,
                                                          ApiToken.revoked_at.is_(None))):
            key.revoked_at = now
        session.delete(row)


# ---- API keys -----------------------------------------------------------------------

def create_api_key(db: Database, req: schema.ApiKeyCreate) -> schema.ApiKeyCreated:
    """A new key for a user; the key itself is in this answer only (stored as sha256)."""
    key = new_token(API_KEY_PREFIX)
    with db.write() as session:
        user = session.get(User, req.user_id)
        if user is None:
            raise NotFound("InvalidUserId.NotFound", f"user {req.user_id!r} does not exist",
                           "user_id")
        row = ApiToken(id=ids.new_id("api_token"), name=req.name, role=req.role,
                       token_hash=hash_token(key), user_id=user.id,
                       project_id=None if req.role == "admin" else user.project_id,
                       created_at=datetime.now(UTC))
        session.add(row)
        session.flush()
        return schema.ApiKeyCreated(**schema.ApiKey.model_validate(row).model_dump(), key=key)


def list_api_keys(db: Database, user_id: str | None, project_id: str | None, max_results: int,
                  next_token: str | None) -> schema.ApiKeyList:
    stmt = select(ApiToken)
    if user_id:
        stmt = stmt.where(ApiToken.user_id == user_id)
    if project_id:
        stmt = stmt.where(ApiToken.project_id == project_id)
    with db.read() as session:
        rows, token = paginate(session, stmt, ApiToken, max_results, next_token)
        return schema.ApiKeyList(items=[schema.ApiKey.model_validate(t) for t in rows],
                                 next_token=token)


def revoke_api_key(db: Database, key_id: str) -> None:
    revoke_row(db, key_id, NotFound("InvalidApiKeyId.NotFound",
                                    f"API key {key_id!r} does not exist", "api_key_id"))
