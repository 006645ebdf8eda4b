"""Tenancy tables: projects (with their quotas and usage counters) and users.

API keys are rows of ``api_tokens`` (``models.ApiToken``) that carry a user, a
project and a role; the admin tokens of old have neither and act as admin.
Every user-facing resource table has a ``project_id`` column (added by
``controller.tenancy.OWNED``); the usage counters below are kept exact by
``controller.services.quotas`` inside the transaction that creates or deletes
the resource.
"""

from __future__ import annotations

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from controller.models import Base, Timestamped
from controller.models_owner import DEFAULT_PROJECT  # noqa: F401  (re-exported)

# quota name -> (limit column, usage column); the names appear in the API, the CLI
# and the error codes (QuotaExceeded.<Resource>).
QUOTAS = {
    "instances": "Instances", "vcpus": "Vcpus", "memory_mib": "MemoryMib", "disks": "Disks",
    "disk_gib": "DiskGib", "eips": "Eips", "snapshots": "Snapshots",
}


class Project(Timestamped, Base):
    """A tenant. ``quota_*`` None means unlimited; ``used_*`` are live counters."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    quota_instances: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_vcpus: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_memory_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_disks: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_disk_gib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_eips: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_snapshots: Mapped[int | None] = mapped_column(Integer, nullable=True)
    used_instances: Mapped[int] = mapped_column(Integer, default=0)
    used_vcpus: Mapped[int] = mapped_column(Integer, default=0)
    used_memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    used_disks: Mapped[int] = mapped_column(Integer, default=0)
    used_disk_gib: Mapped[int] = mapped_column(Integer, default=0)
    used_eips: Mapped[int] = mapped_column(Integer, default=0)
    used_snapshots: Mapped[int] = mapped_column(Integer, default=0)


class User(Timestamped, Base):
    """A person or robot of one project; holds API keys (``api_tokens`` rows)."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    project_id: Mapped[str] = mapped_column(String(32), index=True)



