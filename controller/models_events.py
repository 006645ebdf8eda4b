"""The event log: API mutations (audit) and resource status transitions.

One table for both kinds so one query (and one ``--follow``) shows a resource's
whole story in order. ``id`` is monotonic and is the cursor of paging and of
the follow long-poll. Rows never carry secrets: request bodies are stored only
after ``controller.audit.redact`` and responses never.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from controller.models import Base, UTCDateTime, utcnow
from controller.models_owner import optional_project_column

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias).
EventId = BigInteger().with_variant(Integer(), "sqlite")


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_resource", "resource_id", "id"),)

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    project_id: Mapped[str | None] = optional_project_column("Project of the resource")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # api (a mutation through the API) | status (a resource's status changed)
    kind: Mapped[str] = mapped_column(String(8), index=True)
    resource_type: Mapped[str] = mapped_column(String(32), default="", index=True)
    resource_id: Mapped[str] = mapped_column(String(64), default="")
    # who: an API token (id, name), a host (agent), or the controller itself
    actor_type: Mapped[str] = mapped_column(String(16), default="")
    actor_id: Mapped[str] = mapped_column(String(64), default="")
    actor_name: Mapped[str] = mapped_column(String(128), default="")
    # api events: what and the outcome
    method: Mapped[str] = mapped_column(String(8), default="")
    route: Mapped[str] = mapped_column(String(256), default="")
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_code: Mapped[str] = mapped_column(String(128), default="")
    request_id: Mapped[str] = mapped_column(String(32), default="")
    request: Mapped[str] = mapped_column(Text, default="", doc="Redacted request (JSON)")
    # status events: old -> new, and why
    old_status: Mapped[str] = mapped_column(String(32), default="")
    new_status: Mapped[str] = mapped_column(String(32), default="")
    cause: Mapped[str] = mapped_column(String(256), default="")
    message: Mapped[str] = mapped_column(Text, default="")
