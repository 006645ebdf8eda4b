"""End-to-end fixtures: a real region (controller + rig host + agent) per module."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.rig.cloud import Cloud
from tests.rig.leaks import snapshot, wait_no_leaks

PROJECT = Path(__file__).resolve().parents[2]
TINY_IMAGE = Path(os.environ.get("MINIECS_TINY_IMAGE", PROJECT / "images/build/tiny.qcow2"))


def _require_rig() -> None:
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (namespaces, libvirtd)")
    for tool in ("libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (run `make deps`)")
    if not TINY_IMAGE.exists():
        pytest.skip(f"{TINY_IMAGE} missing (run `make image`)")


@pytest.fixture(scope="module")
def cloud(request):
    """A region with one rig host, its agent, the tiny image, a VPC and a key pair."""
    _require_rig()
    name = "e" + request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")[:4]
    old = Cloud.load(name)
    if old:
        old.down()
    c = Cloud(name=name, database_url=os.environ.get("MINIECS_E2E_DATABASE_URL"))
    try:
        c.up(hosts=int(getattr(request.module, "RIG_HOSTS", 1)))
        yield c
    finally:
        c.down()


@pytest.fixture
def no_leaks(cloud):
    """Fail the test if it leaves a domain, disk, namespace, bridge, chain... behind."""
    before = snapshot(cloud.rig)
    yield
    wait_no_leaks(cloud.rig, before, timeout=60)
