"""The Vagrant rig (vagrant/Vagrantfile) passes `vagrant validate` with the libvirt provider."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

VAGRANT_DIR = Path(__file__).resolve().parents[2] / "vagrant"

pytestmark = pytest.mark.skipif(shutil.which("vagrant") is None,
                                reason="vagrant missing (run `make deps`)")


def validate(directory: Path, hypervisors: int = 3) -> subprocess.CompletedProcess:
    env = dict(os.environ, MINIECS_HYPERVISORS=str(hypervisors), VAGRANT_CHECKPOINT_DISABLE="1",
               VAGRANT_DEFAULT_PROVIDER="libvirt")
    return subprocess.run(["vagrant", "validate"], cwd=directory, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def rig(tmp_path) -> Path:
    """A copy of vagrant/ (validating generates the rig's keys next to the Vagrantfile)."""
    shutil.copytree(VAGRANT_DIR, tmp_path / "vagrant",
                    ignore=shutil.ignore_patterns(".vagrant"))
    return tmp_path / "vagrant"


def test_vagrantfile_validates_with_libvirt_provider(rig):
    out = validate(rig)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "validated successfully" in out.stdout
    keys = rig / ".vagrant" / "miniecs-keys"
    assert sorted(p.name for p in keys.iterdir()) == sorted(
        ["operator", "operator.pub"] +
        [f"hv{i}_host_ed25519_key{s}" for i in (1, 2, 3) for s in ("", ".pub")])


def test_validate_catches_a_bad_provider_setting(rig):
    """The check above is not vacuous: vagrant-libvirt's own validation runs."""
    vagrantfile = rig / "Vagrantfile"
    vagrantfile.write_text(vagrantfile.read_text().replace(
        "lv.nested = true", "lv.nested = true\n    lv.no_such_setting = 1"))
    out = validate(rig)
    assert out.returncode != 0 and "no_such_setting" in out.stderr + out.stdout
