"""Operations: one-shot actions (reboot) the agent runs at most once."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from controller.schemas.common import CreatedAt, View


class Operation(View):
    id: str = Field(description="Operation id", examples=["op-7d9f1h3k5m7p9r1t3v5x"])
    instance_id: str = Field(description="Instance", examples=["i-9f3b1c7d2e4a6b8c0d1e"])
    kind: Literal["reboot"] = Field(description="What it does", examples=["reboot"])
    force: bool = Field(description="Hard instead of graceful", examples=[False])
    outcome: Literal["pending", "succeeded", "failed", "cancelled"] = Field(
        description="pending until the agent reports", examples=["succeeded"])
    is_final: bool = Field(description="True once the outcome will not change", examples=[True])
    message: str = Field(description="The agent's message", examples=[""])
    created_at: CreatedAt
    finished_at: datetime | None = Field(description="When the outcome was recorded",
                                         examples=["2024-05-01T12:00:07Z"])
