"""The drift view: per resource, desired versus observed state, and what is not yet as asked."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from controller.schemas.common import View


class DriftItem(View):
    resource_type: str = Field(description="host, instance, disk, snapshot, operation, "
                               "storage_operation or image", examples=["instance"])
    resource_id: str = Field(description="Id of the resource", examples=["i-0a1b2c3d4e5f6g7h8i9j"])
    name: str = Field(description="Name, where the resource has one", examples=["web-1"])
    host_id: str | None = Field(description="Host that must realise it", examples=["h-0a1b2c3d"])
    desired: str = Field(description="What the controller asks for",
                         examples=["running", "generation 42"])
    observed: str = Field(description="What the agent last reported",
                          examples=["stopped", "applied 41"])
    status: str = Field(description="The resource's status", examples=["Starting"])
    converged: bool = Field(description="Observed is as desired", examples=[False])
    last_converged_at: datetime | None = Field(
        description="When it was last as desired (null: never)", examples=[None])
    observed_at: datetime | None = Field(description="When the agent last reported it",
                                         examples=["2024-05-01T12:00:05Z"])
    error: str = Field(description="The agent-reported error or status reason, if any",
                       examples=["domain failed to start: ..."])
    retries: int = Field(description="Agent retries of the current attempt", examples=[0])


class DriftSummary(View):
    hosts: int = Field(description="Hosts (all states)", examples=[3])
    hosts_converged: int = Field(description="Hosts that applied their current spec and are up",
                                 examples=[3])
    instances: int = Field(description="Instances not Deleted", examples=[12])
    instances_converged: int = Field(description="Instances whose status is as desired",
                                     examples=[11])
    drifted: int = Field(description="Resources not yet as asked (all types)", examples=[1])


class DriftView(View):
    summary: DriftSummary = Field(description="Counts: hosts and instances, how many converged, "
                                  "and every resource not yet as asked",
                                  examples=[{"hosts": 3, "hosts_converged": 3, "instances": 12,
                                             "instances_converged": 11, "drifted": 1}])
    items: list[DriftItem] = Field(description="Resources not yet as asked (every host and "
                                   "instance with all=true), hosts first")
    truncated: bool = Field(description="More items matched than max_results", examples=[False])
