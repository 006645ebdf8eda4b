"""Admin API tokens (stored hashed; the token itself is shown once)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from controller.schemas.common import CreatedAt, Name, NextToken, Request, View


class ApiTokenCreate(Request):
    name: Name = Field(description="What the token is for", examples=["ci"])


class ApiToken(View):
    id: str = Field(description="Token id", examples=["tok-5e7g9j1l3n5q7s9u1w3y"])
    name: str = Field(description="What the token is for", examples=["ci"])
    role: str = Field(description="admin", examples=["admin"])
    created_at: CreatedAt
    revoked_at: datetime | None = Field(description="When revoked", examples=[None])


class ApiTokenCreated(ApiToken):
    token: str = Field(description="The bearer token; shown only once",
                       examples=["mecs_3q2x..."])


class ApiTokenList(View):
    items: list[ApiToken] = Field(description="Tokens on this page")
    next_token: NextToken = None
