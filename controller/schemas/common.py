"""Shared wire types: validated strings, the error body, paging."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from controller import validation
from controller.errors import InvalidParameter

MAX_PAGE = 100
DEFAULT_PAGE = 50


def _checked(fn: Callable[[str], str]) -> AfterValidator:
    """Run a ``controller.validation`` check; its ECS code becomes the pydantic error type."""

    def run(value: str) -> str:
        try:
            return fn(value)
        except InvalidParameter as exc:
            raise PydanticCustomError(exc.code, exc.message) from None

    return AfterValidator(run)


Name = Annotated[str, Field(min_length=1, max_length=128), _checked(validation.validate_name)]
Description = Annotated[str, Field(max_length=256), _checked(validation.validate_description)]
Hostname = Annotated[str, Field(min_length=1, max_length=64),
                     _checked(validation.validate_hostname)]
UserData = Annotated[str, _checked(validation.validate_user_data)]
VpcCidr = Annotated[str, Field(max_length=43), _checked(validation.validate_vpc_cidr)]
VSwitchCidr = Annotated[str, Field(max_length=43), _checked(validation.validate_vswitch_cidr)]
PrivateIp = Annotated[str, Field(max_length=39), _checked(validation.validate_ipv4)]
ResourceId = Annotated[str, Field(min_length=1, max_length=64)]


class Request(BaseModel):
    """Requests refuse unknown fields, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid")


class View(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer has this shape."""

    code: str = Field(description="ECS-style error code",
                      examples=["InvalidVSwitchCidr.Overlapped"])
    message: str = Field(description="What was wrong, for a human",
                         examples=["10.0.1.0/24 overlaps vSwitch vsw-... (10.0.0.0/16)"])
    field: str | None = Field(default=None, description="The request field at fault, if any",
                              examples=["cidr_block"])
    request_id: str = Field(description="Id of this request in the controller's log",
                            examples=["req-4f1c2b7a9e0d"])


CreatedAt = Annotated[datetime, Field(description="When the resource was created (UTC)",
                                      examples=["2024-05-01T12:00:00Z"])]
NextToken = Annotated[str | None, Field(
    description="Pass as next_token to get the next page; null on the last page",
    examples=[None])]
