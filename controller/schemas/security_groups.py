"""Security groups: belong to a VPC; NICs are members. (Rules come with their own issue.)"""

from __future__ import annotations

from pydantic import Field

from controller.schemas.common import (
    CreatedAt, Description, Name, NextToken, Request, ResourceId, View,
)


class SecurityGroupCreate(Request):
    name: Name = Field(description="Group name", examples=["web"])
    vpc_id: ResourceId = Field(description="VPC of the group",
                               examples=["vpc-2m4n6p8r0t2v4x6z8b0d"])
    description: Description = Field(default="", description="Free text", examples=["http in"])


class SecurityGroup(View):
    id: str = Field(description="Group id", examples=["sg-4c6e8g0j2l4n6q8s0u2w"])
    name: str = Field(description="Group name", examples=["web"])
    description: str = Field(description="Free text", examples=["http in"])
    vpc_id: str = Field(description="VPC id", examples=["vpc-2m4n6p8r0t2v4x6z8b0d"])
    member_count: int = Field(description="NICs in the group", examples=[3])
    created_at: CreatedAt


class SecurityGroupList(View):
    items: list[SecurityGroup] = Field(description="Security groups on this page")
    next_token: NextToken = None
