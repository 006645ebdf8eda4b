"""Tables of cloud storage: snapshots, one-shot storage operations, snapshot policies.

Disks themselves are ``controller.models.Disk``. A snapshot keeps plain ids of
its disk and host (no foreign keys): it outlives the disk it was taken from.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controller.models import Base, Timestamped, UTCDateTime
from controller.models_owner import project_column


class Snapshot(Timestamped, Base):
    __tablename__ = "snapshots"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = project_column()
    name: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(String(256), default="")
    disk_id: Mapped[str] = mapped_column(String(32), index=True)
    disk_role: Mapped[str] = mapped_column(String(8))
    disk_size_gib: Mapped[int] = mapped_column(Integer)
    image_id: Mapped[str | None] = mapped_column(String(32), nullable=True,
                                                 doc="Image of the system disk it was taken of")
    host_id: Mapped[str] = mapped_column(String(32), index=True)
    zone_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    instance_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    policy_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # progressing | accomplished | failed (agent reports)
    status: Mapped[str] = mapped_column(String(16), default="progressing", index=True)
    status_reason: Mapped[str] = mapped_column(Text, default="")
    accomplished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StorageOperation(Timestamped, Base):
    """A one-shot rollback or export carried in the host spec until the agent reports it."""

    __tablename__ = "storage_operations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = project_column()
    host_id: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # reset_disk | export_snapshot
    disk_id: Mapped[str] = mapped_column(String(32), index=True)
    snapshot_id: Mapped[str] = mapped_column(String(32))
    image_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # pending | succeeded | failed | cancelled
    outcome: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SnapshotPolicy(Timestamped, Base):
    """Automatic snapshots: at these hours (UTC) on these weekdays, kept ``retention_days``."""

    __tablename__ = "snapshot_policies"
    __table_args__ = (UniqueConstraint("project_id", "name"),)  # names belong to the project

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = project_column()
    name: Mapped[str] = mapped_column(String(128))
    hours: Mapped[str] = mapped_column(String(128), doc="Comma-separated hours 0-23")
    weekdays: Mapped[str] = mapped_column(String(32), doc="Comma-separated 1-7 (Monday=1)")
    retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True,
                                                       doc="None: kept forever")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_run_slot: Mapped[int | None] = mapped_column(
        BigInteger, nullable=True, doc="Hour slot (epoch hours) last run, so a slot runs once")


class DiskSnapshotPolicy(Base):
    __tablename__ = "disk_snapshot_policies"

    disk_id: Mapped[str] = mapped_column(ForeignKey("disks.id", ondelete="CASCADE"),
                                         primary_key=True)
    policy_id: Mapped[str] = mapped_column(ForeignKey("snapshot_policies.id", ondelete="CASCADE"),
                                           index=True)
