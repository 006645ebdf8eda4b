"""Instance operations after launch: type change, system disk replacement and re-init,
attribute changes, batch create (ECS ModifyInstanceSpec, ReplaceSystemDisk, ReInitDisk,
ModifyInstanceAttribute, RunInstances with Amount)."""

from __future__ import annotations

from pydantic import Field

from controller.schemas.common import (
    Description, Hostname, Name, Request, ResourceId, UserData, View,
)
from controller.schemas.instances import Instance, InstanceCreate

MAX_BATCH = 100


class InstanceTypeChange(Request):
    instance_type: ResourceId = Field(description="New instance type (the instance must be "
                                      "Stopped; its host must have room)",
                                      examples=["ecs.t1.medium"])


class SystemDiskReplace(Request):
    image_id: ResourceId = Field(description="Image of the new system disk (must be Available)",
                                 examples=["m-8v1kq0x2y3z4a5b6c7d8"])
    system_disk_size_gib: int | None = Field(
        default=None, ge=1, le=2048,
        description="Size of the new disk; default: the larger of the old size and the "
        "image's minimum", examples=[10])
    key_pair_id: ResourceId | None = Field(
        default=None, description="Authorise this key pair from now on (default: keep the "
        "instance's)", examples=["kp-1a2b3c4d5e6f7g8h9i0j"])
