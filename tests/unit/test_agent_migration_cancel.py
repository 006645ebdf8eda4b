"""The agent's side of a migration cancel: what it records, and transfers that stop midway."""

from __future__ import annotations

import httpx
import libvirt
import pytest

from agent.controller_client import ControllerClient
from agent.errors import Cancelled
from agent.migration import MigrationRunner
from agent.records import OperationLog
from agent.spec import HostSpec, MigrationSpec
from agent.state import StateDir


class _NoDomains:
    """A libvirt connection without the instance's domain (it never came here)."""

    def get(self):
        return self

    def lookupByName(self, name):
        raise libvirt.libvirtError(f"no domain {name}")


class _Running(_NoDomains):
    def lookupByName(self, name):
        return self

    def isActive(self):
        return True

    def state(self):
        return [libvirt.VIR_DOMAIN_RUNNING, 0]


def _runner(tmp_path, conn) -> MigrationRunner:
    state = StateDir(tmp_path / "state")
    state.ensure()
    return MigrationRunner(state, conn=conn, oplog=OperationLog(state.operations_json),
                           storage=None)  # type: ignore[arg-type]


def _spec(**mig) -> HostSpec:
    m = MigrationSpec(id="mig-1", instance_id="i-abc", kind="live", role="target",
                      peer_address="198.18.0.11", **mig)
    return HostSpec(host_id="h-2", generation=5, migrations=[m])


def test_a_cancelled_live_target_never_pulls_and_reports_failure(tmp_path):
    r = _runner(tmp_path, _NoDomains())
    r.run(_spec(cancel=True), render=lambda i: pytest.fail("must not render"), host_errors=[])
    out = r.results(_spec(cancel=True))
    assert [(x.id, x.ok, x.message) for x in out] == \
        [("mig-1", False, "cancelled before the copy started")]
    assert r.held(_spec(cancel=True)) == {"i-abc"}  # compute leaves it alone until it leaves


def test_a_cancel_after_the_switch_over_reports_success(tmp_path):
    r = _runner(tmp_path, _Running())
    r.run(_spec(cancel=True), render=lambda i: "", host_errors=[])
    [res] = r.results(_spec(cancel=True))
    assert res.ok and "after the switch-over" in res.message


def test_cancelled_asks_the_newest_spec(tmp_path):
    r = _runner(tmp_path, _NoDomains())
    assert r.cancelled("mig-1") is False  # no newer spec known: carry on
    latest = {"spec": _spec()}
    r.latest_spec = lambda: latest["spec"]
    assert r.cancelled("mig-1") is False
    latest["spec"] = _spec(cancel=True)
    assert r.cancelled("mig-1") is True
    latest["spec"] = HostSpec(host_id="h-2", generation=6)  # gone from the spec: cold cancel
    assert r.cancelled("mig-1") is True


def _client(handler) -> ControllerClient:
    c = ControllerClient("http://controller.test")
    c._http = httpx.Client(base_url="http://controller.test", transport=httpx.MockTransport(handler))
    return c


def _stop_after(n: int):
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > n
    return stop


def test_upload_stops_between_chunks_when_told(tmp_path):
    path = tmp_path / "disk.qcow2"
    path.write_bytes(b"x" * (3 << 20))  # three chunks
    got = []

    def handler(request: httpx.Request) -> httpx.Response:
        got.append(len(request.content))
        return httpx.Response(200, json={})

    with pytest.raises(Cancelled):
        _client(handler).upload("/api/v1/agent/migrations/m/disks/d", path, stop=_stop_after(1))
    assert got == []  # cut before the request completed: nothing published
    _client(handler).upload("/api/v1/agent/migrations/m/disks/d", path, stop=lambda: False)
    assert got == [3 << 20]


def test_download_stops_between_chunks_when_told(tmp_path):
    part = tmp_path / "d.part"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b"y" * (3 << 20)))

    with pytest.raises(Cancelled):
        _client(handler).download("/api/v1/agent/migrations/m/disks/d", part, stop=_stop_after(0))
    assert part.stat().st_size == 0  # stopped before the first chunk was written
    _client(handler).download("/api/v1/agent/migrations/m/disks/d", part, stop=lambda: False)
    assert part.stat().st_size == 3 << 20


def test_the_watcher_beside_a_live_pull_aborts_its_job_on_cancel(tmp_path):
    import threading

    r = _runner(tmp_path, _NoDomains())
    r.cancel_poll_s = 0.01
    latest = {"spec": _spec()}
    r.latest_spec = lambda: latest["spec"]
    aborted = threading.Event()

    class Dom:
        def abortJob(self):
            aborted.set()

    finished, seen = threading.Event(), threading.Event()
    watcher = threading.Thread(target=r._abort_on_cancel, args=(Dom(), "mig-1", finished, seen))
    watcher.start()
    assert not aborted.wait(0.1)  # not cancelled: the copy goes on
    latest["spec"] = _spec(cancel=True)
    assert aborted.wait(5) and seen.is_set()
    watcher.join(5)
    # a pull that ends first stops its watcher without aborting anything
    aborted.clear()
    finished2, seen2 = threading.Event(), threading.Event()
    latest["spec"] = _spec()
    w2 = threading.Thread(target=r._abort_on_cancel, args=(Dom(), "mig-1", finished2, seen2))
    w2.start()
    finished2.set()
    w2.join(5)
    assert not w2.is_alive() and not aborted.is_set() and not seen2.is_set()
