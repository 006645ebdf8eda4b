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
