"""Placement: filters with reasons, spread and pack scoring, policies through the API."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from controller.models import Host
from controller.services import placement
from controller.services.placement import Candidate, PlacementContext, PlacementRequest
from controller.services.scheduler import Demand, HostLoad, choose_host, host_load
from tests.controller_factories import default_db_url, make_settings, region  # noqa: F401  (fixture)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _host(name, zone="zone-a", state="ready", cap=(4, 4096, 100), used=(0, 0, 0),
          beat_age=1.0, **ratios) -> Host:
    return Host(id="h-" + name, name=name, zone_id=zone, state=state,
                capacity_vcpus=cap[0], capacity_memory_mib=cap[1], capacity_disk_gib=cap[2],
                allocated_vcpus=used[0], allocated_memory_mib=used[1], allocated_disk_gib=used[2],
                last_heartbeat=None if beat_age is None else NOW - timedelta(seconds=beat_age),
                **ratios)


def _decide(hosts, demand=Demand(1, 512, 5), policy="spread", zone="zone-a", members=None,
            tmp_path=None, **settings):
    s = make_settings(tmp_path, **settings)
    ctx = PlacementContext(PlacementRequest(zone, demand, policy, "ds-x" if members else None),
                           s, NOW, members or {})
    return placement.evaluate([Candidate(h, host_load(h, s)) for h in hosts], ctx)


def _reasons(decision, name) -> list[str]:
    verdict = next(v for v in decision.verdicts if v.host_name == name)
    return [r for _, r in verdict.rejected_by]


def test_every_filter_gives_its_reason(tmp_path):
    hosts = [_host("other", zone="zone-b"), _host("down", state="down"),
             _host("maint", state="maintenance"), _host("silent", beat_age=45),
             _host("never", beat_age=None),
             _host("full", cap=(1, 1024, 10), used=(4, 1000, 5)),
             _host("member"), _host("good")]
    d = _decide(hosts, tmp_path=tmp_path, members={"h-member": "i-abc"})
    assert d.chosen.host_name == "good"
    assert [v.host_name for v in d.verdicts if v.eligible] == ["good"]
    assert _reasons(d, "other") == [
        "zone mismatch: host is in zone-b, the request is for zone-a"]
    assert _reasons(d, "down")[0].startswith("host Down: missed heartbeats (last 2026-01-01")
    assert _reasons(d, "maint") == ["host in maintenance: no new placements"]
    assert _reasons(d, "silent") == ["no heartbeat for 45 s (timeout 30 s)"]
    assert _reasons(d, "never") == ["no heartbeat yet from its agent"]
    # Both short dimensions, with the figures after overcommit (cpu 4.0, memory 1.0, disk 1.0).
    assert _reasons(d, "full") == [
        "not enough vCPU: 4 allocated + 1 requested > 4 (1 x 4 overcommit); "
        "not enough memory: 1000 MiB allocated + 512 MiB requested > 1024 MiB "
        "(1024 MiB x 1 overcommit)"]
    assert _reasons(d, "member") == [
        "deployment set conflict: ds-x already has instance i-abc on this host"]


def test_a_host_collects_every_reason_not_just_the_first(tmp_path):
    d = _decide([_host("bad", zone="zone-b", state="down", cap=(0, 0, 0))], tmp_path=tmp_path)
    assert d.chosen is None
    names = [n for n, _ in d.verdicts[0].rejected_by]
    assert names == ["zone", "state", "capacity"]


def test_overcommit_ratios_per_host_and_region(tmp_path):
    hosts = [_host("strict", cap=(2, 8192, 100), used=(2, 0, 0), cpu_overcommit=1.0),
             _host("loose", cap=(2, 8192, 100), used=(7, 0, 0))]
    d = _decide(hosts, tmp_path=tmp_path)  # region cpu ratio 4.0: loose holds 8
    assert d.chosen.host_name == "loose"
    assert "(2 x 1 overcommit)" in _reasons(d, "strict")[0]
    d = _decide(hosts, tmp_path=tmp_path, cpu_overcommit=3.0)
    assert d.chosen is None
    assert "> 6 (2 x 3 overcommit)" in _reasons(d, "loose")[0]
    d = _decide([_host("h", cap=(64, 1000, 100))], Demand(1, 1500, 1), tmp_path=tmp_path,
                memory_overcommit=1.5)
    assert d.chosen.host_name == "h"


def test_spread_and_pack_rank_the_same_hosts_oppositely(tmp_path):
    hosts = [_host("a", used=(3, 0, 0)), _host("b", used=(1, 0, 0)), _host("c", used=(2, 0, 0))]
    spread = _decide(hosts, Demand(1, 1, 1), "spread", tmp_path=tmp_path)
    pack = _decide(hosts, Demand(1, 1, 1), "pack", tmp_path=tmp_path)
    assert [v.host_name for v in spread.verdicts] == ["b", "c", "a"]
    assert [v.host_name for v in pack.verdicts] == ["a", "c", "b"]
    # load after placement is the largest utilisation: (3+1)/16 for a
    assert next(v for v in pack.verdicts if v.host_name == "a").load_after == 0.25
    assert spread.chosen.score == pytest.approx(1 - 2 / 16)


def test_pack_skips_a_fuller_host_that_does_not_fit(tmp_path):
    hosts = [_host("nearly-full", cap=(1, 1024, 100), used=(0, 900, 0)),
             _host("half", cap=(1, 1024, 100), used=(0, 512, 0))]
    d = _decide(hosts, Demand(1, 256, 1), "pack", tmp_path=tmp_path)
    assert d.chosen.host_name == "half"
    assert not d.verdicts[1].eligible


@pytest.mark.parametrize("policy,expect", [("spread", [5, 5, 5, 5]), ("pack", [16, 4, 0, 0])])
def test_many_hosts_fill_by_policy(policy, expect):
    loads = {f"h{i}": 0 for i in range(4)}
    for _ in range(20):
        candidates = [HostLoad(n, n, 16, 1 << 20, 1 << 20, u, 0, 0) for n, u in loads.items()]
        loads[choose_host(candidates, Demand(1, 1, 1), policy).host_id] += 1
    assert list(loads.values()) == expect


def test_ties_break_by_name(tmp_path):
    hosts = [_host(n) for n in ("zeta", "alpha", "mid")]
    assert _decide(hosts, tmp_path=tmp_path).chosen.host_name == "alpha"
    assert _decide(hosts, policy="pack", tmp_path=tmp_path).chosen.host_name == "alpha"


# ---- through the API, many fake agents --------------------------------------------

def _hosts_of(region, ids) -> Counter:
    return Counter(region.ok("GET", f"/instances/{i}")["host_id"] for i in ids)


def test_api_spread_default_and_pack_per_create(region):  # noqa: F811
    agents = [region.register_host(f"hv-{i:02d}", vcpus=2, memory_mib=2048) for i in range(6)]
    net, image = region.network(), region.image()
    spread = [region.create_instance(net, image, name=f"s{i}")["id"] for i in range(6)]
    assert sorted(_hosts_of(region, spread).values()) == [1] * 6
    packed = [region.create_instance(net, image, name=f"p{i}", placement_policy="pack")["id"]
              for i in range(6)]
    by_host = _hosts_of(region, packed)
    # pack puts them all on one host while it has room (nano: 256 MiB, 2048 MiB hosts)
    assert list(by_host.values()) == [6]
    assert len(agents) == 6


def test_api_region_default_policy_is_a_setting(tmp_path, default_db_url):
    from fastapi.testclient import TestClient

    from controller.app import create_app
    from tests.controller_factories import Region, open_database

    settings = make_settings(tmp_path, placement_policy="pack")
    db, tokens = open_database(default_db_url)
    with TestClient(create_app(settings, db)) as client:
        r = Region(client, db, settings, tokens)
        for i in range(3):
            r.register_host(f"hv-{i}")
        net, image = r.network(), r.image()
        ids = [r.create_instance(net, image, name=f"w{i}")["id"] for i in range(4)]
        assert len(_hosts_of(r, ids)) == 1
        ids = [r.create_instance(net, image, name=f"x{i}", placement_policy="spread")["id"]
               for i in range(2)]
        assert len(_hosts_of(r, ids)) == 2
    db.dispose()


def test_api_unknown_policy_is_refused_and_nothing_created(region):  # noqa: F811
    region.register_host()
    net, image = region.network(), region.image()
    r = region.call("POST", "/instances",
                    region.instance_body(net, image, placement_policy="scatter"))
    assert r.status_code == 400
    assert r.json()["code"] == "InvalidParameter.PlacementPolicy"
    assert r.json()["field"] == "placement_policy"
    assert region.items("/instances") == []
    assert region.ok("GET", "/hosts")["items"][0]["allocated"]["vcpus"] == 0


def test_api_no_stock_message_names_each_host_and_reason(region):  # noqa: F811
    region.register_host("hv-small", vcpus=1, memory_mib=256)
    region.register_host("hv-down")
    with region.db.write() as session:
        session.query(Host).filter(Host.name == "hv-down").update({"state": "down"})
    net, image = region.network(), region.image()
    region.create_instance(net, image)
    r = region.call("POST", "/instances", region.instance_body(net, image, name="web-2"))
    assert (r.status_code, r.json()["code"]) == (409, "OperationDenied.NoStock")
    msg = r.json()["message"]
    assert "hv-small: not enough memory: 256 MiB allocated + 256 MiB requested > 256 MiB" in msg
    assert "hv-down: host Down" in msg
