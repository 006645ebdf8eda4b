"""vSwitches: a subnet of a VPC in one zone.

Addressing: the network address and the gateway (network + 1, the first usable
address) and the last three addresses are reserved; instances get the rest.
"""

from __future__ import annotations

from pydantic import Field

from controller.schemas.common import (
    CreatedAt, Description, Name, NextToken, Request, ResourceId, View, VSwitchCidr,
)


class VSwitchCreate(Request):
    name: Name = Field(description="vSwitch name", examples=["web"])
    vpc_id: ResourceId = Field(description="VPC the subnet belongs to",
                               examples=["vpc-2m4n6p8r0t2v4x6z8b0d"])
    zone_id: ResourceId = Field(description="Zone of the subnet", examples=["zone-a"])
    cidr_block: VSwitchCidr = Field(
        description="IPv4 block inside the VPC's, prefix /16 to /29, overlapping no sibling",
        examples=["10.0.1.0/24"])
    description: Description = Field(default="", description="Free text", examples=["web tier"])
    nat_enabled: bool = Field(default=False, description="Outbound internet access for its "
                              "instances (SNAT on the host's uplink), like an ECS NAT gateway",
                              examples=[True])


class VSwitchUpdate(Request):
    nat_enabled: bool | None = Field(default=None, description="Turn outbound NAT on or off",
                                     examples=[True])


class VSwitch(View):
    id: str = Field(description="vSwitch id", examples=["vsw-3b5d7f9h1k3m5p7r9t1v"])
    name: str = Field(description="vSwitch name", examples=["web"])
    description: str = Field(description="Free text", examples=["web tier"])
    vpc_id: str = Field(description="VPC id", examples=["vpc-2m4n6p8r0t2v4x6z8b0d"])
    zone_id: str = Field(description="Zone id", examples=["zone-a"])
    cidr_block: str = Field(description="IPv4 block", examples=["10.0.1.0/24"])
    gateway_ip: str = Field(description="Gateway: the network address + 1", examples=["10.0.1.1"])
    reserved_ips: list[str] = Field(
        description="Addresses never given to instances: network, gateway and the last three",
        examples=[["10.0.1.0", "10.0.1.1", "10.0.1.253", "10.0.1.254", "10.0.1.255"]])
    available_ip_count: int = Field(description="Free addresses", examples=[251])
    nat_enabled: bool = Field(default=False, description="Outbound NAT on", examples=[False])
    created_at: CreatedAt


class VSwitchList(View):
    items: list[VSwitch] = Field(description="vSwitches on this page")
    next_token: NextToken = None
