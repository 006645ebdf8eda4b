"""The agent channel (``WS /api/v1/agent/channel``): specs pushed, reports taken back."""

from __future__ import annotations

import json
import time

import pytest
from starlette.websockets import WebSocketDisconnect

from tests.controller_factories import region  # noqa: F401 - fixture

CHANNEL = "/api/v1/agent/channel"


def _report(agent, generation: int, instances: dict[str, str]) -> str:
    return json.dumps({"host_id": agent.host_id, "generation_applied": generation,
                       "generation_seen": generation,
                       "instances": [{"id": i, "power": p} for i, p in instances.items()],
                       "operations": [], "errors": []})


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.02)


def _closed(ws) -> tuple[int, str]:
    with pytest.raises(WebSocketDisconnect) as exc:
        ws.receive_bytes()
    return exc.value.code, exc.value.reason


def test_channel_pushes_each_new_spec_and_applies_reports(region):
    agent = region.register_host()
    net = region.network()
    image = region.image()
    with region.client.websocket_connect(CHANNEL, headers=agent.headers) as ws:
        first = json.loads(ws.receive_bytes())
        assert first["host_id"] == agent.host_id and first["instances"] == []
        inst = region.create_instance(net, image)
        pushed = json.loads(ws.receive_bytes())  # no request: the create pushed it
        assert pushed["generation"] > first["generation"]
        assert [i["id"] for i in pushed["instances"]] == [inst["id"]]
        # the report over the channel is applied like a POST /agent/report
        ws.send_text(_report(agent, pushed["generation"], {inst["id"]: "running"}))
        _wait_for(lambda: region.ok("GET", f"/instances/{inst['id']}")["status"] == "Running")
        host = region.ok("GET", f"/hosts/{agent.host_id}")
        assert host["generation_applied"] == pushed["generation"]
        running = region.items("/events", resource_id=inst["id"], kind="status")[-1]
        assert running["new_status"] == "Running"
        assert (running["cause"], running["actor_type"], running["actor_name"]) == (
            "WS /api/v1/agent/channel", "host", host["name"])
        # and the channel goes on pushing
        second = region.create_instance(net, image, name="web-2")
        again = json.loads(ws.receive_bytes())
        assert {i["id"] for i in again["instances"]} == {inst["id"], second["id"]}


def test_channel_sends_nothing_the_agent_already_holds(region):
    agent = region.register_host()
    generation = agent.spec()["generation"]
    net = region.network()
    with region.client.websocket_connect(f"{CHANNEL}?after={generation}",
                                         headers=agent.headers) as ws:
        inst = region.create_instance(net, region.image())
        pushed = json.loads(ws.receive_bytes())  # the first message is the change
        assert pushed["generation"] > generation
        assert [i["id"] for i in pushed["instances"]] == [inst["id"]]


def test_channel_refuses_unknown_and_other_tokens(region):
    agent = region.register_host()
    for headers in ({"Authorization": "Bearer not-a-token"}, region.headers, {}):
        with region.client.websocket_connect(CHANNEL, headers=headers) as ws:
            code, reason = _closed(ws)
        assert code == 4401 and "token" in reason
    with region.client.websocket_connect(CHANNEL, headers=agent.headers) as ws:
        ws.receive_bytes()


def test_channel_closes_on_a_bad_report_naming_the_field(region):
    agent = region.register_host()
    with region.client.websocket_connect(CHANNEL, headers=agent.headers) as ws:
        ws.receive_bytes()
        bad = json.loads(_report(agent, 1, {}))
        bad["generation_applied"] = "soon"
        ws.send_text(json.dumps(bad))
        code, reason = _closed(ws)
    assert code == 4400 and "generation_applied" in reason


def test_channel_refuses_a_report_for_another_host(region):
    agent = region.register_host()
    other = region.register_host(name="hv-02", underlay="192.0.2.12")
    with region.client.websocket_connect(CHANNEL, headers=agent.headers) as ws:
        ws.receive_bytes()
        ws.send_text(_report(other, 1, {}))
        code, reason = _closed(ws)
    assert code == 4403 and "HostMismatch" in reason


def test_rekey_closes_an_open_channel(region):
    """A re-keyed host's old token stops working on the channel too: the next report is
    refused at once (the same process clears the token cache on commit)."""
    agent = region.register_host()
    with region.client.websocket_connect(CHANNEL, headers=agent.headers) as ws:
        ws.receive_bytes()
        region.ok("POST", f"/hosts/{agent.host_id}/rekey")
        ws.send_text(_report(agent, 1, {}))
        code, reason = _closed(ws)
    assert code == 4401 and "revoked" in reason


def _receive_within(ws, timeout: float) -> bytes | None:
    """The next message, or None when nothing came within ``timeout``."""
    import threading

    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(ws.receive_bytes()), daemon=True)
    reader.start()
    reader.join(timeout)
    return got[0] if got else None


def test_a_change_made_by_another_process_is_pushed(region):
    """No in-process commit hook fires for another controller process's change: the
    shared generation poller wakes the channel."""
    from sqlalchemy import update

    from controller.models import Host

    agent = region.register_host()
    with region.client.websocket_connect(CHANNEL, headers=agent.headers) as ws:
        expected = json.loads(ws.receive_bytes())["generation"]
        for _ in range(2):
            with region.db.write() as session:  # as another process would: no notify
                session.execute(update(Host).where(Host.id == agent.host_id)
                                .values(generation=Host.generation + 1))
            expected += 1
            got = _receive_within(ws, 5.0)
            assert got is not None, "the out-of-process change was not pushed"
            assert json.loads(got)["generation"] == expected


def test_open_channels_and_their_messages_are_in_metrics(region):
    from tests.unit.test_controller_metrics import scrape, value

    agent = region.register_host()
    before = scrape(region)
    assert value(before, "miniecs_agent_channels") == 0
    with region.client.websocket_connect(CHANNEL, headers=agent.headers) as ws:
        spec = json.loads(ws.receive_bytes())
        ws.send_text(_report(agent, spec["generation"], {}))
        _wait_for(lambda: value(scrape(region), "miniecs_agent_channel_messages_total",
                                kind="report") == 1 + value(
            before, "miniecs_agent_channel_messages_total", kind="report"))
        during = scrape(region)
        assert value(during, "miniecs_agent_channels") == 1
        assert value(during, "miniecs_agent_channel_messages_total", kind="spec") == 1
    _wait_for(lambda: value(scrape(region), "miniecs_agent_channels") == 0)


def test_reports_are_read_while_one_is_applied_and_only_the_latest_waits(region, monkeypatch):
    """The channel keeps reading while a report is being applied (the server reads nothing
    more until the application takes a message, and a connection not read for the ping
    timeout is closed): reports that arrive meanwhile replace each other, and a bad one
    closes the channel at once."""
    import threading

    from controller.services import reports

    agent = region.register_host()
    applied: list[int] = []
    release = threading.Event()
    real = reports.apply_report

    def slow(db, host_id, report, settings=None):
        applied.append(report.generation_applied)
        if len(applied) == 1:
            release.wait(20)
        return real(db, host_id, report, settings)

    monkeypatch.setattr(reports, "apply_report", slow)
    with region.client.websocket_connect(CHANNEL, headers=agent.headers) as ws:
        generation = json.loads(ws.receive_bytes())["generation"]
        ws.send_text(_report(agent, generation, {}))
        _wait_for(lambda: applied == [generation])
        for n in (1, 2, 3):  # while the first is stuck: only the last of these is applied
            ws.send_text(_report(agent, generation + n, {}))
        _wait_for(lambda: value_of_reports(region) >= 4)
        release.set()
        _wait_for(lambda: applied == [generation, generation + 3])
        release.clear()
        applied.clear()
        ws.send_text(_report(agent, generation + 4, {}))  # stuck again
        _wait_for(lambda: applied == [generation + 4])
        ws.send_text("{}")
        code, reason = _closed(ws)  # at once, not after the stuck report
        release.set()
    assert code == 4400 and "host_id" in reason


def value_of_reports(region) -> float:
    from tests.unit.test_controller_metrics import scrape, value

    return value(scrape(region), "miniecs_agent_channel_messages_total", kind="report")


def test_an_agent_ahead_of_the_database_gets_its_spec_at_once(region):
    """After a restore from a backup the region's generations are older than what the
    agents hold: the channel sends the restored spec at once (the long-poll delivered it
    when its wait ran out), instead of waiting for the generation to pass the agent's."""
    agent = region.register_host()
    generation = agent.spec()["generation"]
    with region.client.websocket_connect(f"{CHANNEL}?after={generation + 100}",
                                         headers=agent.headers) as ws:
        got = _receive_within(ws, 5.0)
        assert got is not None, "the restored spec was not sent"
        assert json.loads(got)["generation"] == generation
