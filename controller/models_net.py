"""Elastic IPs (VPCs and vSwitches are in ``controller.models``).

Kept apart so the networking feature's tables live with it;
``controller.models`` imports this module at its end, so ``Base.metadata`` is
complete wherever the models are imported.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from controller.models import Base, Timestamped, UTCDateTime
from controller.models_owner import project_column


class Eip(Timestamped, Base):
    """A public address of the region's pool, mapped 1:1 onto one instance's private IP."""

    __tablename__ = "eips"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = project_column()
    name: Mapped[str] = mapped_column(String(128), default="")
    ip: Mapped[str] = mapped_column(String(39), unique=True)
    # Plain id, not a foreign key: the association is dropped when the instance goes.
    instance_id: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)
    associated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
