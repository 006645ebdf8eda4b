"""Elastic IPs: public addresses from the region's pool, mapped 1:1 onto an instance."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from controller.schemas.common import CreatedAt, NextToken, PrivateIp, Request, ResourceId, View


class EipAllocate(Request):
    name: str = Field(default="", max_length=128, description="Free-form name", examples=["web"])
    ip_address: PrivateIp | None = Field(
        default=None, description="A specific address of the pool; default: the lowest free one",
        examples=["203.0.113.130"])


class EipAssociate(Request):
    instance_id: ResourceId = Field(description="Instance whose private IP the EIP maps onto",
                                    examples=["i-9f3b1c7d2e4a6b8c0d1e"])


class Eip(View):
    id: str = Field(description="EIP id", examples=["eip-4c6e8g0j2l4n6q8s0u2w"])
    name: str = Field(description="Free-form name", examples=["web"])
    ip_address: str = Field(description="The public address", examples=["203.0.113.130"])
    status: str = Field(description="Available or InUse", examples=["InUse"])
    instance_id: str | None = Field(default=None, description="Associated instance",
                                    examples=["i-9f3b1c7d2e4a6b8c0d1e"])
    private_ip_address: str | None = Field(default=None, description="The instance's private IP",
                                           examples=["10.0.1.23"])
    associated_at: datetime | None = Field(default=None, description="When it was associated",
                                           examples=["2026-01-01T00:00:00Z"])
    created_at: CreatedAt


class EipList(View):
    items: list[Eip] = Field(description="EIPs on this page")
    next_token: NextToken = None
