"""Projects (tenants) with quotas and usage, users, and API keys (shown once)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StrictInt

from controller.schemas.common import CreatedAt, Description, Name, NextToken, Request, View

ProjectId = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9-]{0,31}$",
                                 description="Project id: lowercase letters, digits, dashes",
                                 examples=["acme"])]
Role = Literal["admin", "member", "read-only"]
QuotaValue = Annotated[StrictInt | None, Field(ge=0, le=2 ** 31 - 1,
                                         description="Limit; null means unlimited",
                                         examples=[10])]


class Quota(Request):
    """Limits per project; null (or absent at creation) means unlimited."""

    instances: QuotaValue = None
    vcpus: QuotaValue = None
    memory_mib: QuotaValue = None
    disks: QuotaValue = None
    disk_gib: QuotaValue = None
    eips: QuotaValue = None
    snapshots: QuotaValue = None


class QuotaUpdate(Quota):
    """Only the fields sent change; send null to lift a limit."""


class Usage(View):
    instances: int = Field(description="Instances not deleted", examples=[3])
    vcpus: int = Field(description="vCPUs of those instances", examples=[6])
    memory_mib: int = Field(description="Memory of those instances (MiB)", examples=[3072])
    disks: int = Field(description="Disks (system and data)", examples=[4])
    disk_gib: int = Field(description="Their total size (GiB)", examples=[80])
    eips: int = Field(description="Elastic IPs allocated", examples=[1])
    snapshots: int = Field(description="Snapshots kept", examples=[2])


class ProjectCreate(Request):
    id: ProjectId
    description: Description = Field(default="", description="Free text",
                                     examples=["the acme team"])
    quota: Quota = Field(default_factory=Quota, description="Initial limits (default none)")


class Project(View):
    id: str = Field(description="Project id", examples=["acme"])
    description: str = Field(description="Free text", examples=["the acme team"])
    created_at: CreatedAt
    quota: Quota = Field(description="Limits (null: unlimited)")
    usage: Usage = Field(description="What the project uses now")


class ProjectList(View):
    items: list[Project] = Field(description="Projects on this page")
    next_token: NextToken = None


class UserCreate(Request):
    name: Name = Field(description="Login-style name, unique in the region", examples=["alice"])
    project_id: ProjectId


class User(View):
    id: str = Field(description="User id", examples=["u-5e7g9j1l3n5q7s9u1w3y"])
    name: str = Field(description="User name", examples=["alice"])
    project_id: str = Field(description="The user's project", examples=["acme"])
    created_at: CreatedAt


class UserList(View):
    items: list[User] = Field(description="Users on this page")
    next_token: NextToken = None


class ApiKeyCreate(Request):
    user_id: str = Field(min_length=1, max_length=32, description="The user holding the key",
                         examples=["u-5e7g9j1l3n5q7s9u1w3y"])
    role: Role = Field(description="admin: every project; member: read/write in the user's "
                       "project; read-only: reads only", examples=["member"])
    name: Name = Field(default="key", description="What the key is for", examples=["laptop"])


class ApiKey(View):
    id: str = Field(description="Key id", examples=["tok-5e7g9j1l3n5q7s9u1w3y"])
    name: str = Field(description="What the key is for", examples=["laptop"])
    user_id: str | None = Field(description="Holder (null: an admin token)", examples=["u-1"])
    project_id: str | None = Field(description="Project (null: every project)",
                                   examples=["acme"])
    role: str = Field(description="admin | member | read-only", examples=["member"])
    created_at: CreatedAt
    revoked_at: datetime | None = Field(description="When revoked", examples=[None])


class ApiKeyCreated(ApiKey):
    key: str = Field(description="The bearer key; shown only once", examples=["mecsk_3q2x..."])


class ApiKeyList(View):
    items: list[ApiKey] = Field(description="Keys on this page")
    next_token: NextToken = None
