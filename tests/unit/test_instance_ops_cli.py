"""``miniecs instance`` change-type, modify, create --count, console --follow against a real
controller (uvicorn in a thread) and a fake agent."""

from __future__ import annotations

import threading
import time

from tests.unit.test_cli_commands import (  # noqa: F401 - fixtures
    AgentLoop, agent, as_json, cli, live, miniecs, network,
)

BASE = ("--type", "ecs.t1.nano", "--image", "tiny", "--vswitch", "web", "--sg", "web-sg")


def test_create_count_with_patterns_then_refusals(cli, network, agent):
    made = as_json("instance", "create", "web-[1,3]", "--count", "3", "--hostname", "w[0,1]",
                   *BASE)["items"]
    assert [(i["name"], i["hostname"]) for i in made] == \
        [("web-001", "w0"), ("web-002", "w1"), ("web-003", "w2")]
    result = miniecs("instance", "create", "x-[1,3", "--count", "2", *BASE, code=1)
    assert "InvalidParameter.NamePattern" in result.stderr and "(field: name)" in result.stderr
    result = miniecs("instance", "create", "x-[1,3]", "--count", "101", *BASE, code=1)
    assert "InvalidParameter.Amount" in result.stderr
    assert len(as_json("instance", "list")["items"]) == 3


def test_modify_change_type_and_deletion_protection(cli, network, agent):
    sg2 = as_json("sg", "create", "web-sg2", "--vpc", "prod")
    with AgentLoop(agent):
        inst = as_json("instance", "create", "web-1", *BASE, "--wait", "--timeout", "30")
        shown = as_json("instance", "modify", "web-1", "--sg", "web-sg", "--sg", "web-sg2",
                        "--hostname", "renamed", "--deletion-protection")
        assert shown["security_group_ids"] == [network["sg"]["id"], sg2["id"]]
        assert shown["hostname"] == "renamed" and shown["deletion_protection"] is True
        result = miniecs("instance", "delete", "web-1", "--force", code=1)
        assert "InvalidOperation.DeletionProtection" in result.stderr
        result = miniecs("instance", "change-type", "web-1", "--type", "ecs.t1.small", code=1)
        assert "IncorrectInstanceStatus" in result.stderr
        as_json("instance", "stop", "web-1", "--wait", "--timeout", "30")
        changed = as_json("instance", "change-type", "web-1", "--type", "ecs.t1.small")
        assert (changed["instance_type"], changed["memory_mib"]) == ("ecs.t1.small", 1024)
        assert "nothing to modify" in miniecs("instance", "modify", "web-1", code=2).stderr
        as_json("instance", "modify", inst["id"], "--no-deletion-protection")
        as_json("instance", "delete", "web-1", "--wait", "--timeout", "30")


def test_console_follow_prints_until_the_stream_ends(cli, network, agent):
    with AgentLoop(agent):
        inst = as_json("instance", "create", "web-1", *BASE, "--wait", "--timeout", "30")
        r = cli.region.client.post(f"/api/v1/agent/console/{inst['id']}", params={"offset": 0},
                                   content=b"first line\n", headers=agent.headers)
        assert r.status_code == 200, r.text
        results = []
        follower = threading.Thread(
            target=lambda: results.append(miniecs("instance", "console", "web-1", "--follow")))
        follower.start()
        time.sleep(1.5)
        r = cli.region.client.post(f"/api/v1/agent/console/{inst['id']}",
                                   params={"offset": len(b"first line\n")},
                                   content=b"second line\n", headers=agent.headers)
        assert r.status_code == 200, r.text
        time.sleep(1.5)
        as_json("instance", "delete", "web-1", "--force", "--wait", "--timeout", "30")
        follower.join(30)  # a deleted instance ends the stream
    assert not follower.is_alive()
    assert results[0].stdout == "first line\nsecond line\n"


def test_console_follow_resumes_after_a_cut_and_stops_when_deleted(monkeypatch, capfd):
    """A stream cut by a controller restart resumes at the next byte; a gone instance ends it."""
    import httpx

    from controller.cli import instances as cli_instances
    from controller.cli.client import ApiClient
    from controller.cli.profiles import Profile

    calls: list[tuple[str, str | None]] = []
    streams = iter([lambda: httpx.Response(200, stream=httpx.ByteStream(b"hello")),
                    lambda: (_ for _ in ()).throw(httpx.ConnectError("refused")),
                    lambda: httpx.Response(200, stream=httpx.ByteStream(b" world\n"))])
    shows = iter([httpx.Response(200, json={"id": "i-1", "status": "Running"}),
                  httpx.Response(404, json={"code": "InvalidInstanceId.NotFound",
                                            "message": "gone", "field": "instance_id"})])

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.url.path, request.url.params.get("offset")))
        if request.url.path.endswith("/console/stream"):
            return next(streams)()
        return next(shows)

    monkeypatch.setattr(cli_instances.time, "sleep", lambda s: None)
    api = ApiClient(Profile("t", "http://ctl", "tok"), transport=httpx.MockTransport(handler))
    cli_instances._follow_console(api, "i-1")
    out, err = capfd.readouterr()
    assert out == "hello world\n"
    assert "reconnecting" in err
    assert calls == [("/api/v1/instances/i-1/console/stream", "0"), ("/api/v1/instances/i-1", None),
                     ("/api/v1/instances/i-1/console/stream", "5"),
                     ("/api/v1/instances/i-1/console/stream", "5"), ("/api/v1/instances/i-1", None)]
