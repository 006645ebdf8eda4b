"""The reconcile pass with a fake libvirt: per-instance errors, retries, adoption, reports."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from agent.errors import TemporaryError
from agent.network import NetworkObserved
from agent.reconcile import Reconciler
from agent.state import StateDir
from agent.testing import FakeLibvirt, make_host_spec, make_image, make_instance

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img missing")

A, B = "i-aaaaaaaaaaaaaaaaaaa1", "i-bbbbbbbbbbbbbbbbbbb2"


class NoNetwork:
    def observe(self, desired):
        return NetworkObserved()

    def live_routers(self):
        return set()

    def apply(self, action):
        raise AssertionError(f"unexpected network action {action}")


@pytest.fixture
def setup(tmp_path):
    src = tmp_path / "img.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "64M"], check=True)
    img = make_image(sha256=hashlib.sha256(src.read_bytes()).hexdigest(), virtual_size=64 << 20)
    state = StateDir(tmp_path / "state")
    state.ensure()
    conn = FakeLibvirt()
    rec = Reconciler(state, conn, virt_type="qemu", disk_cache="writeback",
                     netns_dir=tmp_path / "netns",
                     download=lambda url, part: shutil.copyfile(src, part))
    rec.network = NoNetwork()
    return rec, conn, img, state


def spec_of(img, *instances, gen=1):
    return make_host_spec(gen, instances=list(instances), networks=[], images=[img])


def by_id(report):
    return {i.id: i for i in report.instances}


def test_one_bad_instance_does_not_block_the_other(setup):
    rec, conn, img, state = setup
    conn.failures[("create", A)] = "qemu says no"
    spec = spec_of(img, make_instance(A, image=img), make_instance(B, image=img))
    report = rec.run_pass(spec)
    seen = by_id(report)
    assert seen[B].power == "running" and seen[B].error is None
    assert seen[A].power == "stopped" and "qemu says no" in seen[A].error
    assert seen[A].retryable and seen[A].retries == 1
    assert report.generation_applied == -1 and report.generation_seen == 1
    # the failure is retried after its backoff; success clears it
    del conn.failures[("create", A)]
    rec.failures[A].next_at = 0
    report = rec.run_pass(spec)
    assert by_id(report)[A].power == "running" and by_id(report)[A].retries == 0
    assert report.generation_applied == 1


def test_backoff_skips_a_failing_instance_until_due_or_new_generation(setup):
    rec, conn, img, _ = setup
    conn.failures[("define", A)] = "bad xml"
    spec = spec_of(img, make_instance(A, image=img))
    rec.run_pass(spec)
    rec.run_pass(spec)  # within the backoff: not attempted again
    assert rec.failures[A].count == 1
    rec.run_pass(spec_of(img, make_instance(A, image=img), gen=2))  # a new spec retries at once
    assert rec.failures[A].count == 2


def test_adopts_running_domain_after_restart(setup):
    rec, conn, img, state = setup
    spec = spec_of(img, make_instance(A, image=img))
    rec.run_pass(spec)
    dom = conn.domains[A]
    assert dom.calls == ["create"]
    fresh = Reconciler(state, conn, virt_type="qemu", disk_cache="writeback",
                       netns_dir=state.root / "netns", download=rec.storage.download)
    fresh.network = NoNetwork()
    report = fresh.run_pass(spec_of(img, make_instance(A, image=img), gen=5))
    assert dom.calls == ["create"] and by_id(report)[A].power == "running"


def test_foreign_domains_are_invisible(setup):
    rec, conn, img, _ = setup
    conn.defineXML("<domain type='qemu'><name>someone-else</name></domain>")
    report = rec.run_pass(spec_of(img))
    assert "someone-else" in conn.domains and report.errors == []


def test_missing_image_is_reported_per_instance(setup):
    rec, conn, img, _ = setup
    other = make_image("m-other00000000000000", sha256="1" * 64)
    spec = make_host_spec(1, instances=[make_instance(A, image=other), make_instance(B, image=img)],
                          networks=[], images=[img])
    seen = by_id(rec.run_pass(spec))
    assert seen[A].power == "missing" and "not available" in seen[A].error
    assert seen[B].power == "running"


def test_delete_removes_domain_then_files(setup):
    rec, conn, img, state = setup
    rec.run_pass(spec_of(img, make_instance(A, image=img)))
    assert state.instance_dir(A).exists()
    report = rec.run_pass(spec_of(img, gen=2))
    assert A not in conn.domains and not state.instance_dir(A).exists()
    assert report.instances == [] and report.generation_applied == 2


def test_libvirt_down_reports_error_and_keeps_files(setup):
    rec, conn, img, state = setup
    rec.run_pass(spec_of(img, make_instance(A, image=img)))

    def down():
        raise TemporaryError("libvirt: connection refused")
    conn.get = down
    report = rec.run_pass(spec_of(img, gen=2))  # even a spec without A must not delete its files
    assert state.instance_dir(A).exists()
    assert any("connection refused" in e for e in report.errors)


def _restarted(rec, state):
    fresh = Reconciler(state, rec.conn, virt_type="qemu", disk_cache="writeback",
                       netns_dir=state.root / "netns", download=rec.storage.download)
    fresh.network = NoNetwork()
    return fresh


def test_a_guest_that_powers_itself_off_is_held_stopped_until_told(setup):
    """ECS shows a guest that shut itself down as Stopped: the agent does not start it
    again, and says so, until the spec says stopped or a new start (a new serial)."""
    rec, conn, img, state = setup
    running = make_instance(A, image=img, power="running")
    rec.run_pass(spec_of(img, running))
    dom = conn.domains[A]
    conn.domains[A].guest_poweroff()  # `poweroff` inside the guest
    for gen in (2, 3):  # held across passes, and across an agent restart
        report = rec.run_pass(spec_of(img, running, gen=gen))
        assert dom.calls == ["create"] and not dom.active
        assert (by_id(report)[A].power, by_id(report)[A].stopped_by_guest) == ("stopped", 0)
        rec = _restarted(rec, state)
    # the controller took note: the spec says stopped; nothing to do, nothing held
    report = rec.run_pass(spec_of(img, make_instance(A, image=img, power="stopped"), gen=4))
    assert by_id(report)[A].stopped_by_guest is None and rec.guest_power.stopped == {}
    # a start (serial 1) is an ordinary start, though libvirt still says "shut down"
    again = make_instance(A, image=img, power="running", power_serial=1)
    report = rec.run_pass(spec_of(img, again, gen=5))
    assert dom.calls == ["create", "create"] and by_id(report)[A].power == "running"
    # and a start the agent saw without the stopped spec between also releases the hold
    dom.guest_poweroff()
    assert by_id(rec.run_pass(spec_of(img, again, gen=6)))[A].stopped_by_guest == 1
    report = rec.run_pass(spec_of(img, make_instance(A, image=img, power="running",
                                                     power_serial=2), gen=7))
    assert dom.calls[-1] == "create" and by_id(report)[A].stopped_by_guest is None


def test_stops_that_are_not_the_guests_own_are_undone(setup):
    """Destroyed, or shut down by the agent's own stop: started again when running."""
    rec, conn, img, state = setup
    running = make_instance(A, image=img, power="running")
    rec.run_pass(spec_of(img, running))
    dom = conn.domains[A]
    dom.destroy()  # power lost, a crash, `virsh destroy`
    report = rec.run_pass(spec_of(img, running, gen=2))
    assert dom.active and by_id(report)[A].stopped_by_guest is None
    # the agent's own stop ends "shut down" too; the start that follows starts it
    stopped = make_instance(A, image=img, power="stopped")
    rec.run_pass(spec_of(img, stopped, gen=3))
    assert "shutdown" in dom.calls
    dom.guest_poweroff()  # the guest obeys the ACPI request
    rec.run_pass(spec_of(img, stopped, gen=4))
    report = rec.run_pass(spec_of(img, make_instance(A, image=img, power="running",
                                                     power_serial=1), gen=5))
    assert dom.active and by_id(report)[A].stopped_by_guest is None
    # a domain never seen running under this start is not the guest's stop either
    fresh_state = StateDir(state.root.parent / "state2")
    fresh_state.ensure()
    dom.guest_poweroff()
    rec2 = Reconciler(fresh_state, conn, virt_type="qemu", disk_cache="writeback",
                      netns_dir=fresh_state.root / "netns", download=rec.storage.download)
    rec2.network = NoNetwork()
    rec2.run_pass(spec_of(img, make_instance(A, image=img, power="running",
                                             power_serial=1), gen=6))
    assert dom.active


def test_a_start_during_the_agents_own_shutdown_still_starts(setup):
    """Stop (ACPI sent, the guest still shutting down), then start at once: the shutdown
    that completes afterwards was the agent's request, so the domain is started again."""
    rec, conn, img, _ = setup
    rec.run_pass(spec_of(img, make_instance(A, image=img, power="running")))
    dom = conn.domains[A]
    rec.run_pass(spec_of(img, make_instance(A, image=img, power="stopped"), gen=2))
    assert dom.calls == ["create", "shutdown"] and dom.active
    again = make_instance(A, image=img, power="running", power_serial=1)
    rec.run_pass(spec_of(img, again, gen=3))  # still running: nothing to do yet
    dom.guest_poweroff()  # the guest obeys the ACPI request now
    report = rec.run_pass(spec_of(img, again, gen=3))
    assert dom.active and dom.calls[-1] == "create"
    assert by_id(report)[A].stopped_by_guest is None
