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


class InstanceModify(Request):
    """ECS ModifyInstanceAttribute: every field optional; only those given change."""

    name: Name | None = Field(default=None, description="New name", examples=["web-2"])
    description: Description | None = Field(default=None, description="Free text",
                                            examples=["frontend"])
    deletion_protection: bool | None = Field(default=None, description="Refuse deletes while set",
                                             examples=[True])
    hostname: Hostname | None = Field(
        default=None, description="Guest host name; the seed is rewritten at once and the "
        "guest takes it at its next boot (as cloud-init does)", examples=["web-2"])
    user_data: UserData | None = Field(
        default=None, description="New user data (instance must be Stopped, as in ECS); "
        "empty string clears it", examples=["#!/bin/sh\necho hi\n"])
    security_group_ids: list[ResourceId] | None = Field(
        default=None, description="Replace the primary NIC's groups with these 1-5 groups of "
        "its VPC (running instances too: the host's firewall follows within a second)",
        examples=[["sg-4c6e8g0j2l4n6q8s0u2w"]])


class InstanceBatchCreate(InstanceCreate):
    """ECS RunInstances: ``amount`` instances from one request, all placed or none.

    ``name`` and ``hostname`` may hold one ``[begin,digits]`` pattern
    (``web-[1,3]`` → web-001, web-002, …) or ``${instance_id}``.
    """

    name: str = Field(min_length=1, max_length=160,  # type: ignore[assignment]
                      description="Name, or a pattern prefix[begin,digits]suffix "
                      "(begin 0-999999, digits 1-6) or one with ${instance_id}",
                      examples=["web-[1,3]"])
    hostname: str | None = Field(default=None, min_length=1, max_length=96,  # type: ignore[assignment]
                                 description="Host name or pattern as for name; default: "
                                 "the instance id", examples=["web-[1,3]"])
    amount: int = Field(default=1, description=f"How many instances, 1-{MAX_BATCH}",
                        examples=[3])


class InstanceBatch(View):
    items: list[Instance] = Field(description="The instances of the batch, in pattern order")
    created: bool = Field(description="False when the client token names an earlier batch",
                          examples=[True])
