"""Controller /metrics: parses with the Prometheus text parser, and moves as the region acts."""

from __future__ import annotations

import socket

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from controller.app import create_app
from tests.controller_factories import (  # noqa: F401 - fixture
    Region, default_db_url, make_settings, open_database, region,
)


def scrape(region, headers=None) -> dict[tuple, float]:
    r = region.client.get("/metrics", headers=region.headers if headers is None else headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


def samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics, name, **labels) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_as_the_region_acts(region):
    agent = region.register_host()
    net = region.network()
    before = scrape(region)
    assert value(before, "miniecs_hosts", state="ready") == 1
    route = "/api/v1/instances"
    count = "miniecs_api_request_duration_seconds_count"
    created_before = value(before, count, method="POST", route=route, status_class="2xx")
    api_events = value(before, "miniecs_events_recorded_total", kind="api")

    inst = region.create_instance(net, region.image())
    region.call("POST", "/instances", region.instance_body(net, "m-nope"))  # a 4xx
    mid = scrape(region)
    assert value(mid, count, method="POST", route=route, status_class="2xx") == created_before + 1
    assert value(mid, count, method="POST", route=route, status_class="4xx") == 1
    assert value(mid, "miniecs_instances", status="Pending") == 1
    assert value(mid, "miniecs_events_recorded_total", kind="api") == api_events + 2
    lag = value(mid, "miniecs_host_spec_generation_lag", host_id=agent.host_id, host="hv-01")
    assert lag >= 1
    # the route label is the template, never the id
    get_route = "/api/v1/instances/{instance_id}"
    region.ok("GET", f"/instances/{inst['id']}")
    assert value(scrape(region), count, method="GET", route=get_route, status_class="2xx") == 1

    status_events = value(mid, "miniecs_events_recorded_total", kind="status")
    agent.converge()
    after = scrape(region)
    assert value(after, "miniecs_instances", status="Running") == 1
    assert value(after, "miniecs_instances", status="Pending") == 0
    assert value(after, "miniecs_host_spec_generation_lag", host_id=agent.host_id,
                 host="hv-01") == 0
    assert value(after, "miniecs_events_recorded_total", kind="status") == status_events + 1
    assert value(after, "miniecs_host_heartbeat_age_seconds", host_id=agent.host_id,
                 host="hv-01") < 60


def test_metrics_need_a_token(region):
    r = region.client.get("/metrics")
    assert (r.status_code, r.json()["code"]) == (401, "InvalidToken")
    r = region.client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_metrics_token_and_open_listener(tmp_path, default_db_url):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(tmp_path, metrics_token="scrape-only-secret",
                             metrics_listen=f"127.0.0.1:{port}")
    db, tokens = open_database(default_db_url)
    with TestClient(create_app(settings, db)) as client:
        region = Region(client, db, settings, tokens)
        scraped = scrape(region, {"Authorization": "Bearer scrape-only-secret"})
        assert value(scraped, "miniecs_hosts", state="ready") == 0
        # the metrics token reads metrics, nothing else
        r = client.get("/api/v1/instances",
                       headers={"Authorization": "Bearer scrape-only-secret"})
        assert r.status_code == 401
        open_text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert "miniecs_events_recorded_total" in open_text
        assert samples(open_text)
    db.dispose()
