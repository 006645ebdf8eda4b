"""Images: qcow2 or raw files in the controller's image store."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from controller.schemas.common import CreatedAt, Description, Name, NextToken, Request, View

ImageStatus = Literal["Creating", "Available", "Error"]


class ImageCreate(Request):
    """Import an image or make one from a snapshot or an instance's system disk.

    Exactly one of ``source_path``, ``source_url``, ``snapshot_id`` and ``instance_id``.
    """

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
    snapshot_id: str | None = Field(
        default=None, max_length=32, description="Make the image from this accomplished "
        "snapshot (of a system or data disk); its host exports a flattened qcow2",
        examples=["s-8v1kq0x2y3z4a5b6c7d8"])
    instance_id: str | None = Field(
        default=None, max_length=32, description="Make the image from this instance's system "
        "disk (Running or Stopped): a snapshot is taken (kept, like ECS) and exported",
        examples=["i-8v1kq0x2y3z4a5b6c7d8"])
    min_disk_gib: int | None = Field(
        default=None, ge=1, le=2048,
        description="Smallest system disk; default: the virtual size rounded up", examples=[1])
    description: Description = Field(default="", description="Free text", examples=["busybox"])

    @model_validator(mode="after")
    def _one_source(self) -> ImageCreate:
        given = [f for f in ("source_path", "source_url", "snapshot_id", "instance_id")
                 if getattr(self, f) is not None]
        if len(given) != 1:
            raise PydanticCustomError("MissingParameter.Source",
                                      "give exactly one of source_path, source_url, "
                                      "snapshot_id and instance_id")
        return self


class Image(View):
    id: str = Field(description="Image id", examples=["m-8v1kq0x2y3z4a5b6c7d8"])
    name: str = Field(description="Image name", examples=["tiny-2024.05"])
    description: str = Field(description="Free text", examples=["busybox"])
    format: str = Field(description="qcow2 or raw", examples=["qcow2"])
    source: str = Field(description="Where it was imported from (a path, a URL, or "
                        "snapshot:<snapshot id>)", examples=["/srv/images/tiny.qcow2"])
    status: ImageStatus = Field(description="Creating while importing", examples=["Available"])
    status_reason: str = Field(description="Why it is in Error", examples=[""])
    sha256: str | None = Field(description="Hex sha256 of the stored file", examples=[
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"])
    size_bytes: int | None = Field(description="File size", examples=[41943040])
    virtual_size_bytes: int | None = Field(description="Disk size the image presents",
                                           examples=[1073741824])
    min_disk_gib: int | None = Field(description="Smallest system disk in GiB", examples=[1])
    created_at: CreatedAt
    progress_bytes: int | None = Field(
        default=None, description="While an import is Creating: bytes copied so far",
        examples=[16777216])
    source_size_bytes: int | None = Field(
        default=None, description="While an import is Creating: bytes to copy (null when the "
        "source does not say)", examples=[41943040])


class ImageList(View):
    items: list[Image] = Field(description="Images on this page")
    next_token: NextToken = None
