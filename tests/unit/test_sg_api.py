"""Security groups through the API: rule validation codes, idempotent adds, limits,
membership, the compiled spec and explain — with a fake agent reading specs."""

from __future__ import annotations

import pytest

from tests.controller_factories import region  # noqa: F401 - fixture


def _rule(**kw):
    body = {"direction": "ingress", "protocol": "tcp", "port_range": "22/22"}
    body.update(kw)
    return body


@pytest.mark.parametrize("body,code", [
    (_rule(port_range="0/22"), "InvalidPortRange.Malformed"),
    (_rule(port_range="1/65536"), "InvalidPortRange.Malformed"),
    (_rule(port_range="80/22"), "InvalidPortRange.Reversed"),
    (_rule(port_range="22"), "InvalidPortRange.Malformed"),
    (_rule(protocol="icmp", port_range="1/2"), "InvalidPortRange.Malformed"),
    (_rule(priority=0), "InvalidPriority.Malformed"),
    (_rule(priority=101), "InvalidPriority.Malformed"),
    (_rule(protocol="gre"), "InvalidIpProtocol.Malformed"),
    (_rule(peer_cidr="10.0.0.1/8"), "InvalidSourceCidrIp.Malformed"),
    (_rule(peer_cidr="banana"), "InvalidSourceCidrIp.Malformed"),
    (_rule(direction="egress", peer_cidr="10.0.0.0/33"), "InvalidDestCidrIp.Malformed"),
    (_rule(policy="reject"), "InvalidPolicy.Malformed"),
])
def test_bad_rules_are_refused_and_nothing_is_applied(region, body, code):
    net = region.network()
    sg = net["sg"]["id"]
    r = region.call("POST", f"/security-groups/{sg}/rules", body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == code
    assert region.items(f"/security-groups/{sg}/rules") == []


def test_add_is_idempotent_remove_by_id_or_fields(region):
    net = region.network()
    sg = net["sg"]["id"]
    first = region.call("POST", f"/security-groups/{sg}/rules", _rule(description="a"))
    again = region.call("POST", f"/security-groups/{sg}/rules", _rule(description="b"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["peer_cidr"] == "0.0.0.0/0"
    region.ok("POST", f"/security-groups/{sg}/rules/revoke", _rule())
    assert region.items(f"/security-groups/{sg}/rules") == []
    rid = region.ok("POST", f"/security-groups/{sg}/rules", _rule(priority=7))["id"]
    assert region.call("DELETE", f"/security-groups/{sg}/rules/{rid}").status_code == 204
    assert region.call("DELETE", f"/security-groups/{sg}/rules/{rid}").status_code == 404


def test_group_references_vpc_and_enterprise(region):
    net, other = region.network(), region.network("10.9.0.0/16", "10.9.1.0/24")
    sg, foreign = net["sg"]["id"], other["sg"]["id"]
    r = region.call("POST", f"/security-groups/{sg}/rules", _rule(peer_group_id=foreign))
    assert r.json()["code"] == "InvalidSecurityGroup.VpcMismatch"
    ent = region.ok("POST", "/security-groups", {"name": "ent", "vpc_id": net["vpc"]["id"],
                                                  "type": "enterprise"})
    assert ent["inner_access_policy"] == "drop"
    r = region.call("POST", f"/security-groups/{ent['id']}/rules", _rule(peer_group_id=sg))
    assert r.json()["code"] == "InvalidSecurityGroup.EnterpriseGroupReference"
    region.ok("POST", f"/security-groups/{sg}/rules", _rule(peer_group_id=ent["id"]))
    r = region.call("DELETE", f"/security-groups/{ent['id']}")
    assert r.json()["code"] == "DependencyViolation.SecurityGroupRule"


def test_membership_limits_spec_and_explain(region):
    agent = region.register_host()
    net, image = region.network(), region.image()
    vpc = net["vpc"]["id"]
    inst = region.create_instance(net, image)
    peer = region.create_instance(net, image)
    groups = [region.ok("POST", "/security-groups", {"name": f"g{i}", "vpc_id": vpc})["id"]
              for i in range(5)]
    for g in groups[:4]:
        region.ok("POST", f"/security-groups/{g}/join", {"instance_id": inst["id"]})
    r = region.call("POST", f"/security-groups/{groups[4]}/join", {"instance_id": inst["id"]})
    assert (r.status_code, r.json()["code"]) == (409, "SecurityGroupLimitExceeded")
    ent = region.ok("POST", "/security-groups", {"name": "ent", "vpc_id": vpc,
                                                 "type": "enterprise"})
    r = region.call("POST", f"/security-groups/{ent['id']}/leave", {"instance_id": inst["id"]})
    assert r.status_code == 200  # not a member: nothing to do

    g0 = groups[0]
    region.ok("POST", f"/security-groups/{g0}/rules", _rule(priority=10))
    drop = region.ok("POST", f"/security-groups/{groups[1]}/rules",
                     _rule(priority=5, policy="drop", peer_cidr=f"{peer['private_ip_address']}/32"))
    spec = agent.spec()
    nic = next(i for i in spec["instances"] if i["id"] == inst["id"])["nics"][0]
    ingress = nic["firewall"]["ingress"]
    assert ingress[0]["id"] == drop["id"]
    assert {s["group_id"] for s in spec["address_sets"]} >= {net["sg"]["id"], g0}
    members = next(s for s in spec["address_sets"] if s["group_id"] == net["sg"]["id"])["ips"]
    assert sorted(members) == sorted([inst["private_ip_address"], peer["private_ip_address"]])

    def explain(peer_ip, port=22):
        return region.ok("POST", "/security-group-explain", {
            "instance_id": inst["id"], "direction": "ingress", "protocol": "tcp",
            "port": port, "peer": peer_ip})
    assert explain(peer["private_ip_address"])["decided_by"] == drop["id"]
    assert explain("192.0.2.9")["verdict"] == "accept"
    assert explain("192.0.2.9", 80)["decided_by"] == "default"
    assert explain(peer["private_ip_address"], 80)["decided_by"].startswith("inner:")

    gen = agent.spec()["generation"]
    region.ok("POST", f"/security-groups/{groups[1]}/leave", {"instance_id": inst["id"]})
    assert agent.spec(after=gen)["generation"] > gen
    assert explain(peer["private_ip_address"])["verdict"] == "accept"


def test_rules_reaching_a_nic_are_limited(region, monkeypatch):
    from controller.services import security_group_rules

    monkeypatch.setattr(security_group_rules, "MAX_RULES_PER_NIC", 2)
    region.register_host()
    net, image = region.network(), region.image()
    region.create_instance(net, image)
    sg = net["sg"]["id"]
    region.ok("POST", f"/security-groups/{sg}/rules", _rule(port_range="1/1"))
    region.ok("POST", f"/security-groups/{sg}/rules", _rule(port_range="2/2"))
    r = region.call("POST", f"/security-groups/{sg}/rules", _rule(port_range="3/3"))
    assert (r.status_code, r.json()["code"]) == (409, "QuotaExceed.RulesPerNic")
    assert len(region.items(f"/security-groups/{sg}/rules")) == 2
