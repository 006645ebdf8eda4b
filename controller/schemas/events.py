"""Events: API mutations (audit) and resource status transitions, oldest first."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from controller.schemas.common import View

EventKind = Literal["api", "status"]


class Event(View):
    id: int = Field(description="Monotonic event id; the cursor of paging and follow",
                    examples=[1042])
    created_at: datetime = Field(description="When it happened (UTC)",
                                 examples=["2024-05-01T12:00:00Z"])
    kind: EventKind = Field(description="api: a mutation through the API; status: a resource's "
                            "status changed", examples=["api"])
    resource_type: str = Field(description="instance, host, disk, snapshot, image, ...",
                               examples=["instance"])
    resource_id: str = Field(description="Id of the resource (empty when a create failed)",
                             examples=["i-0a1b2c3d4e5f6g7h8i9j"])
    actor_type: str = Field(description="token (an API token), host (an agent), enrolment, "
                            "anonymous (no valid token), or controller (a background duty)",
                            examples=["token"])
    actor_id: str = Field(description="Token or host id", examples=["tok-0a1b2c3d4e5f6g7h8i9j"])
    actor_name: str = Field(description="Token or host name, or the background duty",
                            examples=["admin"])
    project_id: str | None = Field(default=None, description="Project of the resource or of "
                                   "the calling API key (null: none, e.g. a host)",
                                   examples=["default"])
    method: str = Field(description="api: HTTP method", examples=["POST"])
    route: str = Field(description="api: route template", examples=["/api/v1/instances"])
    status_code: int | None = Field(description="api: HTTP status of the answer", examples=[202])
    error_code: str = Field(description="api: ECS error code of a failed call", examples=[""])
    request_id: str = Field(description="The request's id (X-Request-Id)",
                            examples=["req-4f1c2b7a9e0d"])
    request: str = Field(description="api: the request body and query as JSON, secrets "
                         "(tokens, passwords, private keys, user data) replaced by <redacted>",
                         examples=['{"body":{"name":"web-1","user_data":"<redacted>"}}'])
    old_status: str = Field(description="status: the status before", examples=["Starting"])
    new_status: str = Field(description="status: the status after", examples=["Running"])
    cause: str = Field(description="status: what changed it (the API call, an agent report, "
                       "a background duty)", examples=["POST /api/v1/agent/report"])
    message: str = Field(description="status: the reason shown with the new status",
                         examples=[""])


class EventList(View):
    items: list[Event] = Field(description="Events on this page, in the order asked")
    next_token: str | None = Field(default=None, description="Pass as next_token for the next "
                                   "page; null when there are no more right now", examples=["1042"])
    last_id: int = Field(description="Highest event id seen: pass as `after` to follow",
                         examples=[1042])
