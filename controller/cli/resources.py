"""The API resources the CLI speaks to: collection path, id prefix, and how a user's
reference (an id, or a unique name) becomes an id."""

from __future__ import annotations

import re
from dataclasses import dataclass

from controller.cli.client import ApiClient
from controller.cli.errors import CliError

ID_SUFFIX = re.compile(r"^[a-z0-9]{20}$")


@dataclass(frozen=True)
class Resource:
    """One API collection, e.g. ``Resource("vpc", "VPC", "/vpcs", "vpc-")``."""

    kind: str
    label: str
    path: str
    id_prefix: str | None  # None: the id is the name the admin chose (zones, instance types)

    def item(self, resource_id: str) -> str:
        return f"{self.path}/{resource_id}"

    def looks_like_id(self, ref: str) -> bool:
        if self.id_prefix is None:
            return True
        return ref.startswith(self.id_prefix) and bool(ID_SUFFIX.match(ref[len(self.id_prefix):]))


ZONE = Resource("zone", "zone", "/zones", None)
HOST = Resource("host", "host", "/hosts", "h-")
INSTANCE_TYPE = Resource("instance_type", "instance type", "/instance-types", None)
IMAGE = Resource("image", "image", "/images", "m-")
KEY_PAIR = Resource("key_pair", "key pair", "/key-pairs", "kp-")
VPC = Resource("vpc", "VPC", "/vpcs", "vpc-")
VSWITCH = Resource("vswitch", "vSwitch", "/vswitches", "vsw-")
SECURITY_GROUP = Resource("security_group", "security group", "/security-groups", "sg-")
INSTANCE = Resource("instance", "instance", "/instances", "i-")
EIP = Resource("eip", "EIP", "/eips", "eip-")
DEPLOYMENT_SET = Resource("deployment_set", "deployment set", "/deployment-sets", "ds-")


def resolve(client: ApiClient, resource: Resource, ref: str) -> str:
    """The id ``ref`` names: an id as is, else the one resource with that name.

    Names are looked up by listing (clouds this size list fast); a name that is
    nowhere is passed through when it could be an id, so the API reports it.
    """
    if resource.looks_like_id(ref):
        return ref
    items = client.list_all(resource.path)["items"]
    matches = [obj["id"] for obj in items if obj.get("name") == ref]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise CliError(f"{len(matches)} {resource.label}s are named {ref!r} "
                       f"({', '.join(matches)}); use the id")
    if resource.id_prefix and ref.startswith(resource.id_prefix):
        return ref
    raise CliError(f"no {resource.label} with id or name {ref!r}")
