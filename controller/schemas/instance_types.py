"""Instance types: named vCPU/memory shapes (``ecs.t1.small``)."""

from __future__ import annotations

from pydantic import Field

from controller.schemas.common import CreatedAt, Description, Name, NextToken, Request, View


class InstanceTypeCreate(Request):
    id: Name = Field(description="Type id", examples=["ecs.c1.xlarge"])
    vcpus: int = Field(ge=1, le=256, description="Virtual CPUs", examples=[4])
    memory_mib: int = Field(ge=64, le=4 * 1024 * 1024, description="Memory in MiB",
                            examples=[8192])
    description: Description = Field(default="", description="Free text", examples=["compute"])


class InstanceType(View):
    id: str = Field(description="Type id", examples=["ecs.t1.small"])
    vcpus: int = Field(description="Virtual CPUs", examples=[1])
    memory_mib: int = Field(description="Memory in MiB", examples=[1024])
    description: str = Field(description="Free text", examples=["burstable, small"])
    created_at: CreatedAt


class InstanceTypeList(View):
    items: list[InstanceType] = Field(description="Instance types on this page")
    next_token: NextToken = None
