"""VPCs: private networks; CIDRs of different VPCs may overlap."""

from __future__ import annotations

from pydantic import Field

from controller.schemas.common import (
    CreatedAt, Description, Name, NextToken, Request, View, VpcCidr,
)


class VpcCreate(Request):
    name: Name = Field(description="VPC name", examples=["prod"])
    cidr_block: VpcCidr = Field(description="Private IPv4 block, prefix /8 to /28",
                                examples=["10.0.0.0/16"])
    description: Description = Field(default="", description="Free text", examples=["prod"])


class Vpc(View):
    id: str = Field(description="VPC id", examples=["vpc-2m4n6p8r0t2v4x6z8b0d"])
    name: str = Field(description="VPC name", examples=["prod"])
    description: str = Field(description="Free text", examples=["prod"])
    cidr_block: str = Field(description="IPv4 block", examples=["10.0.0.0/16"])
    vni: int = Field(description="VXLAN network identifier", examples=[5001])
    created_at: CreatedAt


class VpcList(View):
    items: list[Vpc] = Field(description="VPCs on this page")
    next_token: NextToken = None
