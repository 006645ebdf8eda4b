"""Heartbeat-only reports are written together, never lost for the down judgement, and a
down host's report still goes the full way (it comes back ready)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from controller.models import Host
from controller.services import heartbeats
from controller.services.hosts import mark_stale_hosts_down
from tests.controller_factories import region  # noqa: F401 - fixture


def _beat(region, host_id):
    with region.db.read() as session:
        return session.scalar(select(Host.last_heartbeat).where(Host.id == host_id))


def test_identical_reports_are_written_in_one_transaction(region, monkeypatch):
    agents = [region.register_host(f"hv-{n}") for n in range(5)]
    batch = heartbeats.batch_of(region.db)
    batch.flush()
    old = datetime.now(UTC) - timedelta(seconds=3)  # recent: the next beat may wait
    with region.db.write() as session:
        for a in agents:
            session.get(Host, a.host_id).last_heartbeat = old
    writes = []
    real_write = type(region.db).write

    def counting_write(db):
        writes.append(1)
        return real_write(db)

    flushes0 = batch.flushes
    monkeypatch.setattr(type(region.db), "write", counting_write)
    for a in agents:
        a.report({})  # the same (empty) report each host sent at registration
    batch.flush()
    # every write transaction was a flush of the batch (the controller's flusher may have
    # taken some of them a moment earlier): none per heartbeat
    assert 1 <= len(writes) == batch.flushes - flushes0 <= 2
    for a in agents:
        assert _beat(region, a.host_id) > old + timedelta(seconds=2)


def test_a_late_beat_is_written_at_once_the_watchdog_flushes_and_down_comes_back(region):
    region.settings.heartbeat_timeout_s = 60
    agent = region.register_host()
    batch = heartbeats.batch_of(region.db)
    batch.flush()
    recent = datetime.now(UTC) - timedelta(seconds=5)
    with region.db.write() as session:
        session.get(Host, agent.host_id).last_heartbeat = recent
    agent.report({})  # the stored beat is recent: this one waits for the batch
    assert _beat(region, agent.host_id) == recent
    assert batch.pending() == 1 or _beat(region, agent.host_id) > recent  # (or the flusher ran)
    assert mark_stale_hosts_down(region.db, region.settings) == 0
    assert batch.pending() == 0 and _beat(region, agent.host_id) > recent  # judged after a flush
    # a stored beat older than half the timeout: the new one is written at once, so
    # placement and the watchdog never take a host that just beat for a silent one
    late = datetime.now(UTC) - timedelta(seconds=45)
    with region.db.write() as session:
        session.get(Host, agent.host_id).last_heartbeat = late
    agent.report({})
    assert _beat(region, agent.host_id) > late + timedelta(seconds=40)
    with region.db.write() as session:  # now silent for real
        session.get(Host, agent.host_id).last_heartbeat = datetime.now(UTC) - timedelta(minutes=5)
    assert mark_stale_hosts_down(region.db, region.settings) == 1
    agent.report({})  # identical report, but the host is down: the full way, back to ready
    assert batch.pending() == 0
    assert region.ok("GET", f"/hosts/{agent.host_id}")["state"] == "ready"


def test_a_pending_beat_never_moves_a_newer_one_back():
    from tests.controller_factories import open_database, sqlite_url
    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp())
    db, _tokens = open_database(sqlite_url(tmp))
    try:
        from tests.unit.test_controller_scheduler import _host
        with db.write() as session:
            host_id = _host(session, "h1").id
        batch = heartbeats.HeartbeatBatch(db)
        newer = datetime.now(UTC)
        batch.add(host_id, newer - timedelta(seconds=3))
        with db.write() as session:
            session.get(Host, host_id).last_heartbeat = newer
        batch.flush()
        with db.read() as session:
            assert session.get(Host, host_id).last_heartbeat == newer
    finally:
        db.dispose()
