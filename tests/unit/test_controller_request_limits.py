"""Request limits: body size (with or without Content-Length) and list page sizes."""

from __future__ import annotations

import json

import pytest

from controller.app import MAX_BODY_BYTES
from controller.schemas.common import MAX_PAGE
from tests.controller_factories import region  # noqa: F401 - fixture

LIST_ROUTES = ("/zones", "/hosts", "/instance-types", "/images", "/key-pairs", "/vpcs",
               "/vswitches", "/security-groups", "/instances", "/disks", "/snapshots",
               "/snapshot-policies", "/eips", "/tokens")


def _chunks(total: int, size: int = 64 * 1024):
    """A body sent without Content-Length (chunked): a JSON string of ``total`` bytes."""
    yield b'{"name": "v", "cidr_block": "10.0.0.0/16", "description": "'
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield b"x" * n
        sent += n
    yield b'"}'


def test_chunked_body_over_the_limit_is_413_and_creates_nothing(region):
    r = region.client.post("/api/v1/vpcs", content=_chunks(2 * MAX_BODY_BYTES),
                           headers={**region.headers, "content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["code"] == "RequestTooLarge" and str(MAX_BODY_BYTES) in body["message"]
    assert body["request_id"].startswith("req-")
    assert region.items("/vpcs") == []


def test_chunked_body_under_the_limit_is_served(region):
    def small():
        yield b'{"name": "v1", '
        yield b'"cidr_block": "10.0.0.0/16"}'
    r = region.client.post("/api/v1/vpcs", content=small(),
                           headers={**region.headers, "content-type": "application/json"})
    assert r.status_code == 201, r.text
    assert [v["name"] for v in region.items("/vpcs")] == ["v1"]


def test_content_length_over_the_limit_is_refused_before_reading(region):
    r = region.client.post("/api/v1/instances", content=b"{" + b" " * MAX_BODY_BYTES + b"}",
                           headers={**region.headers, "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "RequestTooLarge"
    assert r.headers["x-request-id"] == r.json()["request_id"]


def test_agent_console_push_is_limited_too(region):
    agent = region.register_host()
    r = region.client.post("/api/v1/agent/console/i-x", params={"offset": 0},
                           content=(b"y" * 65536 for _ in range(32)), headers=agent.headers)
    assert r.status_code == 413 and r.json()["code"] == "RequestTooLarge"


def test_streamed_image_export_upload_is_not_cut_at_the_limit(region):
    """The export upload streams to disk and checks its digest; it is exempt (here: 404,
    because no export is pending for this host — not 413)."""
    agent = region.register_host()
    r = region.client.put("/api/v1/agent/images/m-none/data",
                          content=(b"z" * 65536 for _ in range(32)), headers=agent.headers)
    assert r.status_code == 404, r.text


@pytest.mark.parametrize("value", ["0", "-1", str(MAX_PAGE + 1), "100000", "ten", "1.5"])
def test_page_size_out_of_range_is_400_naming_the_field(region, value):
    for path in LIST_ROUTES:
        r = region.call("GET", path, max_results=value)
        assert r.status_code == 400, (path, r.text)
        assert (r.json()["code"], r.json()["field"]) == \
            ("InvalidParameter.MaxResults", "max_results"), path


def test_next_token_too_long_or_forged_is_400(region):
    for token in ("x" * 513, "bm90LWEtdG9rZW4", "%%%"):
        r = region.call("GET", "/key-pairs", next_token=token)
        assert r.status_code == 400, r.text
        assert (r.json()["code"], r.json()["field"]) == ("InvalidParameter.NextToken",
                                                          "next_token")


def test_paging_walks_every_item_once(region):
    names = {f"k{i}" for i in range(5)}
    for n in names:
        region.ok("POST", "/key-pairs", {"name": n})
    seen, token = [], None
    while True:
        page = region.ok("GET", "/key-pairs", max_results=2,
                         **({"next_token": token} if token else {}))
        assert len(page["items"]) <= 2
        seen += [k["name"] for k in page["items"]]
        token = page["next_token"]
        if token is None:
            break
    assert sorted(seen) == sorted(names)
    full = region.ok("GET", "/key-pairs", max_results=MAX_PAGE)
    assert len(full["items"]) == 5 and full["next_token"] is None
    assert json.dumps(full)  # plain JSON
