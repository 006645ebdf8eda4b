"""One-time host enrolment tokens (what `miniecs host add` gives the agent it installs)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from controller.schemas.common import Name, Request, View


class EnrolmentTokenCreate(Request):
    host_name: Name = Field(description="The only host name this token may enrol",
                            examples=["hv-1"])
    ttl_seconds: int = Field(default=3600, ge=60, le=7 * 86400, strict=True,
                             description="Seconds until the token expires unused",
                             examples=[3600])


class EnrolmentTokenCreated(View):
    token: str = Field(description="The token; shown only once, valid for one enrolment",
                       examples=["mecse_7h2k..."])
    host_name: str = Field(description="The host name it enrols", examples=["hv-1"])
    expires_at: datetime = Field(description="When it stops working",
                                 examples=["2026-01-01T12:00:00Z"])
