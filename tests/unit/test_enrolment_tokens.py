"""One-time enrolment tokens: minted by an admin for one host name, usable once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from controller.models import Setting
from controller.services.enrolment_tokens import KEY_PREFIX
from tests.controller_factories import region  # noqa: F401 - fixture

REG = {"zone": "zone-a", "underlay_address": "192.0.2.21", "virt_type": "qemu",
       "capacity": {"vcpus": 2, "memory_mib": 2048, "disk_gib": 20}}


def register(region, token: str, name: str):
    return region.client.post("/api/v1/agent/register", json={"name": name, **REG},
                              headers={"Authorization": f"Bearer {token}"})


def test_one_time_token_enrols_its_host_once(region):
    minted = region.ok("POST", "/enrolment-tokens", {"host_name": "hv-7"})
    assert minted["host_name"] == "hv-7" and minted["token"].startswith("mecse_")
    first = register(region, minted["token"], "hv-7")
    assert first.status_code == 201, first.text
    again = register(region, minted["token"], "hv-7")
    assert again.status_code == 401
    assert [h["name"] for h in region.items("/hosts")] == ["hv-7"]


def test_one_time_token_is_bound_to_its_host_name(region):
    minted = region.ok("POST", "/enrolment-tokens", {"host_name": "hv-7"})
    other = register(region, minted["token"], "hv-8")
    assert other.status_code == 400 and other.json()["field"] == "name"
    # refused, so not used up: the right host still enrols with it
    assert register(region, minted["token"], "hv-7").status_code == 201


def test_expired_token_is_refused_and_region_token_still_works(region):
    minted = region.ok("POST", "/enrolment-tokens", {"host_name": "hv-7", "ttl_seconds": 60})
    with region.db.write() as session:
        row = next(r for r in session.query(Setting).all() if r.key.startswith(KEY_PREFIX))
        data = json.loads(row.value)
        data["expires_at"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        row.value = json.dumps(data)
    assert register(region, minted["token"], "hv-7").status_code == 401
    assert register(region, region.tokens.enrolment_token, "hv-7").status_code == 201


def test_minting_needs_an_admin_and_valid_input(region):
    r = region.client.post("/api/v1/enrolment-tokens", json={"host_name": "hv-7"})
    assert r.status_code == 401
    for body, field in (({"host_name": "bad name;"}, "host_name"),
                        ({"host_name": "hv-7", "ttl_seconds": 5}, "ttl_seconds"),
                        ({"host_name": "hv-7", "extra": 1}, "extra")):
        r = region.call("POST", "/enrolment-tokens", body)
        assert r.status_code == 400 or r.status_code == 422, r.text
        assert field in r.text
