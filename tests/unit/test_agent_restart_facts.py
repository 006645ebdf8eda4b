"""What a restarted agent remembers about its files (agent/filefacts.py) and what it still
reads: disk infos and seed digests are trusted only while a file's stamp is unchanged,
across a restart too; a changed seed or disk is always read again, and a seed that
drifted is rewritten. Real qcow2 files (qemu-img) and real seed ISOs."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from agent import disks, filefacts, storage
from agent.compute import RenderedDomain
from agent.domain_xml import DomainPaths, domain_config_hash, mark_of_domain_xml, render_domain_xml
from agent.filefacts import FileFacts
from agent.seed import write_seed_iso
from agent.state import StateDir
from agent.storage import SeedSeen, StorageApplier, WriteSeed, observe_storage, plan_storage
from agent.testing import make_host_spec, make_image, make_instance

IMG = make_image()
I1 = make_instance("i-1111111111111111111a", image=IMG)


@pytest.fixture
def settled(monkeypatch):
    """Files count as settled at once (else only a file unchanged for 1 s is remembered)."""
    monkeypatch.setattr(filefacts, "SETTLE_S", 0.0)


def test_facts_follow_the_file_stamp_and_survive_a_restart(tmp_path, settled):
    f = tmp_path / "x"
    f.write_bytes(b"one")
    facts = FileFacts(tmp_path / "facts.json", "k-1")
    st = os.stat(f)
    assert facts.get(f, st) is None
    facts.put(f, st, {"n": 1})
    assert facts.get(f, os.stat(f)) == {"n": 1}
    facts.save()
    again = FileFacts(tmp_path / "facts.json", "k-1")  # a restarted agent
    assert again.get(f, os.stat(f)) == {"n": 1}
    assert FileFacts(tmp_path / "facts.json", "k-2").get(f, os.stat(f)) is None  # other format
    f.write_bytes(b"two")  # any write moves the stamp
    assert again.get(f, os.stat(f)) is None
    y = tmp_path / "y"
    y.write_bytes(b"y")
    again.put(y, os.stat(y), 2)
    f.unlink()
    again.save()  # facts of files that no longer exist are dropped
    kept = FileFacts(tmp_path / "facts.json", "k-1")
    assert kept.get(y, os.stat(y)) == 2 and str(f) not in (tmp_path / "facts.json").read_text()


def test_a_file_changed_just_now_is_not_remembered(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"one")
    facts = FileFacts(None, "k-1", settle_s=60)
    facts.put(f, os.stat(f), 1)
    assert facts.get(f, os.stat(f)) is None


def _state(tmp_path) -> StateDir:
    st = StateDir(tmp_path / "state")
    st.ensure()
    return st


def test_seeds_known_from_a_stat_after_a_restart_and_drift_still_seen(tmp_path, settled,
                                                                      monkeypatch):
    state = _state(tmp_path)
    spec = make_host_spec(instances=[I1], images=[IMG])
    applier = StorageApplier(state, lambda url, part: None)
    applier.apply(WriteSeed(I1.id, storage.rendered_seed(I1)[2]))
    obs = observe_storage(state, applier.seed_facts)
    assert isinstance(obs.seeds[I1.id], SeedSeen)
    acts, _ = plan_storage(spec, obs)
    assert not [a for a in acts if isinstance(a, WriteSeed)]
    applier.remember_seeds(spec, obs)

    # a restarted agent: nothing parsed, nothing rendered for a seed that is as it was
    storage._SEED_RENDERS.clear()
    restarted = StorageApplier(state, lambda url, part: None)
    calls = []
    monkeypatch.setattr(storage, "read_seed_iso", lambda p: calls.append(("read", p)))
    monkeypatch.setattr(storage, "render_seed", lambda i: calls.append(("render", i.id)))
    obs = observe_storage(state, restarted.seed_facts)
    acts, _ = plan_storage(spec, obs)
    assert calls == [] and not [a for a in acts if isinstance(a, WriteSeed)]
    monkeypatch.undo()

    # a changed spec is rendered and compared; a seed changed on disk is read again
    changed = make_instance(I1.id, image=IMG, hostname="web-2")
    acts, _ = plan_storage(make_host_spec(instances=[changed], images=[IMG]), obs)
    assert [a for a in acts if isinstance(a, WriteSeed)] == [
        WriteSeed(I1.id, storage.rendered_seed(changed)[2])]
    write_seed_iso(state.seed_path(I1.id), {"meta-data": b"instance-id: someone-else\n"})
    obs = observe_storage(state, StorageApplier(state, lambda url, part: None).seed_facts)
    acts, _ = plan_storage(spec, obs)
    assert [a for a in acts if isinstance(a, WriteSeed)] == [
        WriteSeed(I1.id, storage.rendered_seed(I1)[2])]


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img missing")
def test_disk_infos_survive_a_restart_until_the_disk_changes(tmp_path, settled, monkeypatch):
    state = _state(tmp_path)
    path = tmp_path / "state" / "disks" / "d-aaaaaaaaaaaaaaaaaaaa.qcow2"
    path.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    store = state.root / "disk-info.json"
    disks.use_disk_info_store(store)
    assert disks.cached_disk_info(path, state.images_dir)["virtual_size"] == 16 << 20
    disks.save_disk_info()

    disks.use_disk_info_store(store)  # a restarted agent
    real = disks.disk_info
    calls = []
    monkeypatch.setattr(disks, "disk_info", lambda p, i: calls.append(p) or real(p, i))
    assert disks.cached_disk_info(path, state.images_dir)["virtual_size"] == 16 << 20
    assert calls == []
    subprocess.run(["qemu-img", "resize", "-q", "-f", "qcow2", str(path), "32M"], check=True)
    assert disks.cached_disk_info(path, state.images_dir)["virtual_size"] == 32 << 20
    assert calls == [path]
    disks.use_disk_info_store(None)


def test_config_hash_without_the_xml_is_the_rendered_one(tmp_path):
    paths = DomainPaths({d.id: tmp_path / f"{d.id}.qcow2" for d in I1.disks},
                        tmp_path / "seed.iso", tmp_path / "console.log")
    xml = render_domain_xml(I1, paths, "qemu", generation=7)
    h = domain_config_hash(I1, paths, "qemu")
    mark = mark_of_domain_xml(xml)
    assert mark is not None and mark.config_hash == h and mark.generation == 7
    assert render_domain_xml(I1, paths, "qemu", generation=7, config_hash=h) == xml
    made = []
    lazy = RenderedDomain(lambda: made.append(1) or xml, h)
    assert lazy.config_hash == h and made == []
    assert lazy.xml == xml and lazy.xml == xml and made == [1]
