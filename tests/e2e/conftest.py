"""End-to-end fixtures: a real region (controller + rig host + agent) per module."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.controller_factories import default_database, on_postgres
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


def rig_name(module: str) -> str:
    """A short rig name unique to the module: modules run side by side under pytest-xdist
    (``make test`` runs the end-to-end modules on two workers), so two modules whose
    names share their first letters (test_instance_lifecycle, test_instance_ops) must
    not share a rig."""
    stem = module.rsplit(".", 1)[-1].removeprefix("test_")
    return "e" + stem[:4] + hashlib.sha256(stem.encode()).hexdigest()[:3]


@pytest.fixture(scope="module")
def cloud(request):
    """A region with one rig host, its agent, the tiny image, a VPC and a key pair."""
    _require_rig()
    name = rig_name(request.module.__name__)
    old = Cloud.load(name)
    if old:
        old.down()
    with contextlib.ExitStack() as stack:
        url = os.environ.get("MINIECS_E2E_DATABASE_URL")
        if url is None and on_postgres():  # a fresh PostgreSQL database per module
            url = stack.enter_context(default_database())
        c = Cloud(name=name, database_url=url)
        try:
            c.up(hosts=int(getattr(request.module, "RIG_HOSTS", 1)))
            yield c
        finally:
            c.down()


@pytest.fixture
def no_leaks(cloud, request):
    """Fail the test if it leaves a domain, disk, namespace, bridge, chain... behind.

    A test that failed already gets its instances force-deleted first, so one
    failure does not cascade into the next test's leak check.
    """
    before = snapshot(cloud.rig)
    instances_before = {i["id"] for i in cloud.get("/instances", max_results=100)["items"]}
    yield
    call = getattr(request.node, "rep_call", None)
    if call is None or call.failed:
        for inst in cloud.get("/instances", max_results=100)["items"]:
            if inst["id"] not in instances_before:
                cloud.request("DELETE", f"/instances/{inst['id']}", ok=False, force="true")
    wait_no_leaks(cloud.rig, before, timeout=60)
