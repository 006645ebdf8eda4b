"""Resolving a bearer token into the caller (``tenancy.Principal``)."""

from __future__ import annotations

from sqlalchemy import select

from controller.db import Database
from controller.errors import NotFound, Unauthorized
from controller.models import ApiToken
from controller.models_tenancy import Project, User
from controller.tenancy import Principal
from controller.tokens import hash_token


def project_not_found(project_id: str) -> NotFound:
    return NotFound("InvalidProjectId.NotFound", f"project {project_id!r} does not exist",
                    "project_id")


def resolve_principal(db: Database, token: str, project_header: str | None = None) -> Principal:
    """The caller of an admin token or API key; 401 when unknown or revoked.

    ``project_header`` (``X-Miniecs-Project``) confines an admin to one project
    (its creates go there, its reads see only it); a tenant key may name only
    its own project (another answers 404, as for a missing project).
    """
    digest = hash_token(token)
    with db.read() as session:
        row = session.scalars(select(ApiToken).where(
            ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))).first()
        if row is None:
            raise Unauthorized()
        role = row.role or "admin"
        name = row.name
        if row.user_id is not None:
            user = session.get(User, row.user_id)
            if user is None:
                raise Unauthorized()
            name = f"{user.name}/{row.name}"
        project = None if role == "admin" else row.project_id
        wanted = (project_header or "").strip() or None
        if wanted is not None:
            if project is not None and wanted != project:
                raise project_not_found(wanted)
            if session.get(Project, wanted) is None:
                raise project_not_found(wanted)
            project = wanted
        if role != "admin" and project is None:
            raise Unauthorized()
        return Principal(kind="apikey" if row.user_id else "token", id=row.id, name=name,
                         role=role, project=project, user_id=row.user_id)
