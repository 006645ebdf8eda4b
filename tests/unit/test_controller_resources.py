"""Key pairs, VPC/vSwitch/security-group dependencies, zones, hosts and the heartbeat
watchdog."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from controller.models import Host
from controller.services.hosts import mark_stale_hosts_down
from tests.controller_factories import region  # noqa: F401 - fixture


def test_generated_key_pair_returns_private_key_once(region):
    kp = region.ok("POST", "/key-pairs", {"name": "gen"})
    assert kp["key_type"] == "ssh-ed25519" and kp["public_key"].endswith(" gen")
    private = serialization.load_ssh_private_key(kp["private_key"].encode(), password=None)
    derived = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                serialization.PublicFormat.OpenSSH).decode()
    assert kp["public_key"].startswith(derived)
    shown = region.ok("GET", f"/key-pairs/{kp['id']}")
    assert "private_key" not in shown
    assert all("private_key" not in k for k in region.items("/key-pairs"))


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen missing")
def test_imported_key_fingerprint_matches_ssh_keygen(region, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "me@laptop",
                    "-f", str(tmp_path / "k")], check=True)
    public = (tmp_path / "k.pub").read_text()
    kp = region.ok("POST", "/key-pairs", {"name": "imp", "public_key": public})
    expected = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(tmp_path / "k.pub")],
                              capture_output=True, text=True, check=True).stdout.split()[1]
    assert kp["fingerprint"] == expected
    assert kp["private_key"] is None and kp["key_type"] == "ssh-rsa"
    r = region.call("POST", "/key-pairs", {"name": "imp", "public_key": public})
    assert (r.status_code, r.json()["code"]) == (409, "InvalidKeyPairName.Duplicate")


def test_key_pair_in_use_cannot_be_deleted(region):
    region.register_host()
    net = region.network()
    kp = region.ok("POST", "/key-pairs", {"name": "k"})
    region.create_instance(net, region.image(), key_pair_id=kp["id"])
    r = region.call("DELETE", f"/key-pairs/{kp['id']}")
    assert (r.status_code, r.json()["code"]) == (409, "DependencyViolation.Instance")


def test_vpc_delete_refused_while_it_has_children(region):
    net = region.network()
    vpc_id = net["vpc"]["id"]
    r = region.call("DELETE", f"/vpcs/{vpc_id}")
    assert (r.status_code, r.json()["code"]) == (409, "DependencyViolation.VSwitch")
    region.ok("DELETE", f"/vswitches/{net['vswitch']['id']}")
    r = region.call("DELETE", f"/vpcs/{vpc_id}")
    assert (r.status_code, r.json()["code"]) == (409, "DependencyViolation.SecurityGroup")
    region.ok("DELETE", f"/security-groups/{net['sg']['id']}")
    region.ok("DELETE", f"/vpcs/{vpc_id}")
    assert region.items("/vpcs") == []


def test_vpcs_may_overlap_and_get_distinct_vnis_and_bridges(region):
    a = region.ok("POST", "/vpcs", {"name": "a", "cidr_block": "10.0.0.0/16"})
    b = region.ok("POST", "/vpcs", {"name": "b", "cidr_block": "10.0.0.0/16"})
    assert a["vni"] != b["vni"]
    va = region.ok("POST", "/vswitches", {"name": "x", "vpc_id": a["id"], "zone_id": "zone-a",
                                          "cidr_block": "10.0.1.0/24"})
    vb = region.ok("POST", "/vswitches", {"name": "x", "vpc_id": b["id"], "zone_id": "zone-a",
                                          "cidr_block": "10.0.1.0/24"})
    assert va["gateway_ip"] == vb["gateway_ip"] == "10.0.1.1"
    assert va["available_ip_count"] == 251
    assert [v["id"] for v in region.items("/vswitches", vpc_id=b["id"])] == [vb["id"]]


def test_zones(region):
    zone = region.ok("POST", "/zones", {"name": "zone-b", "description": "rack 2"})
    assert (zone["id"], zone["name"]) == ("zone-b", "zone-b")
    r = region.call("POST", "/zones", {"name": "zone-b"})
    assert (r.status_code, r.json()["code"]) == (409, "InvalidZoneId.Duplicate")
    assert [z["id"] for z in region.items("/zones")] == ["zone-a", "zone-b"]


def test_instance_types_seeded_and_addable(region):
    types = {t["id"]: (t["vcpus"], t["memory_mib"]) for t in region.items("/instance-types")}
    assert types == {"ecs.t1.nano": (1, 256), "ecs.t1.small": (1, 1024),
                     "ecs.t1.medium": (1, 2048), "ecs.c1.large": (2, 4096)}
    region.ok("POST", "/instance-types", {"id": "ecs.c1.xlarge", "vcpus": 4, "memory_mib": 8192})
    assert len(region.items("/instance-types")) == 5


def test_missed_heartbeats_mark_a_host_down_and_a_report_revives_it(region):
    agent = region.register_host()
    assert region.ok("GET", f"/hosts/{agent.host_id}")["state"] == "ready"
    assert mark_stale_hosts_down(region.db, region.settings) == 0
    with region.db.write() as session:
        session.get(Host, agent.host_id).last_heartbeat = \
            datetime.now(UTC) - timedelta(seconds=region.settings.heartbeat_timeout_s + 1)
    assert mark_stale_hosts_down(region.db, region.settings) == 1
    assert region.ok("GET", f"/hosts/{agent.host_id}")["state"] == "down"
    agent.report({}, errors=["bridge mbr-x: no such device"])
    host = region.ok("GET", f"/hosts/{agent.host_id}")
    assert host["state"] == "ready" and host["last_errors"] == ["bridge mbr-x: no such device"]


def test_maintenance_is_kept_across_reports(region):
    agent = region.register_host()
    region.ok("PATCH", f"/hosts/{agent.host_id}", {"state": "maintenance", "cpu_overcommit": 2})
    agent.report({})
    host = region.ok("GET", f"/hosts/{agent.host_id}")
    assert host["state"] == "maintenance" and host["overcommit"]["cpu"] == 2
    region.ok("PATCH", f"/hosts/{agent.host_id}", {"state": "ready"})
    assert region.ok("GET", f"/hosts/{agent.host_id}")["state"] == "ready"


def test_api_tokens_create_and_revoke(region):
    made = region.ok("POST", "/tokens", {"name": "ci"})
    headers = {"Authorization": f"Bearer {made['token']}"}
    assert region.client.get("/api/v1/vpcs", headers=headers).status_code == 200
    assert all("token" not in t for t in region.items("/tokens"))
    region.ok("DELETE", f"/tokens/{made['id']}")
    assert region.client.get("/api/v1/vpcs", headers=headers).status_code == 401
