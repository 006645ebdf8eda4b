"""Reports that change only their generations (reports.py ``_batched`` with generations)."""

from __future__ import annotations

from controller.services import reports
from tests.controller_factories import region  # noqa: F401 - fixture
from tests.controller_factories import sql_statements


def _host(region, host_id: str) -> dict:
    return region.ok("GET", f"/hosts/{host_id}")


def test_generation_only_report_records_the_generations(region, monkeypatch):
    agent = region.register_host()
    net = region.network()
    inst = region.create_instance(net, region.image())
    agent.converge()
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Running"
    region.ok("POST", f"/security-groups/{net['sg']['id']}/rules",
              {"direction": "ingress", "protocol": "tcp", "port_range": "22/22",
               "peer_cidr": "0.0.0.0/0"})
    spec = agent.spec()
    full = []
    real = reports._apply_full
    monkeypatch.setattr(reports, "_apply_full", lambda *a: (full.append(a), real(*a)))
    agent.report()  # same instances, new generations
    assert full == []  # one UPDATE, not the full path
    host = _host(region, agent.host_id)
    assert host["generation_applied"] == spec["generation"] == host["generation"]
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Running"


def test_delete_still_finalises_after_generation_only_reports(region):
    agent = region.register_host()
    net = region.network()
    inst = region.create_instance(net, region.image())
    agent.converge()
    region.ok("DELETE", f"/instances/{inst['id']}", force="true")
    agent.spec()
    agent.report()  # still reports it, at the new generation: must not finalise
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] != "Deleted"
    agent.report({})  # gone from the host
    assert region.ok("GET", f"/instances/{inst['id']}")["status"] == "Deleted"


def _writes(db, fn) -> int:
    """Write transactions (BEGIN IMMEDIATE on SQLite) ``fn`` runs."""
    with sql_statements(db) as seen:
        fn()
    return len([s for s in seen if s.upper() == "BEGIN IMMEDIATE"])


def test_generation_only_reports_wait_in_the_heartbeat_batch_and_are_shown(region):
    """A peer's acknowledgement is no write transaction of its own: it joins the heartbeat
    batch, and whatever shows a host's generations (host, drift view) writes the batch
    first. An older acknowledgement never overwrites a newer full report."""
    from controller.services import heartbeats

    agent = region.register_host()
    net = region.network()
    region.create_instance(net, region.image())
    agent.converge()
    region.ok("POST", f"/security-groups/{net['sg']['id']}/rules",
              {"direction": "ingress", "protocol": "tcp", "port_range": "22/22",
               "peer_cidr": "0.0.0.0/0"})
    spec = agent.spec()
    assert _writes(region.db, lambda: agent.report()) == 0
    assert heartbeats.batch_of(region.db).pending() == 1
    status = region.ok("GET", "/status", host_id=agent.host_id, **{"all": "true"})
    row = next(i for i in status["items"] if i["resource_type"] == "host")
    assert row["converged"] and f"applied {spec['generation']}" in row["observed"]
    assert heartbeats.batch_of(region.db).pending() == 0
    assert _host(region, agent.host_id)["generation_applied"] == spec["generation"]

    # an acknowledgement older than a full report that follows it is dropped
    region.ok("POST", f"/security-groups/{net['sg']['id']}/rules",
              {"direction": "ingress", "protocol": "tcp", "port_range": "23/23",
               "peer_cidr": "0.0.0.0/0"})
    newer = agent.spec()
    agent.report(applied=spec["generation"])  # acknowledges the older one: batched
    assert heartbeats.batch_of(region.db).pending() == 1
    agent.report({})  # its instance gone: a full report at the new generation
    heartbeats.settle(region.db)
    assert _host(region, agent.host_id)["generation_applied"] == newer["generation"]
