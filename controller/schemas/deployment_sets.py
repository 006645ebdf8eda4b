"""Deployment sets (ECS CreateDeploymentSet): instances spread over hosts.

Strategy ``Availability`` is strict anti-affinity: at most one member of a set
per host; a create that finds no host left fails with
``DeploymentSet.NoAvailableHost``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controller.schemas.common import CreatedAt, Description, Name, NextToken, Request, View

Strategy = Literal["Availability"]


class DeploymentSetCreate(Request):
    name: Name = Field(description="Deployment set name", examples=["web-ha"])
    strategy: Strategy = Field(default="Availability",
                               description="Availability: at most one member per host",
                               examples=["Availability"])
    description: Description = Field(default="", description="Free text",
                                     examples=["front ends, one per host"])


class DeploymentSet(View):
    id: str = Field(description="Deployment set id", examples=["ds-7k2m4p6r8t0v2x4z6b8d"])
    name: str = Field(description="Deployment set name", examples=["web-ha"])
    description: str = Field(description="Free text", examples=["front ends, one per host"])
    strategy: Strategy = Field(description="Placement strategy", examples=["Availability"])
    instance_ids: list[str] = Field(description="Live members (not Deleted)",
                                    examples=[["i-9f3b1c7d2e4a6b8c0d1e"]])
    host_ids: list[str] = Field(description="Hosts holding a member, one member each (to a "
                                "tenant: opaque ids of those hosts within its project)",
                                examples=[["h-0a1b2c3d4e5f6g7h8i9j"]])
    created_at: CreatedAt


class DeploymentSetList(View):
    items: list[DeploymentSet] = Field(description="Deployment sets on this page")
    next_token: NextToken = None
