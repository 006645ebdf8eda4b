"""Cloud disks: data disks created, attached, detached, resized, rolled back; system disks read.

A disk is a local qcow2 file on one host. ``status`` comes from agent
reports: Creating → Available ⇄ (Attaching → In_use → Detaching); Error with
``status_reason``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from controller.schemas.common import CreatedAt, Description, NextToken, Request, ResourceId, View

DiskStatus = Literal["Creating", "Available", "Attaching", "In_use", "Detaching", "Error"]


class DiskCreate(Request):
    name: str = Field(default="", max_length=128, description="Disk name", examples=["data-1"])
    size_gib: int | None = Field(default=None, ge=1, le=32768,
                                 description="Size in GiB; default: the snapshot's size",
                                 examples=[20])
    zone_id: ResourceId | None = Field(default=None, description="Zone (default: the instance's "
                                       "or zone-a)", examples=["zone-a"])
    instance_id: ResourceId | None = Field(
        default=None, description="Create on this instance's host and attach to it",
        examples=["i-9f3b1c7d2e4a6b8c0d1e"])
    host_id: ResourceId | None = Field(
        default=None, description="Create on this host (admin only: 403 Forbidden.AdminOnly for "
        "a tenant key; default: the snapshot's host, else the zone's host with the most free "
        "disk)", examples=["h-0a1b2c3d4e5f6g7h8i9j"])
    snapshot_id: ResourceId | None = Field(
        default=None, description="Fill the disk from this snapshot (copied from the host that "
        "holds it when the disk is made on another host)", examples=["s-7d1c3b5a9e2f4d6c8b0a"])
    delete_with_instance: bool = Field(default=False, description="Delete it with the instance "
                                       "it is attached to", examples=[False])
    description: Description = Field(default="", description="Free text", examples=["logs"])


class DiskAttach(Request):
    instance_id: ResourceId = Field(description="Instance (same host; Running or Stopped)",
                                    examples=["i-9f3b1c7d2e4a6b8c0d1e"])
    delete_with_instance: bool | None = Field(default=None, description="Change the flag",
                                              examples=[False])


class DiskResize(Request):
    size_gib: int = Field(ge=1, le=32768, description="New size in GiB (grow only)",
                          examples=[40])


class DiskReset(Request):
    snapshot_id: ResourceId = Field(description="Snapshot of this disk to roll back to",
                                    examples=["s-7d1c3b5a9e2f4d6c8b0a"])


class Disk(View):
    id: str = Field(description="Disk id", examples=["d-2b7c9e1f0a3d5c6b8e9f"])
    name: str = Field(description="Disk name", examples=["data-1"])
    description: str = Field(description="Free text", examples=["logs"])
    role: str = Field(description="system or data", examples=["data"])
    size_gib: int = Field(description="Size in GiB", examples=[20])
    zone_id: str | None = Field(description="Zone", examples=["zone-a"])
    host_id: str | None = Field(description="Host holding the file"
                                " (to a tenant: an opaque id of that host within its project, the same for its resources on one host)", examples=["h-0a1b2c3d4e5f6g7h8i9j"])
    instance_id: str | None = Field(description="Instance it is (to be) attached to",
                                    examples=["i-9f3b1c7d2e4a6b8c0d1e"])
    device: str | None = Field(description="Guest device while attached", examples=["vdb"])
    image_id: str | None = Field(description="Image of a system disk", examples=[None])
    source_snapshot_id: str | None = Field(description="Snapshot it was made from", examples=[None])
    delete_with_instance: bool = Field(description="Deleted with its instance", examples=[False])
    status: DiskStatus = Field(description="Status from agent reports", examples=["In_use"])
    status_reason: str = Field(description="Why Error / last agent error", examples=[""])
    attached_to: str | None = Field(description="Instance the host last saw it attached to",
                                    examples=["i-9f3b1c7d2e4a6b8c0d1e"])
    observed_size_bytes: int | None = Field(description="Virtual size the host last saw",
                                            examples=[21474836480])
    chain_depth: int | None = Field(description="Files in its qcow2 backing chain (itself "
                                    "included)", examples=[1])
    snapshot_count: int = Field(description="Snapshots of this disk", examples=[2])
    policy_id: str | None = Field(description="Automatic snapshot policy applied", examples=[None])
    created_at: CreatedAt


class DiskList(View):
    items: list[Disk] = Field(description="Disks in creation order", examples=[[]])
    next_token: NextToken = None


class DiskOperation(View):
    id: str = Field(description="Operation id", examples=["op-1a2b3c4d5e6f7g8h9i0j"])
    kind: str = Field(description="reset_disk or export_snapshot", examples=["reset_disk"])
    disk_id: str = Field(description="Disk", examples=["d-2b7c9e1f0a3d5c6b8e9f"])
    snapshot_id: str = Field(description="Snapshot", examples=["s-7d1c3b5a9e2f4d6c8b0a"])
    outcome: str = Field(description="pending, succeeded, failed or cancelled",
                         examples=["pending"])
    is_final: bool = Field(description="True once the outcome will not change", examples=[False])
    message: str = Field(description="The agent's message", examples=[""])
    created_at: CreatedAt
    finished_at: datetime | None = Field(description="When it finished",
                                         examples=["2024-05-01T12:00:03Z"])
