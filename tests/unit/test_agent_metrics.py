"""Agent metrics: counted per pass, storage measured at scrape time, served over HTTP."""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import AgentConfig
from agent.metrics import AgentMetrics
from agent.spec import HostReport, InstanceObserved
from agent.state import StateDir


def _samples(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_passes_errors_domains_and_storage_over_http(tmp_path):
    state = StateDir(tmp_path / "state")
    state.ensure()
    metrics = AgentMetrics(state)
    listen = f"127.0.0.1:{_port()}"
    server, thread = metrics.serve(listen)
    try:
        url = f"http://{listen}/metrics"
        first = _samples(httpx.get(url, timeout=10).text)
        assert first[("miniecs_agent_reconcile_pass_seconds_count", ())] == 0
        assert first[("miniecs_agent_disk_bytes", ())] == 0

        (state.images_dir / "a.qcow2").write_bytes(b"x" * 1024 * 1024)
        disk_dir = state.instances_dir / "i-abc"
        disk_dir.mkdir()
        (disk_dir / "d-abc.qcow2").write_bytes(b"y" * 3 * 1024 * 1024)
        report = HostReport(host_id="h-1", generation_applied=4, generation_seen=5, instances=[
            InstanceObserved(id="i-abc", power="running"),
            InstanceObserved(id="i-def", power="stopped", error="qemu died")],
            errors=["bridge: EPERM"])
        metrics.observe_pass(0.3, report, firewall_s=0.02)
        metrics.observe_pass(0.1, report.model_copy(update={"errors": [], "instances": [
            InstanceObserved(id="i-abc", power="running")]}), firewall_s=0.01)
        metrics.crashed()

        now = _samples(httpx.get(url, timeout=10).text)
        assert now[("miniecs_agent_reconcile_pass_seconds_count", ())] == 2
        assert now[("miniecs_agent_reconcile_pass_seconds_sum", ())] == pytest.approx(0.4)
        assert now[("miniecs_agent_firewall_apply_seconds_count", ())] == 2
        assert now[("miniecs_agent_reconcile_passes_total", (("outcome", "errors"),))] == 1
        assert now[("miniecs_agent_reconcile_passes_total", (("outcome", "converged"),))] == 1
        assert now[("miniecs_agent_reconcile_passes_total", (("outcome", "crashed"),))] == 1
        assert now[("miniecs_agent_errors_total", (("scope", "host"),))] == 1
        assert now[("miniecs_agent_errors_total", (("scope", "instance"),))] == 1
        assert now[("miniecs_agent_domains", (("state", "running"),))] == 1
        assert now[("miniecs_agent_domains", (("state", "stopped"),))] == 0  # latest pass
        assert now[("miniecs_agent_spec_generation", (("which", "seen"),))] == 5
        assert now[("miniecs_agent_image_cache_bytes", ())] >= 1024 * 1024
        assert now[("miniecs_agent_disk_bytes", ())] >= 3 * 1024 * 1024
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("listen, ok", [("", True), ("127.0.0.1:9464", True),
                                        ("[::1]:9464", True), ("9464", False),
                                        ("127.0.0.1:94a", False), ("a b:1", False)])
def test_metrics_listen_is_validated(listen, ok):
    base = {"controller_url": "http://c", "host_name": "h", "zone": "z",
            "underlay_address": "192.0.2.1"}
    if ok:
        assert AgentConfig(**base, metrics_listen=listen).metrics_listen == listen
    else:
        with pytest.raises(ValueError):
            AgentConfig(**base, metrics_listen=listen)
