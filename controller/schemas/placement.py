"""Placement explanations: every host with the filters that rejected it or its score.

Answered by ``POST /placement/explain`` and by ``POST /instances`` with
``dry_run`` (ECS DryRun: validated and placed, nothing created).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controller.schemas.common import Name, ResourceId, View
from controller.schemas.instances import InstanceCreate


class PlacementQuery(InstanceCreate):
    """An instance create body; name and security groups may be left out for explain."""

    name: Name | None = Field(default=None, description="Instance name (not used to place)",
                              examples=["web-1"])
    security_group_ids: list[ResourceId] = Field(
        default_factory=list, max_length=5,
        description="Groups (not used to place; checked by a dry run)",
        examples=[["sg-4c6e8g0j2l4n6q8s0u2w"]])


class FilterRejection(View):
    filter: str = Field(description="Filter that rejected the host: zone, state, heartbeat, "
                        "capacity, deployment_set, ...", examples=["capacity"])
    reason: str = Field(description="Why, with the figures",
                        examples=["not enough memory: 1792 MiB allocated + 512 MiB requested "
                                  "> 2048 MiB (2048 MiB x 1 overcommit)"])


class HostVerdict(View):
    host_id: str = Field(description="Host id", examples=["h-0a1b2c3d4e5f6g7h8i9j"])
    host_name: str = Field(description="Host name", examples=["hv-01"])
    zone_id: str = Field(description="Zone of the host", examples=["zone-a"])
    state: str = Field(description="Host state", examples=["ready"])
    result: Literal["chosen", "eligible", "filtered"] = Field(
        description="chosen: where the instance goes; eligible: passed every filter, lower "
        "score; filtered: rejected (see rejected_by)", examples=["chosen"])
    rank: int | None = Field(description="1 for the chosen host, 2... for the other eligible "
                             "ones; null when filtered", examples=[1])
    score: float | None = Field(description="Policy score, higher wins (spread: 1 - load after; "
                                "pack: load after); null when filtered", examples=[0.875])
    load_after: float = Field(description="Largest of the vCPU, memory and disk utilisation "
                              "(after overcommit) were the instance placed here", examples=[0.125])
    rejected_by: list[FilterRejection] = Field(description="Every filter that rejected the host")


class PlacementDemand(View):
    vcpus: int = Field(description="vCPUs of the instance type", examples=[1])
    memory_mib: int = Field(description="Memory of the instance type", examples=[512])
    disk_gib: int = Field(description="System disk size", examples=[1])


class PlacementExplanation(View):
    zone_id: str = Field(description="Zone of the request's vSwitch", examples=["zone-a"])
    policy: Literal["spread", "pack"] = Field(description="Policy used", examples=["spread"])
    deployment_set_id: str | None = Field(description="Deployment set of the request",
                                          examples=[None])
    demand: PlacementDemand = Field(description="What the instance needs")
    chosen_host_id: str | None = Field(description="Where the instance would go; null: nowhere",
                                       examples=["h-0a1b2c3d4e5f6g7h8i9j"])
    chosen_host_name: str | None = Field(description="Name of the chosen host", examples=["hv-01"])
    hosts: list[HostVerdict] = Field(description="Every host: chosen first, then the other "
                                     "eligible ones by rank, then the filtered ones by name")


class DryRunResult(View):
    code: Literal["DryRunOperation"] = Field(
        description="ECS DryRun answer: every check passed", examples=["DryRunOperation"])
    message: str = Field(description="For a human",
                         examples=["Request validation has been passed with DryRun flag set."])
    host_id: str = Field(description="Host the instance would be placed on (to a tenant: "
                         "that host's opaque id within its project)",
                         examples=["h-0a1b2c3d4e5f6g7h8i9j"])
    host_name: str | None = Field(default=None, description="Its name (admins only)",
                                  examples=["hv-01"])
    placement: PlacementExplanation | None = Field(
        default=None, description="How that host was chosen (admins only)")
