"""Storage plan, from tables, and the disk/image apply steps on real files (qemu-img)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from agent.errors import PermanentError, TemporaryError
from agent.seed import render_seed
from agent.spec import HostSpec
from agent.state import StateDir
from agent.storage import (CreateDisk, FetchImage, RemoveInstanceFiles, StorageApplier,
                           StorageObserved, WriteSeed, plan_storage)
from agent.testing import GIB, make_host_spec, make_image, make_instance

IMG = make_image()
I1 = make_instance("i-1111111111111111111a", image=IMG)
I2 = make_instance("i-2222222222222222222b", image=IMG, data_disks=1)
SPEC = make_host_spec(instances=[I1, I2], images=[IMG])
CACHED = {f"{IMG.sha256}.qcow2"}


def files_of(inst):
    return {f"{d.id}.qcow2" for d in inst.disks} | {"seed.iso", "console.log"}


def test_from_nothing():
    acts, blocked = plan_storage(SPEC, StorageObserved(set(), {}, {}))
    assert blocked == {}
    assert acts[0] == FetchImage(IMG, (I1.id, I2.id))
    # data disks live in <state>/disks and are made from HostSpec.disks (agent/disks.py)
    assert [type(a).__name__ for a in acts[1:]] == ["CreateDisk", "WriteSeed", "CreateDisk",
                                                    "WriteSeed"]
    assert acts[3] == CreateDisk(I2.id, I2.disks[0], IMG)


def test_converged_is_empty():
    obs = StorageObserved(CACHED, {I1.id: files_of(I1), I2.id: files_of(I2)},
                          {I1.id: render_seed(I1), I2.id: render_seed(I2)})
    assert plan_storage(SPEC, obs) == ([], {})


def test_seed_rewritten_when_it_differs():
    obs = StorageObserved(CACHED, {I1.id: files_of(I1)}, {I1.id: {"meta-data": b"old"}})
    acts, _ = plan_storage(make_host_spec(instances=[I1], images=[IMG]), obs)
    assert acts == [WriteSeed(I1.id, render_seed(I1))]


def test_image_not_in_spec_blocks_its_instances_only():
    other = make_image("m-other00000000000000", sha256="1" * 64)
    i3 = make_instance("i-3333333333333333333c", image=other)
    spec = make_host_spec(instances=[I1, i3], images=[IMG])
    acts, blocked = plan_storage(spec, StorageObserved(CACHED, {}, {}))
    assert set(blocked) == {i3.id}
    assert {a.instance_id for a in acts if hasattr(a, "instance_id")} == {I1.id}


def test_removal_of_deleted_instances_but_not_busy_ones():
    obs = StorageObserved(CACHED, {I1.id: files_of(I1), "i-gone0000000000000001": {"seed.iso"},
                                   "i-busy0000000000000002": {"seed.iso"}},
                          {I1.id: render_seed(I1)})
    acts, _ = plan_storage(make_host_spec(instances=[I1], images=[IMG]), obs,
                           busy={"i-busy0000000000000002"})
    assert acts == [RemoveInstanceFiles("i-gone0000000000000001")]


# ---- apply against real files (needs qemu-img, no root) ------------------------

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img missing")


@pytest.fixture
def image_file(tmp_path):
    src = tmp_path / "src.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), str(3 * GIB)], check=True)
    data = src.read_bytes()
    return src, make_image(sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                           virtual_size=3 * GIB)


def copying_downloader(src, calls):
    def download(url, part):
        calls.append((url, part.stat().st_size if part.exists() else 0))
        with open(part, "ab") as f:
            f.write(src.read_bytes()[part.stat().st_size if part.exists() else 0:])
    return download


@needs_qemu_img
def test_fetch_verify_and_overlay_never_below_image_size(tmp_path, image_file):
    src, img = image_file
    state = StateDir(tmp_path / "state")
    state.ensure()
    calls = []
    st = StorageApplier(state, copying_downloader(src, calls))
    # a partial download is resumed
    part = state.image_path(img.sha256, "qcow2").with_name(f"{img.sha256}.qcow2.part")
    part.write_bytes(src.read_bytes()[:1000])
    cached = st.fetch_image(img)
    assert calls == [(img.url, 1000)] and cached.read_bytes() == src.read_bytes()
    assert not part.exists()
    inst = make_instance(image=img, data_disks=1)  # system disk asks 2 GiB < image's 3 GiB
    for d in inst.disks:
        st.create_disk(inst.id, d, img if d.image_id else None)
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", "qcow2", str(state.disk_path(inst.id, inst.disks[0].id))],
        check=True, capture_output=True, text=True).stdout)
    assert info["virtual-size"] == 3 * GIB
    assert info["backing-filename"] == str(cached) and info["backing-filename-format"] == "qcow2"
    data = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", "qcow2", str(state.disk_path(inst.id, inst.disks[1].id))],
        check=True, capture_output=True, text=True).stdout)
    assert data["virtual-size"] == GIB and "backing-filename" not in data
    st.remove_instance_files(inst.id)
    assert not state.instance_dir(inst.id).exists() and cached.exists()


@needs_qemu_img
def test_bad_checksum_discarded(tmp_path, image_file):
    src, img = image_file
    state = StateDir(tmp_path / "state")
    state.ensure()
    bad = img.model_copy(update={"sha256": "f" * 64})
    with pytest.raises(TemporaryError, match="sha256 mismatch"):
        StorageApplier(state, copying_downloader(src, [])).fetch_image(bad)
    assert list(state.images_dir.iterdir()) == []


@needs_qemu_img
def test_image_with_backing_file_refused(tmp_path, image_file):
    src, _ = image_file
    evil = tmp_path / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(src),
                    str(evil)], check=True)
    img = make_image(sha256=hashlib.sha256(evil.read_bytes()).hexdigest())
    state = StateDir(tmp_path / "state")
    state.ensure()
    with pytest.raises(PermanentError, match="backing"):
        StorageApplier(state, copying_downloader(evil, [])).fetch_image(img)
    assert list(state.images_dir.iterdir()) == []


def test_state_paths_refuse_path_tricks(tmp_path):
    state = StateDir(tmp_path)
    for bad in ("../etc", "i-../../x", "i-a/b", ""):
        with pytest.raises(ValueError):
            state.instance_dir(bad)
    with pytest.raises(ValueError):
        state.image_path("../" + "0" * 61, "qcow2")
    assert isinstance(SPEC, HostSpec)
