"""The systemd units of both daemons: rendered by `install-unit`, clean under `systemd-analyze verify`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze missing (run `make deps`)")


def verify(unit: Path) -> str:
    """`systemd-analyze verify` output about ``unit``; it only warns on bad keys, so any
    line is a finding."""
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                         capture_output=True, text=True, timeout=60, cwd=unit.parent)
    text = (out.stdout + out.stderr).strip()
    assert out.returncode == 0 or text, "verify failed without saying why"
    return text if out.returncode == 0 else f"exit {out.returncode}: {text}"


def install(tmp_path: Path, *argv: str) -> str:
    out = subprocess.run([*argv, "--dest", str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_controller_unit_verifies(tmp_path):
    install(tmp_path, str(BIN / "miniecs-controller"), "install-unit", "--user", "miniecs")
    unit = tmp_path / "miniecs-controller.service"
    text = unit.read_text()
    assert f"ExecStart={BIN}/miniecs-controller serve" in text
    assert "User=miniecs" in text and "StateDirectory=miniecs-controller" in text
    assert "Restart=on-failure" in text and "CapabilityBoundingSet=\n" in text
    assert verify(unit) == ""


def test_agent_unit_verifies(tmp_path):
    install(tmp_path, str(BIN / "miniecs-agent"), "install-unit", "--config",
            "/etc/miniecs/agent.toml")
    unit = tmp_path / "miniecs-agent.service"
    text = unit.read_text()
    assert f"ExecStart={BIN}/miniecs-agent --config /etc/miniecs/agent.toml" in text
    assert "StateDirectory=miniecs-agent" in text and "Restart=on-failure" in text
    assert "KillMode=process" in text  # DHCP servers outlive an agent restart
    assert verify(unit) == ""


def test_verify_check_catches_a_bad_unit(tmp_path):
    """The strict check above is not vacuous: a typo in a unit shows up."""
    install(tmp_path, str(BIN / "miniecs-agent"), "install-unit")
    unit = tmp_path / "miniecs-agent.service"
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=on-falure"))
    assert "on-falure" in verify(unit)
