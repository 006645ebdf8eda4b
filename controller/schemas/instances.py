"""Instances: a VM of an instance type, from an image, with one NIC on a vSwitch.

``status`` is derived from agent reports (Pending → Starting → Running →
Stopping → Stopped; Deleting → Deleted; Error with ``status_reason``);
``desired_power`` is what the API asked for. While the instance's host is
Down (missed heartbeats) it is shown as Unknown, with the last reported status
in ``status_reason``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from controller.schemas.common import (
    CreatedAt, Description, Hostname, Name, NextToken, PrivateIp, Request, ResourceId, UserData,
    View,
)

PlacementPolicy = Literal["spread", "pack"]

InstanceStatus = Literal["Pending", "Starting", "Running", "Stopping", "Stopped", "Deleting",
                         "Deleted", "Error", "Unknown"]


class InstanceCreate(Request):
    name: Name = Field(description="Instance name", examples=["web-1"])
    instance_type: ResourceId = Field(description="Instance type id", examples=["ecs.t1.small"])
    image_id: ResourceId = Field(description="Image of the system disk (must be Available)",
                                 examples=["m-8v1kq0x2y3z4a5b6c7d8"])
    vswitch_id: ResourceId = Field(description="vSwitch of the primary NIC; also picks the zone",
                                   examples=["vsw-3b5d7f9h1k3m5p7r9t1v"])
    security_group_ids: list[ResourceId] = Field(
        min_length=1, max_length=5, description="1 to 5 groups of the vSwitch's VPC",
        examples=[["sg-4c6e8g0j2l4n6q8s0u2w"]])
    private_ip_address: PrivateIp | None = Field(
        default=None, description="Fixed address in the vSwitch; default: a random free one",
        examples=["10.0.1.23"])
    key_pair_id: ResourceId | None = Field(
        default=None, description="Key pair whose public key is authorised",
        examples=["kp-1a2b3c4d5e6f7g8h9i0j"])
    user_data: UserData | None = Field(
        default=None, description="cloud-init user data as plain UTF-8 text (not base64), "
        "at most 32 KiB", examples=["#cloud-config\nruncmd:\n  - echo hello > /tmp/hello\n"])
    hostname: Hostname | None = Field(
        default=None, description="Guest host name (RFC 1123); default: the instance id",
        examples=["web-1"])
    system_disk_size_gib: int | None = Field(
        default=None, ge=1, le=2048,
        description="System disk size; default and minimum: the image's min disk",
        examples=[10])
    deletion_protection: bool = Field(default=False, description="Refuse deletes while set",
                                      examples=[False])
    client_token: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$",
        description="Idempotency key: a retried create with the same token returns the "
        "first instance", examples=["0c593ea1-3bea-11e9-b96b-88e9fe637760"])
    description: Description = Field(default="", description="Free text", examples=["frontend"])
    placement_policy: PlacementPolicy | None = Field(
        default=None, description="spread: the least loaded host; pack: the most loaded host "
        "that fits; default: the region's (controller setting placement_policy)",
        examples=["spread"])
    deployment_set_id: ResourceId | None = Field(
        default=None, description="Deployment set to join (strategy Availability: the "
        "instance goes to a host holding no other member)",
        examples=["ds-7k2m4p6r8t0v2x4z6b8d"])
    dry_run: bool = Field(
        default=False, description="ECS DryRun: run every check and choose the host, create "
        "nothing; answers 200 with code DryRunOperation and the placement explanation, or the "
        "error the create would get", examples=[False])


class InstanceStop(Request):
    force: bool = Field(default=False, description="Power off at once instead of ACPI shutdown",
                        examples=[False])
    stop_timeout_s: int | None = Field(
        default=None, ge=1, le=3600,
        description="Graceful shutdown wait before power-off; default from the controller",
        examples=[60])


class InstanceReboot(Request):
    force: bool = Field(default=False, description="Reset at once instead of an ACPI reboot",
                        examples=[False])


class InstanceDisk(View):
    id: str = Field(description="Disk id", examples=["d-2b7c9e1f0a3d5c6b8e9f"])
    role: str = Field(description="system or data", examples=["system"])
    size_gib: int = Field(description="Size in GiB", examples=[10])
    image_id: str | None = Field(description="Source image", examples=["m-8v1kq0x2y3z4a5b6c7d8"])
    device: str = Field(description="Guest device", examples=["vda"])


class InstanceNic(View):
    id: str = Field(description="NIC id", examples=["eni-5d8a2c4e6f7b9a1c3d5e"])
    vswitch_id: str = Field(description="vSwitch", examples=["vsw-3b5d7f9h1k3m5p7r9t1v"])
    private_ip_address: str = Field(description="Private IPv4", examples=["10.0.1.23"])
    mac_address: str = Field(description="MAC", examples=["52:54:00:12:34:56"])
    security_group_ids: list[str] = Field(description="Groups of this NIC",
                                          examples=[["sg-4c6e8g0j2l4n6q8s0u2w"]])


class Instance(View):
    id: str = Field(description="Instance id", examples=["i-9f3b1c7d2e4a6b8c0d1e"])
    name: str = Field(description="Instance name", examples=["web-1"])
    description: str = Field(description="Free text", examples=["frontend"])
    hostname: str = Field(description="Guest host name", examples=["web-1"])
    instance_type: str = Field(description="Instance type id", examples=["ecs.t1.small"])
    vcpus: int = Field(description="vCPUs", examples=[1])
    memory_mib: int = Field(description="Memory in MiB", examples=[1024])
    image_id: str = Field(description="Image id", examples=["m-8v1kq0x2y3z4a5b6c7d8"])
    zone_id: str = Field(description="Zone", examples=["zone-a"])
    vpc_id: str = Field(description="VPC", examples=["vpc-2m4n6p8r0t2v4x6z8b0d"])
    vswitch_id: str = Field(description="vSwitch of the primary NIC",
                            examples=["vsw-3b5d7f9h1k3m5p7r9t1v"])
    host_id: str = Field(description="Host it is placed on"
                         " (to a tenant: an opaque id of that host within its project, the same for its resources on one host)", examples=["h-0a1b2c3d4e5f6g7h8i9j"])
    private_ip_address: str | None = Field(description="Primary private IPv4 (null once Deleted)",
                                           examples=["10.0.1.23"])
    mac_address: str | None = Field(description="Primary MAC (null once Deleted)",
                                    examples=["52:54:00:12:34:56"])
    security_group_ids: list[str] = Field(description="Groups of the primary NIC",
                                          examples=[["sg-4c6e8g0j2l4n6q8s0u2w"]])
    key_pair_id: str | None = Field(description="Key pair", examples=["kp-1a2b3c4d5e6f7g8h9i0j"])
    deletion_protection: bool = Field(description="Deletes refused while set", examples=[False])
    desired_power: Literal["running", "stopped"] = Field(description="What the API asked for",
                                                         examples=["running"])
    status: InstanceStatus = Field(description="Derived from agent reports; Unknown while its "
                                   "host is Down", examples=["Running"])
    status_reason: str = Field(description="Why Error (or the last retryable error)",
                               examples=[""])
    observed_power: str | None = Field(description="Last power state the agent saw",
                                       examples=["running"])
    disks: list[InstanceDisk] = Field(description="Disks of the instance")
    nics: list[InstanceNic] = Field(description="NICs of the instance")
    created_at: CreatedAt
    deleted_at: datetime | None = Field(description="When it became Deleted", examples=[None])
    deployment_set_id: str | None = Field(default=None, description="Deployment set it is in",
                                          examples=[None])


class InstanceList(View):
    items: list[Instance] = Field(description="Instances on this page")
    next_token: NextToken = None


class InstanceConsole(View):
    instance_id: str = Field(description="The instance", examples=["i-9f3b1c7d2e4a6b8c0d1e"])
    offset: int = Field(description="Byte offset of `output` in the log", examples=[0])
    next_offset: int = Field(description="Ask from here to follow the log", examples=[5120])
    size: int = Field(description="Bytes of console log the controller holds", examples=[5120])
    output: str = Field(description="Console text (UTF-8, undecodable bytes replaced)",
                        examples=["miniecs-tiny: ready\n"])


class ConsolePushed(View):
    offset: int = Field(description="Size of the stored log after this push", examples=[5120])
