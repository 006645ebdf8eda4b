"""Spec answers asked together are read together: the hosts a change wakes are answered in
one read transaction (their heads in one statement, their VPCs' net generations in one),
each host's failure its own."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from controller.api import agent as agent_routes
from controller.errors import NotFound
from tests.controller_factories import database_url, region, region_any_db  # noqa: F401
from tests.controller_factories import sql_statements


def _woken_peers(region):
    """Three hosts with a port each in one VPC, their specs cached; then a fourth instance
    changes the VPC's part of every one of them."""
    region.client.app.state.spec_cache.check = False
    agents = [region.register_host(f"hv-{n}", underlay=f"192.0.2.{11 + n}") for n in range(3)]
    net, image = region.network(), region.image()
    for n in range(3):
        region.create_instance(net, image, name=f"a{n}")
    for a in agents:
        a.spec()
    made = region.create_instance(net, image, name="a3")
    return agents, made


def test_hosts_woken_together_are_read_in_one_transaction(region_any_db):
    region = region_any_db
    agents, made = _woken_peers(region)
    state = region.client.app.state
    ids = [a.host_id for a in agents] + ["h-removed"]
    with sql_statements(region.db) as seen:
        answers = agent_routes._spec_bodies(state.db, ids, state.settings, state.spec_cache)
    # (not the generation poller's read, which may land in the window: other columns)
    heads = [s for s in seen
             if s.startswith("SELECT hosts.id, hosts.generation, hosts.local_generation")]
    net_gens = [s for s in seen if s.startswith("SELECT vpcs.id, vpcs.net_generation")]
    assert len(heads) == 1 and len(net_gens) == 1, seen
    assert isinstance(answers["h-removed"], NotFound)
    for a in agents:
        generation, body = answers[a.host_id]
        spec = json.loads(body)
        assert spec["generation"] == generation
        assert made["private_ip_address"] in {p["ip"] for n in spec["networks"]
                                              for p in n["ports"]}


def _record_reads(monkeypatch) -> list[list[str]]:
    """The hosts of each ``_spec_bodies`` read from now on, sorted."""
    calls: list[list[str]] = []
    real = agent_routes._spec_bodies

    def recording(db, host_ids, settings, cache):
        calls.append(sorted(host_ids))
        return real(db, host_ids, settings, cache)

    monkeypatch.setattr(agent_routes, "_spec_bodies", recording)
    return calls


def test_answers_asked_in_one_turn_share_one_read_and_fail_alone(region, monkeypatch):
    agents, _made = _woken_peers(region)
    calls = _record_reads(monkeypatch)
    app = SimpleNamespace(state=region.client.app.state)
    ids = [a.host_id for a in agents]

    async def ask_all():
        return await asyncio.gather(*(agent_routes._spec_of(app, h) for h in ids),
                                    agent_routes._spec_of(app, "h-removed"),
                                    return_exceptions=True)

    *answers, missing = asyncio.run(ask_all())
    assert calls == [sorted(ids + ["h-removed"])]
    assert isinstance(missing, NotFound)
    assert [json.loads(body)["host_id"] for _gen, body in answers] == ids
    # and asked again later: a read of its own
    asyncio.run(ask_all())
    assert len(calls) == 2


def test_a_failed_read_fails_its_askers_and_the_next_read_runs(region, monkeypatch):
    agents, _made = _woken_peers(region)
    app = SimpleNamespace(state=region.client.app.state)
    real = agent_routes._spec_bodies
    broken = [True]

    def failing(db, host_ids, settings, cache):
        if broken[0]:
            broken[0] = False
            raise RuntimeError("database went away")
        return real(db, host_ids, settings, cache)

    monkeypatch.setattr(agent_routes, "_spec_bodies", failing)

    async def ask():
        return await agent_routes._spec_of(app, agents[0].host_id)

    with pytest.raises(RuntimeError, match="went away"):
        asyncio.run(ask())
    generation, body = asyncio.run(ask())
    assert json.loads(body)["generation"] == generation


def test_a_read_takes_at_most_read_batch_hosts(region, monkeypatch):
    agents, _made = _woken_peers(region)
    monkeypatch.setattr(agent_routes, "READ_BATCH", 2)
    calls = _record_reads(monkeypatch)
    app = SimpleNamespace(state=region.client.app.state)

    async def ask_all():
        return await asyncio.gather(*(agent_routes._spec_of(app, a.host_id) for a in agents))

    answers = asyncio.run(ask_all())
    assert sorted(len(c) for c in calls) == [1, 2]
    assert [json.loads(body)["host_id"] for _gen, body in answers] == \
        [a.host_id for a in agents]
