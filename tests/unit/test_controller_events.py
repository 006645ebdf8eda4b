"""Events: the audit log of API mutations and the status transitions, through the API."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from controller.app import create_app
from controller.models_events import Event
from controller.services import events
from tests.controller_factories import (  # noqa: F401 - fixture
    Region, default_database, make_settings, open_database, region,
)

SECRET_USER_DATA = "#cloud-config\npassword: s3cret-user-data-XYZ\n"


def _api_events(region, **params):
    return region.items("/events", kind="api", max_results=100, **params)


def test_mutations_are_listed_in_order_with_outcomes(region):
    agent = region.register_host()
    net = region.network()
    image = region.image()
    inst = region.create_instance(net, image, user_data=SECRET_USER_DATA)
    bad = region.call("POST", "/instances", region.instance_body(net, image,
                                                                 vswitch_id="vsw-nope"))
    assert bad.status_code == 404
    region.ok("POST", f"/instances/{inst['id']}/stop")
    unauth = region.client.post(f"/api/v1/instances/{inst['id']}/start",
                                headers={"Authorization": "Bearer mecs_wrong"})
    assert unauth.status_code == 401
    region.ok("GET", f"/instances/{inst['id']}")  # reads are not audited

    seen = [(e["method"], e["route"], e["status_code"], e["error_code"])
            for e in _api_events(region)]
    assert seen == [
        ("POST", "/api/v1/agent/register", 201, ""),
        ("POST", "/api/v1/vpcs", 201, ""),
        ("POST", "/api/v1/vswitches", 201, ""),
        ("POST", "/api/v1/security-groups", 201, ""),
        ("POST", "/api/v1/instances", 202, ""),
        ("POST", "/api/v1/instances", 404, bad.json()["code"]),
        ("POST", "/api/v1/instances/{instance_id}/stop", 202, ""),
        ("POST", "/api/v1/instances/{instance_id}/start", 401, "InvalidToken"),
    ]
    mine = _api_events(region, resource_id=inst["id"])
    assert [e["route"].rsplit("/", 1)[-1] for e in mine] == ["instances", "stop", "start"]
    create = mine[0]
    assert (create["resource_type"], create["actor_type"]) == ("instance", "token")
    admin = region.items("/tokens")[0]
    assert (create["actor_id"], create["actor_name"]) == (admin["id"], admin["name"])
    assert create["request_id"].startswith("req-")
    assert '"name":"web-1"' in create["request"] and "<redacted>" in create["request"]
    assert mine[2]["actor_type"] == "anonymous"
    register = _api_events(region, resource_type="host")[0]
    assert (register["resource_id"], register["actor_type"]) == (agent.host_id, "enrolment")


def test_status_transitions_are_recorded_with_cause(region):
    agent = region.register_host()
    net = region.network()
    inst = region.create_instance(net, region.image())
    agent.spec()
    agent.report({inst["id"]: "running"})
    region.ok("POST", f"/instances/{inst['id']}/stop")
    agent.report({inst["id"]: "stopped"})

    status = region.items("/events", kind="status", resource_id=inst["id"])
    assert [(e["old_status"], e["new_status"]) for e in status] == [
        ("Pending", "Running"), ("Running", "Stopping"), ("Stopping", "Stopped")]
    assert status[0]["cause"] == "POST /api/v1/agent/report"
    assert (status[0]["actor_type"], status[0]["actor_id"]) == ("host", agent.host_id)
    assert status[1]["cause"] == "POST /api/v1/instances/{instance_id}/stop"
    assert status[1]["actor_type"] == "token"
    # the whole story of the resource, in order, in one list (an API call's own
    # transitions commit before its outcome is known, so they come first)
    story = region.items("/events", resource_id=inst["id"])
    assert [(e["kind"], e["new_status"] or e["route"].rsplit("/", 1)[-1]) for e in story] == [
        ("api", "instances"), ("status", "Running"), ("status", "Stopping"), ("api", "stop"),
        ("status", "Stopped")]


def test_secrets_are_redacted(region):
    agent = region.register_host()
    net = region.network()
    region.create_instance(net, region.image(), user_data=SECRET_USER_DATA)
    token = region.ok("POST", "/tokens", {"name": "ci"})
    pair = region.ok("POST", "/key-pairs", {"name": "kp1"})
    assert pair.get("private_key") and token.get("token")
    agent.report({})

    stored = []
    with region.db.read() as session:
        for ev in session.scalars(select(Event)):
            stored.append(" ".join(str(getattr(ev, c.key)) for c in Event.__table__.columns))
    text = "\n".join(stored)
    for secret in ("s3cret-user-data-XYZ", token["token"], pair["private_key"].splitlines()[1],
                   region.tokens.admin_token, region.tokens.enrolment_token, agent.token):
        assert secret not in text
    listed = region.client.get("/api/v1/events", headers=region.headers).text
    assert "s3cret-user-data-XYZ" not in listed and token["token"] not in listed
    assert '"user_data":"<redacted>"' in text


def test_follow_delivers_a_new_event(region):
    net = region.network()
    last = region.ok("GET", "/events")["last_id"]
    assert last > 0
    answer: dict = {}

    def follow():
        started = time.monotonic()
        answer["body"] = region.ok("GET", "/events", after=last, wait=20)
        answer["took"] = time.monotonic() - started

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.5)
    assert "body" not in answer  # still waiting: nothing new yet
    region.ok("POST", "/security-groups", {"name": "sg2", "vpc_id": net["vpc"]["id"]})
    follower.join(timeout=20)
    items = answer["body"]["items"]
    assert [e["route"] for e in items] == ["/api/v1/security-groups"]
    assert answer["took"] < 15 and answer["body"]["last_id"] == items[0]["id"]


def test_paging_and_filters(region):
    net = region.network()
    for n in range(5):
        region.ok("POST", "/security-groups", {"name": f"g{n}", "vpc_id": net["vpc"]["id"]})
    page1 = region.ok("GET", "/events", resource_type="security_group", max_results=3)
    page2 = region.ok("GET", "/events", resource_type="security_group", max_results=3,
                      next_token=page1["next_token"])
    ids = [e["id"] for e in page1["items"] + page2["items"]]
    assert len(ids) == 6 and ids == sorted(ids) and page2["next_token"] is None
    newest = region.ok("GET", "/events", newest_first=True, max_results=2)["items"]
    assert newest[0]["id"] > newest[1]["id"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert region.items("/events", since=future) == []
    r = region.call("GET", "/events", since="2024-01-01T00:00:00")
    assert (r.status_code, r.json()["code"], r.json()["field"]) == (
        400, "InvalidParameter.Since", "since")
    r = region.call("GET", "/events", since="0.5")
    assert (r.status_code, r.json()["code"], r.json()["field"]) == (
        400, "InvalidParameter.Since", "since")
    r = region.call("GET", "/events", next_token="abc")
    assert (r.status_code, r.json()["code"]) == (400, "InvalidParameter.NextToken")


def _add_events(db, n, age_days):
    stamp = datetime.now(UTC) - timedelta(days=age_days)
    with db.write() as session:
        for i in range(n):
            session.add(Event(kind="status", created_at=stamp, resource_type="instance",
                              resource_id=f"i-old{i}", old_status="Pending",
                              new_status="Running"))


def _count(db) -> int:
    with db.read() as session:
        return session.scalar(select(func.count(Event.id)))


def test_retention_by_age_and_rows(tmp_path):
    with default_database(tmp_path) as url:
        db, _ = open_database(url)
        _add_events(db, 3, age_days=40)
        _add_events(db, 5, age_days=1)
        assert events.enforce_retention(db, max_age_days=30, max_rows=None) == 3
        assert _count(db) == 5
        assert events.enforce_retention(db, max_age_days=30, max_rows=2) == 3
        with db.read() as session:
            assert _count(db) == 2 and session.scalar(select(func.max(Event.id))) == 8
        assert events.enforce_retention(db, max_age_days=0, max_rows=0) == 0
        db.dispose()


def test_retention_runs_in_the_background(tmp_path):
    settings = make_settings(tmp_path, event_retention_days=7, event_retention_interval_s=0.2)
    with default_database(tmp_path) as url:
        db, tokens = open_database(url)
        _add_events(db, 4, age_days=8)
        _add_events(db, 1, age_days=0)
        with TestClient(create_app(settings, db)):
            deadline = time.monotonic() + 10
            while _count(db) > 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _count(db) == 1
        db.dispose()


@pytest.mark.parametrize("value, expected", [
    ({"name": "a", "user_data": "x"}, {"name": "a", "user_data": "<redacted>"}),
    ({"nested": [{"token": "t", "ok": 1}]}, {"nested": [{"token": "<redacted>", "ok": 1}]}),
    ({"private_key": "k", "PassWord": "p"}, {"private_key": "<redacted>",
                                            "PassWord": "<redacted>"}),
    ({"user_data": None}, {"user_data": None}),
])
def test_redact(value, expected):
    from controller.audit import redact
    assert redact(value) == expected
