"""A guest that powers itself off while it should run is Stopped, as ECS (and Nova) show
it: the agent reports ``stopped_by_guest`` with the start it ended (the spec's
``power_serial``), the controller makes the desired power stopped and records why; a
start is an ordinary start with a new serial; a report about an older start changes
nothing."""

from __future__ import annotations

from tests.controller_factories import database_url, region_any_db  # noqa: F401


def _guest_off(agent, iid: str, serial: int) -> None:
    observed = {k: v for k, v in agent.observed.items() if k != iid}
    agent.report(observed, extra=[{"id": iid, "power": "stopped",
                                   "stopped_by_guest": serial}])


def test_a_guest_poweroff_is_shown_stopped_and_a_start_starts_it(region_any_db):
    r = region_any_db
    agent = r.register_host()
    inst = r.create_instance(r.network(), r.image())
    iid = inst["id"]
    spec = agent.converge()
    assert spec["instances"][0]["power_serial"] == 0
    assert r.ok("GET", f"/instances/{iid}")["status"] == "Running"
    before = agent.spec()["generation"]

    _guest_off(agent, iid, 0)
    shown = r.ok("GET", f"/instances/{iid}")
    assert (shown["status"], shown["desired_power"]) == ("Stopped", "stopped")
    assert "powered itself off" in shown["status_reason"]
    # the agent is told at once: its spec now says stopped; its reports since (no flag:
    # the spec says stopped) keep the reason while the instance stays Stopped
    after = agent.spec()
    assert after["generation"] > before and after["instances"][0]["power"] == "stopped"
    agent.report({iid: "stopped"})
    assert "powered itself off" in r.ok("GET", f"/instances/{iid}")["status_reason"]
    events = r.ok("GET", "/events", resource_id=iid)["items"]
    stop = [e for e in events if e.get("new_status") == "Stopped"]
    assert stop and "powered itself off" in stop[-1]["message"]

    # a start: desired running, a new serial in the spec
    r.ok("POST", f"/instances/{iid}/start")
    started = agent.spec()["instances"][0]
    assert (started["power"], started["power_serial"]) == ("running", 1)
    # a late report about the earlier start changes nothing
    _guest_off(agent, iid, 0)
    shown = r.ok("GET", f"/instances/{iid}")
    assert shown["desired_power"] == "running" and shown["status"] == "Starting"
    assert "powered itself off" not in shown["status_reason"]
    agent.report({iid: "running"})
    assert r.ok("GET", f"/instances/{iid}")["status"] == "Running"
    # starting a running instance is no new start
    r.ok("POST", f"/instances/{iid}/start")
    assert agent.spec()["instances"][0]["power_serial"] == 1


def test_a_stopped_report_without_the_flag_is_still_restarted(region_any_db):
    """A crash or a power loss (no ``stopped_by_guest``) keeps the desired power."""
    r = region_any_db
    agent = r.register_host()
    iid = r.create_instance(r.network(), r.image())["id"]
    agent.converge()
    agent.report({iid: "stopped"})
    shown = r.ok("GET", f"/instances/{iid}")
    assert (shown["status"], shown["desired_power"]) == ("Starting", "running")
