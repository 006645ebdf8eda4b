"""Bad input: each a 4xx with a specific code naming the field, and nothing created."""

from __future__ import annotations

import pytest

from tests.controller_factories import region  # noqa: F401 - fixture

SHELLY = ["web;rm -rf /", "a/b", "$(reboot)", "web 1", "../etc", "x`id`", "", "9lives"]


def _refused(r, status: int, code: str, field: str | None):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code, body
    assert body["field"] == field, body
    assert body["message"] and body["request_id"].startswith("req-")


@pytest.mark.parametrize("cidr,code", [
    ("10.0.0.0/33", "InvalidCidrBlock.Malformed"), ("10.0.0.1/16", "InvalidCidrBlock.Malformed"),
    ("ten/8", "InvalidCidrBlock.Malformed"), ("8.8.0.0/16", "InvalidCidrBlock.Unsupported")])
def test_vpc_bad_cidr(region, cidr, code):
    r = region.call("POST", "/vpcs", {"name": "prod", "cidr_block": cidr})
    _refused(r, 400, code, "cidr_block")
    assert region.items("/vpcs") == []


@pytest.mark.parametrize("name", SHELLY)
def test_names_with_shell_metacharacters_or_slashes(region, name):
    for path, body in (("/vpcs", {"name": name, "cidr_block": "10.0.0.0/16"}),
                       ("/key-pairs", {"name": name}),
                       ("/zones", {"name": name})):
        r = region.call("POST", path, body)
        _refused(r, 400, "InvalidParameter.Name", "name")
    assert region.items("/vpcs") == []
    assert region.items("/key-pairs") == []
    assert [z["id"] for z in region.items("/zones")] == ["zone-a"]


def test_missing_and_unknown_fields(region):
    _refused(region.call("POST", "/vpcs", {"name": "prod"}), 400,
             "MissingParameter.CidrBlock", "cidr_block")
    _refused(region.call("POST", "/vpcs", {"name": "p", "cidr_block": "10.0.0.0/16", "x": 1}),
             400, "InvalidParameter.UnknownX", "x")
    r = region.client.post("/api/v1/vpcs", content=b"{not json", headers={
        **region.headers, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["code"].startswith("InvalidParameter")
    assert region.items("/vpcs") == []


def test_vswitch_outside_vpc_overlapping_and_unknown_ids(region):
    vpc = region.ok("POST", "/vpcs", {"name": "prod", "cidr_block": "10.0.0.0/16"})
    body = {"name": "a", "vpc_id": vpc["id"], "zone_id": "zone-a", "cidr_block": "10.1.0.0/24"}
    _refused(region.call("POST", "/vswitches", body), 400, "InvalidVSwitchCidr.NotInVpc",
             "cidr_block")
    region.ok("POST", "/vswitches", {**body, "cidr_block": "10.0.1.0/24"})
    _refused(region.call("POST", "/vswitches", {**body, "cidr_block": "10.0.0.0/20"}), 409,
             "InvalidVSwitchCidr.Overlapped", "cidr_block")
    _refused(region.call("POST", "/vswitches", {**body, "cidr_block": "10.0.1.128/25"}), 409,
             "InvalidVSwitchCidr.Overlapped", "cidr_block")
    _refused(region.call("POST", "/vswitches", {**body, "vpc_id": "vpc-nope",
                                                "cidr_block": "10.0.2.0/24"}),
             404, "InvalidVpcId.NotFound", "vpc_id")
    _refused(region.call("POST", "/vswitches", {**body, "zone_id": "zone-zz",
                                                "cidr_block": "10.0.2.0/24"}),
             404, "InvalidZoneId.NotFound", "zone_id")
    _refused(region.call("POST", "/vswitches", {**body, "cidr_block": "10.0.2.0/30"}),
             400, "InvalidVSwitchCidr.Unsupported", "cidr_block")
    assert len(region.items("/vswitches")) == 1


def _instance_setup(region):
    region.register_host()
    net = region.network()
    return net, region.image()


@pytest.mark.parametrize("ip,status,code", [
    ("10.0.1.0", 400, "InvalidPrivateIpAddress.Reserved"),
    ("10.0.1.1", 400, "InvalidPrivateIpAddress.Reserved"),
    ("10.0.1.253", 400, "InvalidPrivateIpAddress.Reserved"),
    ("10.0.1.255", 400, "InvalidPrivateIpAddress.Reserved"),
    ("10.0.2.9", 400, "InvalidPrivateIpAddress.NotInVSwitch"),
    ("10.0.1.300", 400, "InvalidPrivateIpAddress.Malformed"),
])
def test_reserved_or_bad_private_ip(region, ip, status, code):
    net, image = _instance_setup(region)
    r = region.call("POST", "/instances",
                    region.instance_body(net, image, private_ip_address=ip))
    _refused(r, status, code, "private_ip_address")
    assert region.items("/instances") == []
    host = region.items("/hosts")[0]
    assert host["allocated"] == {"vcpus": 0, "memory_mib": 0, "disk_gib": 0}


def test_taken_private_ip(region):
    net, image = _instance_setup(region)
    first = region.create_instance(net, image, private_ip_address="10.0.1.50")
    assert first["private_ip_address"] == "10.0.1.50"
    r = region.call("POST", "/instances",
                    region.instance_body(net, image, name="web-2", private_ip_address="10.0.1.50"))
    _refused(r, 409, "InvalidPrivateIpAddress.Duplicated", "private_ip_address")
    assert [i["id"] for i in region.items("/instances")] == [first["id"]]


@pytest.mark.parametrize("override,status,code,field", [
    ({"image_id": "m-doesnotexist"}, 404, "InvalidImageId.NotFound", "image_id"),
    ({"vswitch_id": "vsw-nope"}, 404, "InvalidVSwitchId.NotFound", "vswitch_id"),
    ({"instance_type": "ecs.huge"}, 404, "InvalidInstanceType.NotFound", "instance_type"),
    ({"security_group_ids": ["sg-nope"]}, 404, "InvalidSecurityGroupId.NotFound",
     "security_group_ids"),
    ({"security_group_ids": []}, 400, "InvalidParameter.SecurityGroupIds", "security_group_ids"),
    ({"security_group_ids": ["a", "b", "c", "d", "e", "f"]}, 400,
     "InvalidParameter.SecurityGroupIds", "security_group_ids"),
    ({"key_pair_id": "kp-nope"}, 404, "InvalidKeyPair.NotFound", "key_pair_id"),
    ({"user_data": "x" * (32 * 1024 + 1)}, 400, "InvalidUserData.SizeExceeded", "user_data"),
    ({"hostname": "bad_host"}, 400, "InvalidHostName.Malformed", "hostname"),
    ({"name": "web;reboot"}, 400, "InvalidParameter.Name", "name"),
    ({"name": "web/1"}, 400, "InvalidParameter.Name", "name"),
    ({"system_disk_size_gib": 0}, 400, "InvalidParameter.SystemDiskSizeGib",
     "system_disk_size_gib"),
])
def test_instance_bad_input_creates_nothing(region, override, status, code, field):
    net, image = _instance_setup(region)
    r = region.call("POST", "/instances", region.instance_body(net, image, **override))
    _refused(r, status, code, field)
    assert region.items("/instances") == []
    assert region.items("/instances", status="Deleted") == []
    assert region.items("/security-groups")[0]["member_count"] == 0
    assert region.items("/hosts")[0]["allocated"]["vcpus"] == 0


def test_security_group_of_another_vpc(region):
    net, image = _instance_setup(region)
    other = region.ok("POST", "/vpcs", {"name": "other", "cidr_block": "10.0.0.0/16"})
    sg = region.ok("POST", "/security-groups", {"name": "x", "vpc_id": other["id"]})
    r = region.call("POST", "/instances",
                    region.instance_body(net, image, security_group_ids=[sg["id"]]))
    _refused(r, 400, "InvalidSecurityGroupId.VpcMismatch", "security_group_ids")
    assert region.items("/instances") == []


def test_unknown_ids_on_show_and_actions(region):
    for path, code in (("/instances/i-nope", "InvalidInstanceId.NotFound"),
                       ("/vpcs/vpc-nope", "InvalidVpcId.NotFound"),
                       ("/vswitches/vsw-nope", "InvalidVSwitchId.NotFound"),
                       ("/images/m-nope", "InvalidImageId.NotFound"),
                       ("/key-pairs/kp-nope", "InvalidKeyPair.NotFound"),
                       ("/security-groups/sg-nope", "InvalidSecurityGroupId.NotFound"),
                       ("/hosts/h-nope", "InvalidHostId.NotFound")):
        r = region.call("GET", path)
        assert (r.status_code, r.json()["code"]) == (404, code), path
    for action in ("start", "stop", "reboot"):
        r = region.call("POST", f"/instances/i-nope/{action}")
        assert (r.status_code, r.json()["code"]) == (404, "InvalidInstanceId.NotFound")
    assert region.call("DELETE", "/instances/i-nope").status_code == 404


def test_bad_public_key_and_paging(region):
    r = region.call("POST", "/key-pairs", {"name": "k", "public_key": "ssh-rsa notbase64!!"})
    _refused(r, 400, "InvalidKeyPair.Malformed", "public_key")
    r = region.call("GET", "/vpcs", max_results=101)
    _refused(r, 400, "InvalidParameter.MaxResults", "max_results")
    r = region.call("GET", "/vpcs", next_token="garbage")
    _refused(r, 400, "InvalidParameter.NextToken", "next_token")
    assert region.items("/key-pairs") == []


def test_oversized_body_refused(region):
    r = region.client.post("/api/v1/vpcs", content=b"x" * (2 * 1024 * 1024),
                           headers={**region.headers, "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "RequestTooLarge"
