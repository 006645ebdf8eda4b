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
