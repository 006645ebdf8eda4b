"""Tables of placement: deployment sets (ECS CreateDeploymentSet).

Membership is ``instances.deployment_set_id`` (a plain id, like the instance's
image and vSwitch). Strategy Availability is strict anti-affinity; the partial
unique index below is the database's own guard that no two live members of a
set share a host, behind the scheduler's filter and the set's row lock.
"""

from __future__ import annotations

from sqlalchemy import Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from controller.models import Base, Instance, Timestamped
from controller.models_owner import project_column


class DeploymentSet(Timestamped, Base):
    __tablename__ = "deployment_sets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = project_column()
    name: Mapped[str] = mapped_column(String(128), index=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    # Availability: at most one member per host
    strategy: Mapped[str] = mapped_column(String(32), default="Availability")


LIVE_MEMBER = text("deployment_set_id IS NOT NULL AND deleted_at IS NULL")

Index("uq_instances_deployment_set_host", Instance.deployment_set_id, Instance.host_id,
      unique=True, sqlite_where=LIVE_MEMBER, postgresql_where=LIVE_MEMBER)
