"""Instance operations through the API with a fake agent: type change, system disk
replacement and re-init, attribute changes, security groups, batch create, console stream.

Each refusal is checked for its specific code and for leaving everything as it was.
"""

from __future__ import annotations

import pytest

from controller.errors import InvalidParameter
from controller.services.instance_batch import NamePattern, expand, parse_name_pattern
from controller.validation import validate_hostname, validate_name
from tests.controller_factories import database_url, region, region_any_db  # noqa: F401


def _running(region, **host):
    agent = region.register_host(**host)
    net = region.network()
    image = region.image()
    inst = region.create_instance(net, image)
    agent.spec()
    agent.report({inst["id"]: "running"})
    return agent, net, image, inst


def _stopped(region, **host):
    agent, net, image, inst = _running(region, **host)
    region.ok("POST", f"/instances/{inst['id']}/stop", {"force": True})
    agent.spec()
    agent.report({inst["id"]: "stopped"})
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Stopped"
    return agent, net, image, inst


def _host(region, host_id):
    """The host's allocated counters, flat: allocated_vcpus, allocated_memory_mib, ..."""
    return {f"allocated_{k}": v
            for k, v in region.ok("GET", f"/hosts/{host_id}")["allocated"].items()}


def _refused(region, method, path, body, status, code, field=None):
    r = region.call(method, path, body)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code, r.text
    if field is not None:
        assert r.json()["field"] == field, r.text
    return r.json()


# ---- change type ------------------------------------------------------------------------

def test_change_type_of_stopped_instance_reaches_spec_and_counters(region_any_db):
    region = region_any_db
    agent, _, _, inst = _stopped(region)
    before = _host(region, agent.host_id)
    gen = agent.spec()["generation"]
    changed = region.ok("POST", f"/instances/{inst['id']}/change-type",
                        {"instance_type": "ecs.c1.large"})
    assert (changed["instance_type"], changed["vcpus"], changed["memory_mib"]) == \
        ("ecs.c1.large", 2, 4096)
    spec = agent.spec(after=gen)
    assert spec["generation"] > gen
    assert (spec["instances"][0]["vcpus"], spec["instances"][0]["memory_mib"]) == (2, 4096)
    after = _host(region, agent.host_id)
    assert after["allocated_vcpus"] == before["allocated_vcpus"] + 1
    assert after["allocated_memory_mib"] == before["allocated_memory_mib"] + 4096 - 256


def test_change_type_while_running_is_refused_and_changes_nothing(region):
    agent, _, _, inst = _running(region)
    gen = agent.spec()["generation"]
    _refused(region, "POST", f"/instances/{inst['id']}/change-type",
             {"instance_type": "ecs.c1.large"}, 409, "IncorrectInstanceStatus", "instance_id")
    shown = region.ok("GET", f"/instances/{inst['id']}")
    assert (shown["instance_type"], shown["vcpus"]) == ("ecs.t1.nano", 1)
    assert agent.spec()["generation"] == gen


def test_change_type_without_room_on_its_host_names_the_host(region_any_db):
    region = region_any_db
    agent, _, _, inst = _stopped(region, memory_mib=1024)
    before = _host(region, agent.host_id)
    body = _refused(region, "POST", f"/instances/{inst['id']}/change-type",
                    {"instance_type": "ecs.c1.large"}, 409, "OperationDenied.NoStock",
                    "instance_type")
    assert "hv-01" in body["message"] and agent.host_id in body["message"]
    assert _host(region, agent.host_id)["allocated_memory_mib"] == before["allocated_memory_mib"]
    assert region.ok("GET", f"/instances/{inst['id']}")["instance_type"] == "ecs.t1.nano"
    _refused(region, "POST", f"/instances/{inst['id']}/change-type",
             {"instance_type": "ecs.nope"}, 404, "InvalidInstanceType.NotFound", "instance_type")


# ---- system disk --------------------------------------------------------------------------

def test_replace_system_disk_new_id_same_nic(region_any_db):
    region = region_any_db
    agent, net, image, inst = _stopped(region)
    other = region.image(name="other", virtual_size_gib=2)
    old_disk = inst["disks"][0]["id"]
    before = _host(region, agent.host_id)
    done = region.ok("POST", f"/instances/{inst['id']}/replace-system-disk", {"image_id": other})
    new_disk = done["disks"][0]
    assert new_disk["id"] != old_disk and new_disk["image_id"] == other
    assert new_disk["size_gib"] == 2 and done["image_id"] == other
    assert (done["private_ip_address"], done["mac_address"]) == \
        (inst["private_ip_address"], inst["mac_address"])
    spec = agent.spec()["instances"][0]
    assert [d["id"] for d in spec["disks"]] == [new_disk["id"]]
    assert _host(region, agent.host_id)["allocated_disk_gib"] == before["allocated_disk_gib"] + 1
    assert region.call("GET", f"/disks/{old_disk}").status_code == 404


def test_replace_system_disk_refusals_change_nothing(region):
    agent, net, image, inst = _running(region)
    other = region.image(name="other")
    _refused(region, "POST", f"/instances/{inst['id']}/replace-system-disk", {"image_id": other},
             409, "IncorrectInstanceStatus")
    region.ok("POST", f"/instances/{inst['id']}/stop", {"force": True})
    agent.spec()
    agent.report({inst["id"]: "stopped"})
    _refused(region, "POST", f"/instances/{inst['id']}/replace-system-disk",
             {"image_id": "m-missing"}, 404, "InvalidImageId.NotFound", "image_id")
    big = region.image(name="big", virtual_size_gib=5)
    _refused(region, "POST", f"/instances/{inst['id']}/replace-system-disk",
             {"image_id": big, "system_disk_size_gib": 2}, 400,
             "InvalidSystemDiskSize.LessThanImageSize", "system_disk_size_gib")
    assert region.ok("GET", f"/instances/{inst['id']}")["disks"] == inst["disks"]


def test_reinit_is_a_storage_operation_for_stopped_instances(region):
    agent, _, _, inst = _running(region)
    _refused(region, "POST", f"/instances/{inst['id']}/reinit-system-disk", None, 409,
             "IncorrectInstanceStatus")
    assert agent.spec()["storage_operations"] == []
    region.ok("POST", f"/instances/{inst['id']}/stop", {"force": True})
    agent.spec()
    agent.report({inst["id"]: "stopped"})
    op = region.ok("POST", f"/instances/{inst['id']}/reinit-system-disk")
    assert (op["kind"], op["disk_id"], op["outcome"]) == \
        ("reinit_disk", inst["disks"][0]["id"], "pending")
    ops = agent.spec()["storage_operations"]
    assert [(o["id"], o["kind"], o["disk_id"]) for o in ops] == \
        [(op["id"], "reinit_disk", inst["disks"][0]["id"])]
    r = region.client.post("/api/v1/agent/report", headers=agent.headers, json={
        "host_id": agent.host_id, "generation_applied": agent.seen,
        "generation_seen": agent.seen, "instances": [{"id": inst["id"], "power": "stopped"}],
        "storage_operations": [{"id": op["id"], "ok": True, "message": "re-initialised"}]})
    assert r.status_code == 204
    assert region.ok("GET", f"/disk-operations/{op['id']}")["outcome"] == "succeeded"


# ---- attributes -----------------------------------------------------------------------------

def test_modify_hostname_name_and_user_data(region):
    agent, _, _, inst = _running(region)
    gen = agent.spec()["generation"]
    shown = region.ok("PATCH", f"/instances/{inst['id']}",
                      {"hostname": "renamed", "name": "web-9", "description": "d"})
    assert (shown["hostname"], shown["name"], shown["description"]) == ("renamed", "web-9", "d")
    spec = agent.spec(after=gen)["instances"][0]
    assert (spec["hostname"], spec["name"]) == ("renamed", "web-9")
    # user data: Stopped only, and a refused request changes nothing else either
    _refused(region, "PATCH", f"/instances/{inst['id']}",
             {"user_data": "#!/bin/sh\n", "hostname": "other"}, 409,
             "IncorrectInstanceStatus", "user_data")
    assert region.ok("GET", f"/instances/{inst['id']}")["hostname"] == "renamed"
    region.ok("POST", f"/instances/{inst['id']}/stop", {"force": True})
    agent.spec()
    agent.report({inst["id"]: "stopped"})
    region.ok("PATCH", f"/instances/{inst['id']}", {"user_data": "#!/bin/sh\necho hi\n"})
    assert agent.spec()["instances"][0]["user_data"] == "#!/bin/sh\necho hi\n"
    _refused(region, "PATCH", f"/instances/{inst['id']}", {"hostname": "bad_host!"}, 400,
             "InvalidHostName.Malformed", "hostname")


def test_deletion_protection_blocks_delete(region):
    agent, _, _, inst = _stopped(region)
    region.ok("PATCH", f"/instances/{inst['id']}", {"deletion_protection": True})
    _refused(region, "DELETE", f"/instances/{inst['id']}", None, 403,
             "InvalidOperation.DeletionProtection")
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Stopped"
    region.ok("PATCH", f"/instances/{inst['id']}", {"deletion_protection": False})
    assert region.ok("DELETE", f"/instances/{inst['id']}")["status"] == "Deleting"


def test_modify_security_groups_replaces_the_set(region_any_db):
    region = region_any_db
    agent, net, _, inst = _running(region)
    vpc = net["vpc"]["id"]
    sg2 = region.ok("POST", "/security-groups", {"name": "sg2", "vpc_id": vpc})
    sg3 = region.ok("POST", "/security-groups", {"name": "sg3", "vpc_id": vpc})
    gen = agent.spec()["generation"]
    shown = region.ok("PATCH", f"/instances/{inst['id']}",
                      {"security_group_ids": [sg2["id"], sg3["id"]]})
    assert shown["security_group_ids"] == [sg2["id"], sg3["id"]]
    nic = agent.spec(after=gen)["instances"][0]["nics"][0]
    assert nic["security_group_ids"] == [sg2["id"], sg3["id"]]
    assert {r["group_id"] for r in nic["firewall"]["ingress"]} == {sg2["id"], sg3["id"]}


def test_modify_security_groups_bad_input_changes_nothing(region):
    agent, net, _, inst = _running(region)
    other_vpc = region.ok("POST", "/vpcs", {"name": "vpc2", "cidr_block": "10.9.0.0/16"})
    foreign = region.ok("POST", "/security-groups", {"name": "f", "vpc_id": other_vpc["id"]})
    path = f"/instances/{inst['id']}"
    _refused(region, "PATCH", path, {"security_group_ids": [foreign["id"]], "name": "x-1"}, 400,
             "InvalidSecurityGroupId.VpcMismatch", "security_group_ids")
    _refused(region, "PATCH", path, {"security_group_ids": []}, 400,
             "InvalidSecurityGroupId.Empty", "security_group_ids")
    six = [region.ok("POST", "/security-groups", {"name": f"s{i}", "vpc_id": net["vpc"]["id"]})
           ["id"] for i in range(6)]
    _refused(region, "PATCH", path, {"security_group_ids": six}, 409,
             "SecurityGroupLimitExceeded", "security_group_ids")
    _refused(region, "PATCH", path, {"security_group_ids": [six[0], six[0]]}, 400,
             "InvalidSecurityGroupId.Duplicated", "security_group_ids")
    _refused(region, "PATCH", path, {"security_group_ids": ["sg-missing"]}, 404,
             "InvalidSecurityGroupId.NotFound", "security_group_ids")
    shown = region.ok("GET", path)
    assert shown["security_group_ids"] == [net["sg"]["id"]] and shown["name"] == inst["name"]


# ---- name patterns ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("web-[1,3]", ["web-001", "web-002", "web-003"]),
    ("db[0,1]-x", ["db0-x", "db1-x", "db2-x"]),
    ("n[98,2]", ["n98", "n99", "n100"]),  # wider than digits: keeps counting
    ("plain", ["plain", "plain", "plain"]),
    ("h-${instance_id}", ["h-i-1", "h-i-2", "h-i-3"]),
])
def test_name_pattern_expansion(value, expected):
    assert expand(parse_name_pattern(value), 3, ["i-1", "i-2", "i-3"], "name",
                  lambda v, f: v) == expected


@pytest.mark.parametrize("value", ["web-[1,3", "web-1,3]", "web-[a,3]", "web-[1,0]", "web-[1,7]",
                                   "web-[1,3][2,2]", "web-[1000000,3]", "web-[1]", "web-[,3]",
                                   "web-[-1,3]"])
def test_malformed_name_patterns_name_the_field(value):
    with pytest.raises(InvalidParameter) as err:
        parse_name_pattern(value, "hostname")
    assert err.value.code == "InvalidParameter.HostnamePattern"
    assert err.value.field == "hostname"


def test_expanded_values_are_validated():
    with pytest.raises(InvalidParameter) as err:
        expand(NamePattern("9bad-", 1, 2), 2, ["i-1", "i-2"], "name", validate_name)
    assert err.value.field == "name" and "#1" in err.value.message
    assert expand(NamePattern("h", 1, 2, ".lan"), 2, ["a", "b"], "hostname",
                  validate_hostname) == ["h01.lan", "h02.lan"]


# ---- batch create ------------------------------------------------------------------------------

def test_batch_create_with_patterns_and_client_token(region_any_db):
    region = region_any_db
    agent = region.register_host()
    net = region.network()
    image = region.image()
    body = region.instance_body(net, image, name="web-[1,3]", hostname="web[7,2]", amount=3,
                                client_token="batch-1")
    r = region.call("POST", "/instances/batch", body)
    assert r.status_code == 202, r.text
    items = r.json()["items"]
    assert [i["name"] for i in items] == ["web-001", "web-002", "web-003"]
    assert [i["hostname"] for i in items] == ["web07", "web08", "web09"]
    assert len({i["private_ip_address"] for i in items}) == 3
    again = region.call("POST", "/instances/batch", body)
    assert again.status_code == 200 and again.json()["created"] is False
    assert [i["id"] for i in again.json()["items"]] == [i["id"] for i in items]
    assert len(region.items("/instances")) == 3
    assert len(agent.spec()["instances"]) == 3


def test_batch_is_all_or_nothing_and_bad_input_creates_nothing(region_any_db):
    region = region_any_db
    agent = region.register_host(memory_mib=1024)  # room for 4 nano instances (256 MiB)
    net = region.network()
    image = region.image()
    before = _host(region, agent.host_id)
    _refused(region, "POST", "/instances/batch",
             region.instance_body(net, image, name="w-[1,2]", amount=5), 409,
             "OperationDenied.NoStock")
    _refused(region, "POST", "/instances/batch",
             region.instance_body(net, image, name="w-[1,2]", amount=101), 400,
             "InvalidParameter.Amount", "amount")
    _refused(region, "POST", "/instances/batch",
             region.instance_body(net, image, name="w-[1,2", amount=2), 400,
             "InvalidParameter.NamePattern", "name")
    _refused(region, "POST", "/instances/batch",
             region.instance_body(net, image, name="w-[1,2]", hostname="h_[1,2]", amount=2),
             400, "InvalidHostName.Malformed", "hostname")
    _refused(region, "POST", "/instances/batch",
             {**region.instance_body(net, image, name="w-[1,2]", amount=2), "dry_run": True},
             400, "InvalidParameter.DryRun", "dry_run")
    assert region.items("/instances") == []
    after = _host(region, agent.host_id)
    assert after["allocated_memory_mib"] == before["allocated_memory_mib"]
    assert agent.spec()["instances"] == []
    four = region.ok("POST", "/instances/batch",
                     region.instance_body(net, image, name="w-[1,2]", amount=4))
    assert [i["name"] for i in four["items"]] == ["w-01", "w-02", "w-03", "w-04"]


# ---- console stream -----------------------------------------------------------------------------

def test_console_stream_sends_the_log_and_404s_unknown(region):
    agent, _, _, inst = _running(region)
    r = region.client.post(f"/api/v1/agent/console/{inst['id']}", params={"offset": 0},
                           content=b"boot line\n", headers=agent.headers)
    assert r.status_code == 200, r.text
    r = region.call("GET", "/instances/i-missing/console/stream")
    assert (r.status_code, r.json()["code"]) == (404, "InvalidInstanceId.NotFound")
    # the instance is deleted after the first bytes: the stream ends by itself
    with region.client.stream("GET", f"/api/v1/instances/{inst['id']}/console/stream",
                              headers=region.headers) as resp:
        assert resp.status_code == 200
        chunks = resp.iter_bytes()
        first = next(chunks)
        assert first == b"boot line\n"
        region.ok("DELETE", f"/instances/{inst['id']}", force="true")
        agent.spec()
        agent.report({}, applied=agent.spec()["generation"])
        rest = b"".join(chunks)
    assert rest == b""


def test_concurrent_batches_never_overbook_a_host(region_any_db):
    """Two batches of 3 race for a host with room for 4: exactly one is accepted, whole."""
    import threading

    from controller.errors import InsufficientCapacity
    from controller.schemas.instance_ops import InstanceBatchCreate
    from controller.services.instance_batch import create_batch

    region = region_any_db
    agent = region.register_host(memory_mib=1024)
    net = region.network()
    image = region.image()
    outcomes: list[object] = []
    start = threading.Barrier(2)

    def run(prefix: str) -> None:
        req = InstanceBatchCreate.model_validate(
            region.instance_body(net, image, name=f"{prefix}-[1,1]", amount=3))
        start.wait()
        try:
            outcomes.append(create_batch(region.db, region.settings, req))
        except InsufficientCapacity as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(type(o).__name__ for o in outcomes) == ["InstanceBatch", "InsufficientCapacity"]
    names = sorted(i["name"] for i in region.items("/instances"))
    assert names in (["a-1", "a-2", "a-3"], ["b-1", "b-2", "b-3"])
    assert _host(region, agent.host_id)["allocated_memory_mib"] == 3 * 256
