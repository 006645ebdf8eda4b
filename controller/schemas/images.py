"""Images: qcow2 or raw files in the controller's image store."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from controller.schemas.common import CreatedAt, Description, Name, NextToken, Request, View

ImageStatus = Literal["Creating", "Available", "Error"]


class ImageCreate(Request):
    """Import an image. Exactly one of ``source_path`` and ``source_url``."""

    name: Name = Field(description="Image name (unique)", examples=["tiny-2024.05"])
    format: Literal["qcow2", "raw"] = Field(
        default="qcow2", description="Format of the source; it is inspected with exactly "
        "this format, never probed", examples=["qcow2"])
    source_path: str | None = Field(
        default=None, max_length=4096, description="A file on the controller host",
        examples=["/srv/images/tiny.qcow2"])
    source_url: str | None = Field(
        default=None, max_length=4096, pattern=r"^https?://",
        description="An http(s) URL the controller downloads",
        examples=["http://images.example/tiny.qcow2"])
    min_disk_gib: int | None = Field(
        default=None, ge=1, le=2048,
        description="Smallest system disk; default: the virtual size rounded up", examples=[1])
    description: Description = Field(default="", description="Free text", examples=["busybox"])

    @model_validator(mode="after")
    def _one_source(self) -> ImageCreate:
        if (self.source_path is None) == (self.source_url is None):
            raise PydanticCustomError("MissingParameter.Source",
                                      "give exactly one of source_path and source_url")
        return self


class Image(View):
    id: str = Field(description="Image id", examples=["m-8v1kq0x2y3z4a5b6c7d8"])
    name: str = Field(description="Image name", examples=["tiny-2024.05"])
    description: str = Field(description="Free text", examples=["busybox"])
    format: str = Field(description="qcow2 or raw", examples=["qcow2"])
    source: str = Field(description="Where it was imported from",
                        examples=["/srv/images/tiny.qcow2"])
    status: ImageStatus = Field(description="Creating while importing", examples=["Available"])
    status_reason: str = Field(description="Why it is in Error", examples=[""])
    sha256: str | None = Field(description="Hex sha256 of the stored file", examples=[
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"])
    size_bytes: int | None = Field(description="File size", examples=[41943040])
    virtual_size_bytes: int | None = Field(description="Disk size the image presents",
                                           examples=[1073741824])
    min_disk_gib: int | None = Field(description="Smallest system disk in GiB", examples=[1])
    created_at: CreatedAt


class ImageList(View):
    items: list[Image] = Field(description="Images on this page")
    next_token: NextToken = None
