"""Zones: a region's failure domains; every host and vSwitch is in one."""

from __future__ import annotations

from pydantic import Field

from controller.schemas.common import CreatedAt, Description, Name, NextToken, Request, View


class ZoneCreate(Request):
    name: Name = Field(description="Zone name; it is also the zone's id", examples=["zone-a"])
    description: Description = Field(default="", description="Free text", examples=["rack 1"])


class Zone(View):
    id: str = Field(description="Zone id (the same as its name)", examples=["zone-a"])
    name: str = Field(description="Zone name", examples=["zone-a"])
    description: str = Field(description="Free text", examples=["rack 1"])
    created_at: CreatedAt


class ZoneList(View):
    items: list[Zone] = Field(description="Zones on this page")
    next_token: NextToken = None
