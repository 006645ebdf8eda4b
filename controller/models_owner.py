"""The ``project_id`` column every user-facing resource table carries (tenancy).

A leaf module (imports no model) so each model module can use it.
"""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import mapped_column

DEFAULT_PROJECT = "default"


def project_column():
    """The owning project; rows from before projects existed are in ``default``."""
    return mapped_column(String(32), nullable=False, index=True, server_default=DEFAULT_PROJECT,
                         doc="Owning project (tenant)")


def optional_project_column(doc: str):
    """A project that may be absent (e.g. a public image: shared by every project)."""
    return mapped_column(String(32), nullable=True, index=True, doc=doc)
