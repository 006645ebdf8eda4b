"""Instance lifecycle through the API, with a fake agent driving the statuses."""

from __future__ import annotations

from tests.controller_factories import region  # noqa: F401 - fixture


def _setup(region, **host):
    agent = region.register_host(**host)
    net = region.network()
    return agent, net, region.image()


def test_create_is_pending_then_running_from_reports(region):
    agent, net, image = _setup(region)
    inst = region.create_instance(net, image, hostname="web-1", user_data="#cloud-config\n")
    assert inst["status"] == "Pending" and inst["desired_power"] == "running"
    assert inst["host_id"] == agent.host_id
    assert region.call("POST", "/instances", region.instance_body(net, image)).status_code == 202

    spec = agent.spec()
    ours = next(i for i in spec["instances"] if i["id"] == inst["id"])
    assert ours["power"] == "running" and ours["user_data"] == "#cloud-config\n"
    agent.report({inst["id"]: "stopped"})
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Starting"
    agent.report({inst["id"]: "running"})
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Running"


def test_stop_start_and_force(region):
    agent, net, image = _setup(region)
    inst = region.create_instance(net, image)
    agent.spec()
    agent.report({inst["id"]: "running"})
    gen = agent.spec()["generation"]

    stopped = region.ok("POST", f"/instances/{inst['id']}/stop")
    assert stopped["status"] == "Stopping" and stopped["desired_power"] == "stopped"
    spec = agent.spec(after=gen)
    assert spec["generation"] > gen
    assert spec["instances"][0]["power"] == "stopped"
    assert spec["instances"][0]["force_stop"] is False
    assert spec["instances"][0]["stop_timeout_s"] == 60

    region.ok("POST", f"/instances/{inst['id']}/stop", {"force": True})
    assert agent.spec()["instances"][0]["force_stop"] is True
    agent.report({inst["id"]: "stopped"})
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Stopped"

    started = region.ok("POST", f"/instances/{inst['id']}/start")
    assert started["status"] == "Starting"
    assert agent.spec()["instances"][0]["power"] == "running"
    agent.report({inst["id"]: "running"})
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Running"


def test_error_status_with_reason(region):
    agent, net, image = _setup(region)
    inst = region.create_instance(net, image)
    agent.spec()
    agent.report({}, extra=[{"id": inst["id"], "power": "error", "error": "disk image corrupt",
                             "retryable": False}])
    shown = region.ok("GET", f"/instances/{inst['id']}")
    assert (shown["status"], shown["status_reason"]) == ("Error", "disk image corrupt")


def test_reboot_is_a_one_shot_operation(region):
    agent, net, image = _setup(region)
    inst = region.create_instance(net, image)
    r = region.call("POST", f"/instances/{inst['id']}/reboot")
    assert (r.status_code, r.json()["code"]) == (409, "IncorrectInstanceStatus")
    agent.spec()
    agent.report({inst["id"]: "running"})

    op = region.ok("POST", f"/instances/{inst['id']}/reboot", {"force": True})
    assert op["outcome"] == "pending" and op["is_final"] is False
    ops = agent.spec()["instances"][0]["operations"]
    assert ops == [{"id": op["id"], "kind": "reboot", "force": True}]
    agent.report(operations=[{"id": op["id"], "ok": True, "message": "rebooted"}])
    done = region.ok("GET", f"/operations/{op['id']}")
    assert (done["outcome"], done["is_final"], done["message"]) == ("succeeded", True, "rebooted")
    assert agent.spec()["instances"][0]["operations"] == []


def test_delete_rules_and_release(region):
    agent, net, image = _setup(region)
    inst = region.create_instance(net, image, private_ip_address="10.0.1.9",
                                  deletion_protection=True)
    agent.spec()
    agent.report({inst["id"]: "running"})

    r = region.call("DELETE", f"/instances/{inst['id']}", force="true")
    assert (r.status_code, r.json()["code"]) == (403, "InvalidOperation.DeletionProtection")
    region.ok("PATCH", f"/instances/{inst['id']}", {"deletion_protection": False})
    r = region.call("DELETE", f"/instances/{inst['id']}")
    assert (r.status_code, r.json()["code"]) == (409, "IncorrectInstanceStatus")

    deleting = region.ok("DELETE", f"/instances/{inst['id']}", force="true")
    assert deleting["status"] == "Deleting"
    # Still held: the address is not handed out while the domain may run.
    r = region.call("POST", "/instances", region.instance_body(
        net, image, name="web-2", private_ip_address="10.0.1.9"))
    assert r.status_code == 409
    # A report from before the agent saw the new spec does not finish the delete.
    agent.report({})
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Deleting"
    spec = agent.spec()
    assert spec["instances"] == [] and spec["networks"] == []
    agent.report({})
    gone = region.ok("GET", f"/instances/{inst['id']}")
    assert gone["status"] == "Deleted" and gone["private_ip_address"] is None
    assert gone["deleted_at"] is not None
    assert region.items("/instances") == []
    assert [i["id"] for i in region.items("/instances", status="Deleted")] == [inst["id"]]
    assert region.items("/hosts")[0]["allocated"] == {"vcpus": 0, "memory_mib": 0,
                                                      "disk_gib": 0}
    again = region.create_instance(net, image, name="web-2", private_ip_address="10.0.1.9")
    assert again["private_ip_address"] == "10.0.1.9"
    # Dependencies: the vSwitch and groups are free once nothing uses them.
    assert region.call("DELETE", f"/vswitches/{net['vswitch']['id']}").status_code == 409
    assert region.call("DELETE", f"/security-groups/{net['sg']['id']}").status_code == 409


def test_stopped_instance_deletes_without_force(region):
    agent, net, image = _setup(region)
    inst = region.create_instance(net, image)
    agent.spec()
    agent.report({inst["id"]: "running"})
    region.ok("POST", f"/instances/{inst['id']}/stop")
    agent.spec()
    agent.report({inst["id"]: "stopped"})
    assert region.ok("DELETE", f"/instances/{inst['id']}")["status"] == "Deleting"
    r = region.call("POST", f"/instances/{inst['id']}/start")
    assert (r.status_code, r.json()["code"]) == (409, "IncorrectInstanceStatus")
    agent.spec()
    agent.report({})
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Deleted"
    region.ok("DELETE", f"/vswitches/{net['vswitch']['id']}")
    region.ok("DELETE", f"/security-groups/{net['sg']['id']}")
    region.ok("DELETE", f"/vpcs/{net['vpc']['id']}")
    region.ok("DELETE", f"/images/{image}")


def test_client_token_makes_one_instance(region):
    _, net, image = _setup(region)
    body = region.instance_body(net, image, client_token="retry-me-1")
    first = region.call("POST", "/instances", body)
    second = region.call("POST", "/instances", body)
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["id"] == second.json()["id"]
    assert len(region.items("/instances")) == 1


def test_list_filters_and_pagination(region):
    _, net, image = _setup(region, vcpus=8, memory_mib=16384)
    made = [region.create_instance(net, image, name=f"n{i}")["id"] for i in range(7)]
    seen, token = [], None
    while True:
        params = {"max_results": 3, **({"next_token": token} if token else {})}
        page = region.ok("GET", "/instances", **params)
        assert len(page["items"]) <= 3
        seen += [i["id"] for i in page["items"]]
        token = page["next_token"]
        if not token:
            break
    assert seen == made
    assert [i["id"] for i in region.items("/instances", name="n3")] == [made[3]]
    assert len(region.items("/instances", vswitch_id=net["vswitch"]["id"])) == 7
    assert region.items("/instances", vpc_id="vpc-other") == []
    assert len(region.items("/instances", status="Pending")) == 7
    assert region.items("/instances", status="Running") == []


def test_no_capacity_and_no_live_host(region):
    agent, net, image = _setup(region, vcpus=1, memory_mib=512)
    region.create_instance(net, image)  # 256 MiB
    region.create_instance(net, image)  # 512 MiB: full (memory ratio 1.0)
    r = region.call("POST", "/instances", region.instance_body(net, image))
    assert (r.status_code, r.json()["code"]) == (409, "OperationDenied.NoStock")
    region.ok("PATCH", f"/hosts/{agent.host_id}", {"state": "maintenance"})
    r = region.call("POST", "/instances", region.instance_body(net, image))
    assert (r.status_code, r.json()["code"]) == (409, "OperationDenied.NoStock")
    assert "no ready host" in r.json()["message"]


def test_auth_required_everywhere_but_healthz(region):
    assert region.client.get("/healthz").json()["status"] == "ok"
    for method, path in (("GET", "/api/v1/vpcs"), ("POST", "/api/v1/instances"),
                         ("GET", "/api/v1/agent/spec"), ("POST", "/api/v1/agent/report")):
        r = region.client.request(method, path)
        assert (r.status_code, r.json()["code"]) == (401, "InvalidToken"), path
        r = region.client.request(method, path, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
    # An enrolment token is not an admin token, nor a host token.
    enrol = {"Authorization": f"Bearer {region.tokens.enrolment_token}"}
    assert region.client.get("/api/v1/vpcs", headers=enrol).status_code == 401
    assert region.client.get("/api/v1/agent/spec", headers=enrol).status_code == 401


def test_host_token_scope(region):
    a = region.register_host("hv-a")
    b = region.register_host("hv-b")
    net = region.network()
    image = region.image()
    inst = region.create_instance(net, image)
    owner, other = (a, b) if inst["host_id"] == a.host_id else (b, a)
    # Reporting for another host is refused; the spec is always the token's own.
    r = region.client.post("/api/v1/agent/report", headers=other.headers, json={
        "host_id": owner.host_id, "generation_applied": 1, "generation_seen": 1})
    assert (r.status_code, r.json()["code"]) == (403, "Forbidden.HostMismatch")
    assert other.spec()["instances"] == []
    # Another host's instance in a report changes nothing.
    other.report({inst["id"]: "running"})
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Pending"
    # Image data only for images in the host's own spec; Range works.
    url = f"/api/v1/agent/images/{image}/data"
    assert region.client.get(url, headers=other.headers).status_code == 404
    r = region.client.get(url, headers={**owner.headers, "Range": "bytes=0-3"})
    assert r.status_code == 206 and r.content == b"QFI\xfb"
    assert r.headers["content-range"].startswith("bytes 0-3/")


def test_reregister_rekeys_same_host(region):
    old = region.register_host("hv-a")
    new = region.register_host("hv-a")
    assert new.host_id == old.host_id and new.token != old.token
    assert region.client.get("/api/v1/agent/spec", headers=old.headers).status_code == 401
    assert new.spec()["host_id"] == old.host_id
    assert len(region.items("/hosts")) == 1


def test_register_refuses_unknown_zone_and_bad_token(region):
    body = {"name": "hv-x", "zone": "nowhere", "underlay_address": "192.0.2.1",
            "virt_type": "kvm", "capacity": {"vcpus": 1, "memory_mib": 1024, "disk_gib": 10}}
    enrol = {"Authorization": f"Bearer {region.tokens.enrolment_token}"}
    r = region.client.post("/api/v1/agent/register", json=body, headers=enrol)
    assert (r.status_code, r.json()["code"]) == (400, "InvalidZoneId.NotFound")
    r = region.client.post("/api/v1/agent/register", json={**body, "zone": "zone-a"},
                           headers=region.headers)
    assert r.status_code == 401
    r = region.client.post("/api/v1/agent/register", json={**body, "zone": "zone-a",
                                                           "name": "hv;rm"}, headers=enrol)
    assert (r.status_code, r.json()["code"]) == (400, "InvalidParameter.Name")
    assert region.items("/hosts") == []
