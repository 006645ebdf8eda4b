"""Reports that change only their generations (reports.py ``_generations_only``)."""

from __future__ import annotations

from controller.services import reports
from tests.controller_factories import region  # noqa: F401 - fixture


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
