"""Security-group rules (the group itself and its membership are in ``controller.models``).

Kept apart from ``controller.models`` so the firewall feature's tables live
with it; ``controller.models`` imports this module at its end, so
``Base.metadata`` is complete wherever the models are imported.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controller.models import Base, Timestamped
from controller.models_owner import project_column


class SecurityGroupRule(Timestamped, Base):
    """One rule of a group. ``fingerprint`` makes adding an existing rule a no-op."""

    __tablename__ = "security_group_rules"
    __table_args__ = (UniqueConstraint("security_group_id", "fingerprint"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = project_column()
    security_group_id: Mapped[str] = mapped_column(
        ForeignKey("security_groups.id", ondelete="CASCADE"), index=True)
    direction: Mapped[str] = mapped_column(String(8))  # ingress | egress
    protocol: Mapped[str] = mapped_column(String(8))  # tcp | udp | icmp | all
    port_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    port_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source_port_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source_port_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    peer_cidr: Mapped[str | None] = mapped_column(String(43), nullable=True)
    peer_group_id: Mapped[str | None] = mapped_column(ForeignKey("security_groups.id"),
                                                      nullable=True, index=True)
    local_cidr: Mapped[str | None] = mapped_column(String(43), nullable=True)
    policy: Mapped[str] = mapped_column(String(8))  # accept | drop
    priority: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(256), default="")
    fingerprint: Mapped[str] = mapped_column(String(256))
