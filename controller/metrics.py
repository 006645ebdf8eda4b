"""Prometheus metrics of the controller (``prometheus-client``).

Each app has its own ``CollectorRegistry`` (tests build many apps in one
process). Request latency and recorded events are counted as they happen;
the region's state (instances by status, hosts by state, spec generation lag
per host) is read from the database at scrape time by ``RegionCollector``,
so the figures are right whichever controller process made the change.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from controller.db import Database
from controller.models import Host, Instance
from controller.services import heartbeats

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class RegionCollector:
    """Gauges read from the database on every scrape."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self):
        started = time.perf_counter()
        instances = GaugeMetricFamily("miniecs_instances", "Instances by status (not Deleted)",
                                      labels=["status"])
        hosts = GaugeMetricFamily("miniecs_hosts", "Hosts by state", labels=["state"])
        lag = GaugeMetricFamily(
            "miniecs_host_spec_generation_lag",
            "Spec generations the host's agent has not applied yet (0: converged)",
            labels=["host_id", "host"])
        heartbeat = GaugeMetricFamily("miniecs_host_heartbeat_age_seconds",
                                      "Seconds since the host's last report",
                                      labels=["host_id", "host"])
        now = datetime.now(UTC)
        heartbeats.settle(self.db)  # the generations acknowledged in the batch count
        with self.db.read() as session:
            for status, n in session.execute(
                    select(Instance.status, func.count(Instance.id))
                    .where(Instance.deleted_at.is_(None)).group_by(Instance.status)):
                instances.add_metric([status], n)
            for state, n in session.execute(
                    select(Host.state, func.count(Host.id)).group_by(Host.state)):
                hosts.add_metric([state], n)
            for hid, name, gen, applied, beat in session.execute(
                    select(Host.id, Host.name, Host.generation, Host.generation_applied,
                           Host.last_heartbeat)):
                lag.add_metric([hid, name], max(0, gen - max(applied, 0)))
                if beat is not None:
                    heartbeat.add_metric([hid, name], (now - beat).total_seconds())
        took = GaugeMetricFamily("miniecs_metrics_scrape_db_seconds",
                                 "Time to read the region gauges from the database")
        took.add_metric([], time.perf_counter() - started)
        return [instances, hosts, lag, heartbeat, took]


class ControllerMetrics:
    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "miniecs_api_request_duration_seconds",
            "API request latency by route template, method and status class",
            ["method", "route", "status_class"], buckets=LATENCY_BUCKETS,
            registry=self.registry)
        self.events_recorded = Counter(
            "miniecs_events_recorded", "Events recorded (api: mutations, status: transitions)",
            ["kind"], registry=self.registry)
        for kind in ("api", "status"):
            self.events_recorded.labels(kind=kind)
        self.agent_channels = Gauge("miniecs_agent_channels", "Agent channels open",
                                    registry=self.registry)
        self.channel_messages = Counter(
            "miniecs_agent_channel_messages",
            "Messages on agent channels (spec: pushed to an agent; report: taken from one)",
            ["kind"], registry=self.registry)
        for kind in ("spec", "report"):
            self.channel_messages.labels(kind=kind)
        self.registry.register(RegionCollector(db))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.request_seconds.labels(method=method, route=route,
                                    status_class=f"{status // 100}xx").observe(seconds)
