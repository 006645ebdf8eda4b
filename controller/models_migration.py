"""The migration table: an instance moving from one host to another (live or cold).

A row is the whole record of one move: who asked (``drain_host_id`` when a
drain did), where from and to, the phase it is in and how it ended. The
services in ``controller/services/migrations.py`` drive it from agent reports.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from controller.models import Base, Timestamped, UTCDateTime
from controller.models_owner import project_column

# live:  freezing -> migrating -> completed | failed
# cold:  exporting -> importing -> completed | failed
# cancel: freezing, exporting, importing -> cancelled; migrating -> cancelling -> cancelled
#         (or completed, when the switch-over came first)
ACTIVE_STATES = ("freezing", "migrating", "exporting", "importing", "cancelling")


class Migration(Timestamped, Base):
    __tablename__ = "migrations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = project_column()
    instance_id: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # live | cold
    source_host_id: Mapped[str] = mapped_column(String(32), index=True)
    target_host_id: Mapped[str] = mapped_column(String(32), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    drain_host_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    freeze_generation: Mapped[int | None] = mapped_column(
        BigInteger, nullable=True, doc="Source host generation whose spec holds the instance still")
    disks: Mapped[str] = mapped_column(Text, default="{}",
                                       doc="Cold: JSON {disk id: {sha256, size}} as uploaded")
    # what the target reserved (released there if it fails, at the source if it completes)
    vcpus: Mapped[int] = mapped_column(Integer, default=0)
    memory_mib: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_gib: Mapped[int] = mapped_column(BigInteger, default=0)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
