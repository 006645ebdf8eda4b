"""Prometheus metrics of the agent, served on ``metrics_listen`` (off by default).

Counted per reconcile pass by the main loop (``Agent.run``): pass duration,
firewall sync duration, errors, domains by observed power, the generations
applied and seen. Disk and image cache use is measured at scrape time from the
state directory (allocated bytes, so sparse qcow2 files count what they use).
"""

from __future__ import annotations

import logging
import os
from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from agent.spec import HostReport
from agent.state import StateDir

log = logging.getLogger(__name__)

PASS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
FIREWALL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
POWERS = ("running", "stopped", "shutting_down", "paused", "missing", "error")


def allocated_bytes(root) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass  # removed while walking
    return total


class StorageCollector:
    def __init__(self, state: StateDir) -> None:
        self.state = state

    def collect(self):
        disks = GaugeMetricFamily("miniecs_agent_disk_bytes",
                                  "Bytes allocated by instance disks, seeds and consoles")
        disks.add_metric([], allocated_bytes(self.state.instances_dir))
        images = GaugeMetricFamily("miniecs_agent_image_cache_bytes",
                                   "Bytes allocated by the image cache")
        images.add_metric([], allocated_bytes(self.state.images_dir))
        return [disks, images]


class AgentMetrics:
    def __init__(self, state: StateDir) -> None:
        self.registry = r = CollectorRegistry()
        self.pass_seconds = Histogram("miniecs_agent_reconcile_pass_seconds",
                                      "Duration of a reconcile pass", buckets=PASS_BUCKETS,
                                      registry=r)
        self.passes = Counter("miniecs_agent_reconcile_passes", "Reconcile passes by outcome "
                              "(converged, errors, crashed)", ["outcome"], registry=r)
        self.firewall_seconds = Histogram("miniecs_agent_firewall_apply_seconds",
                                          "Duration of the firewall sync of a pass",
                                          buckets=FIREWALL_BUCKETS, registry=r)
        self.errors = Counter("miniecs_agent_errors", "Reconcile errors seen in passes "
                              "(host: host-level; instance: per instance)", ["scope"],
                              registry=r)
        self.domains = Gauge("miniecs_agent_domains", "Instances of the spec by observed power",
                             ["state"], registry=r)
        self.generation = Gauge("miniecs_agent_spec_generation",
                                "Spec generations: seen (latest fetched), applied (converged)",
                                ["which"], registry=r)
        for outcome in ("converged", "errors", "crashed"):
            self.passes.labels(outcome=outcome)
        for scope in ("host", "instance"):
            self.errors.labels(scope=scope)
        r.register(StorageCollector(state))

    def observe_pass(self, seconds: float, report: HostReport, firewall_s: float) -> None:
        self.pass_seconds.observe(seconds)
        self.firewall_seconds.observe(firewall_s)
        instance_errors = sum(1 for i in report.instances if i.error)
        self.errors.labels(scope="host").inc(len(report.errors))
        self.errors.labels(scope="instance").inc(instance_errors)
        self.passes.labels(outcome="errors" if report.errors or instance_errors
                           else "converged").inc()
        tally = Tally(i.power for i in report.instances)
        for power in set(POWERS) | set(tally):
            self.domains.labels(state=power).set(tally.get(power, 0))
        self.generation.labels(which="applied").set(report.generation_applied)
        self.generation.labels(which="seen").set(report.generation_seen)

    def crashed(self) -> None:
        self.passes.labels(outcome="crashed").inc()

    def serve(self, listen: str):
        """Start the HTTP listener on ``ADDR:PORT``; returns (server, thread)."""
        host, _, port = listen.rpartition(":")
        server, thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1",
                                           registry=self.registry)
        log.info("metrics on http://%s/metrics", listen)
        return server, thread
