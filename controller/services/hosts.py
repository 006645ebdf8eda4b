"""Hosts: views, admin updates (maintenance, ratios), and the heartbeat watchdog."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from controller.config import Settings
from controller.db import Database
from controller.models import Host
from controller.schemas import hosts as schema
from controller.services import events, heartbeats, host_tokens
from controller.services.common import get_or_404, paginate
from controller.services.scheduler import effective_ratios
from controller.tokens import HOST_PREFIX, hash_token, new_token

log = logging.getLogger(__name__)


def to_view(host: Host, settings: Settings) -> schema.Host:
    cpu, mem, disk = effective_ratios(host, settings)
    return schema.Host(
        id=host.id, name=host.name, zone_id=host.zone_id, underlay_address=host.underlay_address,
        virt_type=host.virt_type, agent_version=host.agent_version,
        state="maintenance" if host.maintenance else host.state, maintenance=host.maintenance,
        capacity=schema.HostResources(vcpus=host.capacity_vcpus,
                                      memory_mib=host.capacity_memory_mib,
                                      disk_gib=host.capacity_disk_gib),
        allocated=schema.HostResources(vcpus=host.allocated_vcpus,
                                       memory_mib=host.allocated_memory_mib,
                                       disk_gib=host.allocated_disk_gib),
        overcommit=schema.HostOvercommit(cpu=cpu, memory=mem, disk=disk),
        generation=host.generation, generation_applied=host.generation_applied,
        last_heartbeat=host.last_heartbeat, last_errors=json.loads(host.last_errors or "[]"),
        created_at=host.created_at)


def get_host(db: Database, settings: Settings, host_id: str) -> schema.Host:
    heartbeats.settle(db)  # its last heartbeat and acknowledged generation, if batched
    with db.read() as session:
        return to_view(get_or_404(session, Host, host_id, "InvalidHostId.NotFound", "host_id"),
                       settings)


def list_hosts(db: Database, settings: Settings, max_results: int, next_token: str | None,
               zone_id: str | None = None) -> schema.HostList:
    stmt = select(Host)
    if zone_id:
        stmt = stmt.where(Host.zone_id == zone_id)
    heartbeats.settle(db)
    with db.read() as session:
        rows, token = paginate(session, stmt, Host, max_results, next_token)
        return schema.HostList(items=[to_view(h, settings) for h in rows], next_token=token)


def update_host(db: Database, settings: Settings, host_id: str,
                req: schema.HostUpdate) -> schema.Host:
    """Admin changes: maintenance (no new placements) and per-host overcommit ratios."""
    with db.write() as session:
        host = get_or_404(session, Host, host_id, "InvalidHostId.NotFound", "host_id",
                          for_update=True)
        maintenance = req.maintenance if req.maintenance is not None else (
            None if req.state is None else req.state == "maintenance")
        if maintenance is not None:
            host.maintenance = maintenance  # a flag; ``state`` stays the host's liveness
            if host.state == "maintenance":  # rows from before the flag existed
                host.state = "ready" if _alive(host, settings) else "down"
        for field in ("cpu_overcommit", "memory_overcommit", "disk_overcommit"):
            if getattr(req, field) is not None:
                setattr(host, field, getattr(req, field))
        session.flush()
        return to_view(host, settings)


def rekey_host(db: Database, host_id: str) -> tuple[str, str]:
    """Give a host a new token (returned once); its old token is refused from now on."""
    token = new_token(HOST_PREFIX)
    with db.write() as session:
        host = get_or_404(session, Host, host_id, "InvalidHostId.NotFound", "host_id",
                          for_update=True)
        host.token_hash = hash_token(token)
        host_id = host.id
    host_tokens.tokens_changed(db)
    log.info("host %s re-keyed; its old token is revoked", host_id)
    return host_id, token


def mark_stale_hosts_down(db: Database, settings: Settings) -> int:
    """Hosts in state ready whose last heartbeat is older than the timeout become down."""
    heartbeats.settle(db)  # the heartbeats waiting to be written count
    cutoff = datetime.now(UTC) - timedelta(seconds=settings.heartbeat_timeout_s)
    # ORM updates, not a bulk UPDATE, so each transition is recorded as an event
    with events.acting_as("heartbeat watchdog"), db.write() as session:
        stale = list(session.scalars(
            select(Host).where(Host.state == "ready",
                               (Host.last_heartbeat.is_(None)) | (Host.last_heartbeat < cutoff))
            .with_for_update()))
        for host in stale:
            host.state = "down"
        if stale:
            log.warning("%d host(s) missed their heartbeats; marked down", len(stale))
        return len(stale)


def _alive(host: Host, settings: Settings) -> bool:
    return (host.last_heartbeat is not None and host.last_heartbeat
            >= datetime.now(UTC) - timedelta(seconds=settings.heartbeat_timeout_s))
