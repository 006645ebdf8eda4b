"""The drift view (GET /status, miniecs status) with a fake agent driving reports."""

from __future__ import annotations

from tests.controller_factories import region  # noqa: F401 - fixture


def _item(view, rtype, rid):
    return next((i for i in view["items"] if (i["resource_type"], i["resource_id"])
                 == (rtype, rid)), None)


def test_instance_and_host_drift_until_the_agent_converges(region):
    agent = region.register_host()
    net = region.network()
    inst = region.create_instance(net, region.image())

    view = region.ok("GET", "/status")
    host = _item(view, "host", agent.host_id)
    assert host and not host["converged"] and host["desired"].startswith("generation ")
    pending = _item(view, "instance", inst["id"])
    assert pending["desired"] == "running" and pending["observed"] == "not reported"
    assert pending["status"] == "Pending" and pending["last_converged_at"] is None
    assert view["summary"]["instances_converged"] == 0 and view["summary"]["drifted"] >= 2

    agent.converge()  # applies the spec and reports the instance running
    view = region.ok("GET", "/status")
    assert _item(view, "host", agent.host_id) is None
    assert _item(view, "instance", inst["id"]) is None
    assert view["summary"] == {"hosts": 1, "hosts_converged": 1, "instances": 1,
                               "instances_converged": 1, "drifted": 0}
    everything = region.ok("GET", "/status", all="true")
    shown = _item(everything, "instance", inst["id"])
    assert shown["converged"] and shown["last_converged_at"] and shown["observed"] == "running"
    converged_at = shown["last_converged_at"]
    assert _item(everything, "host", agent.host_id)["last_converged_at"]

    # asked to stop, the agent has not acted yet: drifted, last converged kept
    region.ok("POST", f"/instances/{inst['id']}/stop")
    view = region.ok("GET", "/status")
    drifting = _item(view, "instance", inst["id"])
    assert (drifting["desired"], drifting["observed"], drifting["status"]) == (
        "stopped", "running", "Stopping")
    assert drifting["last_converged_at"] == converged_at
    assert not _item(view, "host", agent.host_id)["converged"]  # a new generation to apply

    agent.converge()
    view = region.ok("GET", "/status")
    assert view["summary"]["drifted"] == 0 and view["items"] == []


def test_agent_errors_show(region):
    agent = region.register_host()
    net = region.network()
    inst = region.create_instance(net, region.image())
    agent.spec()
    agent.report({}, errors=["bridge mbr-x: Operation not permitted"],
                 extra=[{"id": inst["id"], "power": "stopped", "error": "qemu died",
                         "retryable": True, "retries": 3}])
    view = region.ok("GET", "/status")
    shown = _item(view, "instance", inst["id"])
    assert (shown["status"], shown["error"], shown["retries"]) == ("Starting", "qemu died", 3)
    assert "Operation not permitted" in _item(view, "host", agent.host_id)["error"]
    only = region.ok("GET", "/status", resource_type="host")
    assert {i["resource_type"] for i in only["items"]} == {"host"}


def test_pending_operation_shows_until_reported(region):
    agent = region.register_host()
    net = region.network()
    inst = region.create_instance(net, region.image())
    agent.converge()
    op = region.ok("POST", f"/instances/{inst['id']}/reboot")
    shown = _item(region.ok("GET", "/status"), "operation", op["id"])
    assert (shown["observed"], shown["host_id"]) == ("pending", agent.host_id)
    agent.spec()
    agent.report(operations=[{"id": op["id"], "ok": True, "message": "rebooted"}])
    assert _item(region.ok("GET", "/status"), "operation", op["id"]) is None


def test_down_host_is_drift(region):
    from datetime import UTC, datetime, timedelta

    from controller.models import Host
    from controller.services.hosts import mark_stale_hosts_down

    from controller.services import heartbeats

    agent = region.register_host()
    agent.converge()
    # its acknowledgement waits in the heartbeat batch with a heartbeat of now: written
    # first, so that the hour-old heartbeat below is the last one the watchdog sees
    heartbeats.settle(region.db)
    with region.db.write() as session:
        session.get(Host, agent.host_id).last_heartbeat = datetime.now(UTC) - timedelta(hours=1)
    assert mark_stale_hosts_down(region.db, region.settings) == 1
    shown = _item(region.ok("GET", "/status"), "host", agent.host_id)
    assert shown["status"] == "down" and "no heartbeat" in shown["observed"]
    ev = region.items("/events", resource_id=agent.host_id, kind="status")[-1]
    assert (ev["old_status"], ev["new_status"], ev["cause"]) == ("ready", "down",
                                                                "heartbeat watchdog")
