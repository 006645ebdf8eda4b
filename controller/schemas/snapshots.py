"""Snapshots: point-in-time copies of a disk; they outlive the disk."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, StrictInt, field_validator

from controller.schemas.common import CreatedAt, Description, NextToken, Request, ResourceId, View

SnapshotStatus = Literal["progressing", "accomplished", "failed"]


class SnapshotCreate(Request):
    disk_id: ResourceId = Field(description="Disk to snapshot (instance Running or Stopped)",
                                examples=["d-2b7c9e1f0a3d5c6b8e9f"])
    name: str = Field(default="", max_length=128, description="Snapshot name",
                      examples=["before-upgrade"])
    description: Description = Field(default="", description="Free text", examples=["nightly"])
    retention_days: int | None = Field(default=None, ge=1, le=65536,
                                       description="Delete it after this many days; default: "
                                       "kept until deleted", examples=[7])


class Snapshot(View):
    id: str = Field(description="Snapshot id", examples=["s-7d1c3b5a9e2f4d6c8b0a"])
    name: str = Field(description="Snapshot name", examples=["before-upgrade"])
    description: str = Field(description="Free text", examples=["nightly"])
    disk_id: str = Field(description="Disk it was taken of (may be deleted since)",
                         examples=["d-2b7c9e1f0a3d5c6b8e9f"])
    disk_role: str = Field(description="system or data", examples=["data"])
    disk_size_gib: int = Field(description="Size of the disk when taken", examples=[20])
    image_id: str | None = Field(description="Image of the system disk it was taken of",
                                 examples=[None])
    host_id: str = Field(description="Host holding it"
                         " (to a tenant: an opaque id of that host within its project, the same for its resources on one host)", examples=["h-0a1b2c3d4e5f6g7h8i9j"])
    instance_id: str | None = Field(description="Instance the disk was attached to",
                                    examples=["i-9f3b1c7d2e4a6b8c0d1e"])
    policy_id: str | None = Field(description="Policy that made it (automatic snapshot)",
                                  examples=[None])
    retention_days: int | None = Field(description="Kept this many days; null: until deleted",
                                       examples=[7])
    expires_at: datetime | None = Field(description="When it will be deleted",
                                        examples=["2024-05-08T12:00:00Z"])
    status: SnapshotStatus = Field(description="progressing, accomplished or failed",
                                   examples=["accomplished"])
    status_reason: str = Field(description="Why it failed", examples=[""])
    accomplished_at: datetime | None = Field(description="When the host reported it taken",
                                             examples=["2024-05-01T12:00:00Z"])
    created_at: CreatedAt


class SnapshotList(View):
    items: list[Snapshot] = Field(description="Snapshots in creation order", examples=[[]])
    next_token: NextToken = None


class SnapshotPolicyCreate(Request):
    name: str = Field(min_length=1, max_length=128, description="Policy name (unique)",
                      examples=["nightly"])
    # strict: a JSON `false` is not hour 0
    hours: list[StrictInt] = Field(
        min_length=1, max_length=24, description="Hours of the day (UTC, 0-23) at which "
        "snapshots are taken", examples=[[2, 14]])
    weekdays: list[StrictInt] = Field(
        min_length=1, max_length=7, description="Days of the week (1-7, Monday=1)",
        examples=[[1, 2, 3, 4, 5, 6, 7]])
    retention_days: StrictInt | None = Field(default=None, ge=1, le=65536, description="Delete its "
                                       "snapshots after this many days; default: forever",
                                       examples=[7])

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: list[int]) -> list[int]:
        if any(h < 0 or h > 23 for h in v):
            raise ValueError("hours are 0-23")
        return sorted(set(v))

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, v: list[int]) -> list[int]:
        if any(d < 1 or d > 7 for d in v):
            raise ValueError("weekdays are 1-7 (Monday=1)")
        return sorted(set(v))


class SnapshotPolicyDisks(Request):
    disk_ids: list[ResourceId] = Field(min_length=1, max_length=100, description="Disks",
                                       examples=[["d-2b7c9e1f0a3d5c6b8e9f"]])


class SnapshotPolicy(View):
    id: str = Field(description="Policy id", examples=["sp-7d1c3b5a9e2f4d6c8b0a"])
    name: str = Field(description="Policy name", examples=["nightly"])
    hours: list[int] = Field(description="Hours (UTC)", examples=[[2, 14]])
    weekdays: list[int] = Field(description="Weekdays (Monday=1)", examples=[[1, 3, 5]])
    retention_days: int | None = Field(description="Days kept; null: forever", examples=[7])
    disk_ids: list[str] = Field(description="Disks it is applied to",
                                examples=[["d-2b7c9e1f0a3d5c6b8e9f"]])
    created_at: CreatedAt


class SnapshotPolicyList(View):
    items: list[SnapshotPolicy] = Field(description="Policies on this page")
    next_token: NextToken = None
