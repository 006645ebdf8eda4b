"""Migrations: moving an instance to another host (live when Running, cold when Stopped)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from controller.schemas.common import CreatedAt, NextToken, Request, ResourceId, View

MigrationState = Literal["freezing", "migrating", "exporting", "importing", "cancelling",
                         "completed", "failed", "cancelled"]


class MigrationCreate(Request):
    host_id: ResourceId | None = Field(
        default=None, description="Target host; default: the scheduler's choice among the "
        "other ready hosts of the instance's zone", examples=["h-0a1b2c3d4e5f6g7h8i9j"])


class Migration(View):
    id: str = Field(description="Migration id", examples=["mig-3k9d8f7g6h5j4k3l2m1n"])
    instance_id: str = Field(description="Instance moved", examples=["i-9f3b1c7d2e4a6b8c0d1e"])
    kind: Literal["live", "cold"] = Field(description="live: the guest keeps running, memory "
                                          "and disks copied; cold: a stopped instance's disk "
                                          "files copied", examples=["live"])
    source_host_id: str = Field(description="Host it leaves (to a tenant: an opaque id)", examples=["h-0a1b2c3d4e5f6g7h8i9j"])
    target_host_id: str = Field(description="Host it goes to (to a tenant: an opaque id)", examples=["h-1b2c3d4e5f6g7h8i9j0k"])
    state: MigrationState = Field(
        description="live: freezing (the source holds the domain still) → migrating → "
        "completed | failed; cold: exporting → importing → completed | failed; a cancel: "
        "cancelled (from freezing, exporting, importing), or cancelling → cancelled | "
        "completed (from migrating: completed when the switch-over came first)",
        examples=["completed"])
    is_final: bool = Field(description="True once completed, failed or cancelled",
                           examples=[True])
    message: str = Field(description="Why it failed, or what it did", examples=[""])
    drain_host_id: str | None = Field(description="The host whose drain asked for it",
                                      examples=[None])
    duration_s: float | None = Field(description="Seconds from request to completion",
                                     examples=[7.4])
    created_at: CreatedAt
    finished_at: datetime | None = Field(description="When it ended",
                                         examples=["2024-05-01T12:00:07Z"])


class MigrationList(View):
    items: list[Migration] = Field(description="Migrations on this page")
    next_token: NextToken = None


class HostDrain(View):
    host_id: str = Field(description="Host being drained", examples=["h-0a1b2c3d4e5f6g7h8i9j"])
    maintenance: bool = Field(description="The host is in maintenance", examples=[True])
    instances_left: list[str] = Field(description="Instances still placed on the host",
                                      examples=[["i-9f3b1c7d2e4a6b8c0d1e"]])
    migrations: list[Migration] = Field(description="Migrations this drain started")
    not_moved: dict[str, str] = Field(
        description="Instances this call could not move, with the reason (e.g. a status "
        "that is neither Running nor Stopped); run the drain again once they settle",
        examples=[{"i-9f3b1c7d2e4a6b8c0d1e": "IncorrectInstanceStatus: instance is Starting"}])
    done: bool = Field(description="The host holds no instance any more", examples=[False])
