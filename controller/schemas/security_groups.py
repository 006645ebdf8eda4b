"""Security groups: belong to a VPC; NICs are members; rules with ECS semantics."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controller.schemas.common import (
    CreatedAt, Description, Name, NextToken, Request, ResourceId, View,
)

GroupType = Literal["normal", "enterprise"]
Policy = Literal["accept", "drop"]
Direction = Literal["ingress", "egress"]


class SecurityGroupCreate(Request):
    name: Name = Field(description="Group name", examples=["web"])
    vpc_id: ResourceId = Field(description="VPC of the group",
                               examples=["vpc-2m4n6p8r0t2v4x6z8b0d"])
    description: Description = Field(default="", description="Free text", examples=["http in"])
    type: GroupType = Field(default="normal", description=(
        "normal: members reach each other (inner access), other ingress denied, egress allowed; "
        "enterprise: everything denied unless a rule allows it, no group references"),
        examples=["normal"])
    inner_access_policy: Policy = Field(
        default="accept", description="normal groups: may members reach each other",
        examples=["accept"])


class SecurityGroupUpdate(Request):
    name: Name | None = Field(default=None, description="New name", examples=["web"])
    description: Description | None = Field(default=None, description="Free text",
                                            examples=["http in"])
    inner_access_policy: Policy | None = Field(
        default=None, description="normal groups only", examples=["drop"])


class SecurityGroup(View):
    id: str = Field(description="Group id", examples=["sg-4c6e8g0j2l4n6q8s0u2w"])
    name: str = Field(description="Group name", examples=["web"])
    description: str = Field(description="Free text", examples=["http in"])
    vpc_id: str = Field(description="VPC id", examples=["vpc-2m4n6p8r0t2v4x6z8b0d"])
    type: GroupType = Field(default="normal", description="normal or enterprise",
                            examples=["normal"])
    inner_access_policy: Policy = Field(default="accept", description="Inner access",
                                        examples=["accept"])
    member_count: int = Field(description="NICs in the group", examples=[3])
    rule_count: int = Field(default=0, description="Rules in the group", examples=[4])
    created_at: CreatedAt


class SecurityGroupList(View):
    items: list[SecurityGroup] = Field(description="Security groups on this page")
    next_token: NextToken = None


class SecurityGroupRuleCreate(Request):
    """A rule, ECS style. For ingress the peer is the source, for egress the destination."""

    direction: Direction = Field(description="ingress or egress", examples=["ingress"])
    protocol: str = Field(description="tcp, udp, icmp or all", examples=["tcp"])
    port_range: str = Field(default="-1/-1", description=(
        "Destination ports 'start/end' in 1-65535 for tcp/udp; '-1/-1' for icmp and all"),
        examples=["22/22"])
    source_port_range: str | None = Field(default=None, description="Source ports (tcp/udp)",
                                          examples=["1024/65535"])
    peer_cidr: str | None = Field(default=None, description=(
        "Remote network: source CIDR (ingress) or destination CIDR (egress); "
        "0.0.0.0/0 when neither this nor peer_group_id is given"), examples=["10.0.0.0/8"])
    peer_group_id: str | None = Field(default=None, description=(
        "Remote security group (same VPC; normal groups only)"),
        examples=["sg-4c6e8g0j2l4n6q8s0u2w"])
    local_cidr: str | None = Field(default=None, description=(
        "Narrows the member's own address (ECS DestCidrIp on ingress)"), examples=[None])
    policy: str = Field(default="accept", description="accept or drop", examples=["accept"])
    priority: int = Field(default=1, description="1-100, smaller wins; drop wins ties",
                          examples=[1])
    description: Description = Field(default="", description="Free text",
                                     examples=["ssh from the office"])


class SecurityGroupRule(View):
    id: str = Field(description="Rule id", examples=["sgr-4c6e8g0j2l4n6q8s0u2w"])
    security_group_id: str = Field(description="Group", examples=["sg-4c6e8g0j2l4n6q8s0u2w"])
    direction: Direction = Field(description="ingress or egress", examples=["ingress"])
    protocol: str = Field(description="tcp, udp, icmp or all", examples=["tcp"])
    port_range: str = Field(description="start/end", examples=["22/22"])
    source_port_range: str | None = Field(default=None, description="start/end",
                                          examples=[None])
    peer_cidr: str | None = Field(default=None, description="Remote CIDR",
                                  examples=["0.0.0.0/0"])
    peer_group_id: str | None = Field(default=None, description="Remote group", examples=[None])
    local_cidr: str | None = Field(default=None, description="Own-address CIDR",
                                   examples=[None])
    policy: Policy = Field(description="accept or drop", examples=["accept"])
    priority: int = Field(description="1-100", examples=[1])
    description: str = Field(description="Free text", examples=["ssh"])
    hits: int | None = Field(default=None, description=(
        "Packets matched on every host's NICs (only when asked with hits=true)"),
        examples=[42])
    created_at: CreatedAt


class SecurityGroupRuleList(View):
    items: list[SecurityGroupRule] = Field(description="Rules in evaluation order")


class SecurityGroupMembership(Request):
    instance_id: ResourceId = Field(description="Instance whose NIC joins or leaves",
                                    examples=["i-9f3b1c7d2e4a6b8c0d1e"])


class ExplainRequest(Request):
    instance_id: ResourceId = Field(description="Instance", examples=["i-9f3b1c7d2e4a6b8c0d1e"])
    direction: Direction = Field(description="ingress or egress", examples=["ingress"])
    protocol: str = Field(description="tcp, udp, icmp", examples=["tcp"])
    port: int | None = Field(default=None, description="Destination port (tcp/udp)",
                             examples=[22])
    peer: str = Field(description="Remote IPv4 address", examples=["10.0.1.5"])


class ExplainResult(View):
    verdict: Policy = Field(description="accept or drop", examples=["drop"])
    decided_by: str = Field(description="Rule id, 'inner:<group>' or 'default'",
                            examples=["default"])
    rule: SecurityGroupRule | None = Field(default=None, description="The deciding rule",
                                           examples=[None])
    nic_id: str = Field(description="NIC evaluated", examples=["eni-5d8a2c4e6f7b9a1c3d5e"])
    reason: str = Field(description="In words", examples=["no rule matched: default drop"])
