"""Hosts: enrolled hypervisors. Created by agent enrolment, not by this API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from controller.schemas.common import CreatedAt, NextToken, Request, View


class HostResources(View):
    vcpus: int = Field(description="Virtual CPUs", examples=[8])
    memory_mib: int = Field(description="Memory in MiB", examples=[32768])
    disk_gib: int = Field(description="Disk in GiB", examples=[500])


class HostOvercommit(View):
    cpu: float = Field(description="vCPUs scheduled per host vCPU", examples=[4.0])
    memory: float = Field(description="Memory overcommit ratio", examples=[1.0])
    disk: float = Field(description="Disk overcommit ratio", examples=[1.0])


class HostUpdate(Request):
    state: Literal["ready", "maintenance"] | None = Field(
        default=None, description="maintenance: no new instances are placed here",
        examples=["maintenance"])
    maintenance: bool | None = Field(
        default=None, description="true: no new instances or migrations land on this host "
        "(same as state maintenance); false: back in service", examples=[True])
    cpu_overcommit: float | None = Field(default=None, gt=0, le=64,
                                         description="Override the region's CPU ratio",
                                         examples=[2.0])
    memory_overcommit: float | None = Field(default=None, gt=0, le=8, examples=[1.0],
                                            description="Override the region's memory ratio")
    disk_overcommit: float | None = Field(default=None, gt=0, le=16, examples=[1.0],
                                          description="Override the region's disk ratio")


class Host(View):
    id: str = Field(description="Host id", examples=["h-0a1b2c3d4e5f6g7h8i9j"])
    name: str = Field(description="Host name (unique)", examples=["hv-01"])
    zone_id: str = Field(description="Zone of the host", examples=["zone-a"])
    underlay_address: str = Field(description="Address for VXLAN between hosts",
                                  examples=["192.0.2.11"])
    virt_type: str = Field(description="kvm or qemu (TCG)", examples=["kvm"])
    agent_version: str = Field(description="Agent version at enrolment", examples=["0.1.0"])
    state: str = Field(description="ready, maintenance, or down (missed heartbeats)",
                       examples=["ready"])
    maintenance: bool = Field(default=False, description="In maintenance: nothing new is "
                              "placed or migrated here", examples=[False])
    capacity: HostResources = Field(description="Physical capacity reported by the agent")
    allocated: HostResources = Field(description="Sum of the instances placed here")
    overcommit: HostOvercommit = Field(description="Effective overcommit ratios")
    generation: int = Field(description="Generation of the host's desired spec", examples=[42])
    generation_applied: int = Field(description="Last generation the agent converged",
                                    examples=[42])
    last_heartbeat: datetime | None = Field(description="Last report (UTC)",
                                            examples=["2024-05-01T12:00:05Z"])
    last_errors: list[str] = Field(description="Host-level errors of the last report",
                                   examples=[[]])
    created_at: CreatedAt


class HostList(View):
    items: list[Host] = Field(description="Hosts on this page")
    next_token: NextToken = None


class HostEvacuation(View):
    host_id: str = Field(description="Host evacuated", examples=["h-0a1b2c3d4e5f6g7h8i9j"])
    maintenance: bool = Field(description="The host is in maintenance", examples=[True])
    evacuated: dict[str, str] = Field(
        default_factory=dict,
        description="Instances this call rebuilt elsewhere: instance id -> its new host",
        examples=[{"i-9f3b1c7d2e4a6b8c0d1e": "h-1b2c3d4e5f6g7h8i9j0k"}])
    deleted: list[str] = Field(
        default_factory=list,
        description="Instances that were being deleted there, now Deleted (addresses and "
        "capacity released)", examples=[["i-8e2a0b6c1d3f5a7b9c0d"]])
    disks_remade: dict[str, str] = Field(
        default_factory=dict,
        description="Detached data disks made again, empty, on another host: disk id -> "
        "its new host", examples=[{"d-5b9d7f3a8c0e2d4f6a7b": "h-1b2c3d4e5f6g7h8i9j0k"}])
    snapshots_lost: list[str] = Field(
        default_factory=list, description="Snapshots kept in the host's store, lost with it",
        examples=[["s-7d1f9a5b0c2e4f6a8b9c"]])
    operations_failed: list[str] = Field(
        default_factory=list,
        description="Pending storage operations of the host, ended failed (an image or disk "
        "being made from one of its snapshots goes to Error)",
        examples=[["op-4a8c6e2b7d9f1a3c5e6b"]])
    migrations_failed: list[str] = Field(
        default_factory=list, description="Migrations to or from the host, ended failed",
        examples=[["mig-6c0e8f4a9b1d3e5f7a8b"]])
    not_moved: dict[str, str] = Field(
        default_factory=dict,
        description="Instances and detached disks this call could not move (or the host "
        "itself, when it reported again meanwhile), with the reason (e.g. no other host has "
        "room); evacuate again once there is room",
        examples=[{"i-9f3b1c7d2e4a6b8c0d1e": "OperationDenied.NoStock: no other ready host "
                   "in zone zone-a has room"}])
    instances_left: list[str] = Field(default_factory=list,
                                      description="Instances still placed on the host",
                                      examples=[["i-9f3b1c7d2e4a6b8c0d1e"]])
    disks_left: list[str] = Field(default_factory=list,
                                  description="Detached data disks still on the host",
                                  examples=[["d-5b9d7f3a8c0e2d4f6a7b"]])
    done: bool = Field(default=False,
                       description="The host holds no instance and no disk any more",
                       examples=[False])
