"""Pieces of `miniecs host add` that need no remote host: targets, fingerprints, the host
check script, and the agent supervisor's restart and give-up."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import paramiko
import pytest

from agent import supervise
from controller.cli.errors import CliError
from controller.cli.host_ssh import fingerprint, parse_target


def test_parse_target_validates_user_and_address():
    assert parse_target("root@192.0.2.5", 22).address == "192.0.2.5"
    assert parse_target("hv-1.example.net", 2222).user == "root"
    assert parse_target("admin@[2001:db8::5]", 22).address == "2001:db8::5"
    for bad in ("root@host;rm -rf /", "ro ot@host", "root@$(reboot)", "root@", "`id`@h"):
        with pytest.raises(CliError):
            parse_target(bad, 22)


def test_fingerprint_matches_ssh_keygen(tmp_path):
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    expected = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{key}.pub"],
                              capture_output=True, text=True, check=True).stdout.split()[1]
    assert fingerprint(paramiko.Ed25519Key.from_private_key_file(str(key))) == expected


def test_hostcheck_reports_missing_libvirt_with_the_fix(tmp_path):
    """Run the script as `host add` does (a file, the system python), with no libvirt on PATH."""
    from agent import hostcheck

    out = subprocess.run(["/usr/bin/python3", hostcheck.__file__],
                         env={"PATH": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    facts = json.loads(out.stdout)
    assert facts["libvirt"] == "missing"
    assert any("libvirt is not installed" in p and "apt-get install libvirt-daemon-system" in p
               for p in facts["problems"])
    assert set(facts["modules"]) == {"bridge", "vxlan", "br_netfilter"}


def test_supervisor_restarts_a_failing_agent_then_gives_up(tmp_path, monkeypatch):
    monkeypatch.setattr(supervise, "MAX_FAILURES", 3)
    monkeypatch.setattr(supervise, "MAX_BACKOFF_S", 0.5)
    log = tmp_path / "agent.log"
    pidfile = tmp_path / "run" / "supervisor.pid"
    t0 = time.monotonic()
    code = supervise.supervise(tmp_path / "missing.toml", pidfile, log)
    assert code == 1
    text = log.read_text()
    assert text.count("starting the agent") == 3
    assert "giving up" in text and "missing.toml" in text  # the agent's own error is logged
    assert not pidfile.exists()
    assert time.monotonic() - t0 < 120


def test_supervisor_stops_the_agent_on_sigterm(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text('controller_url = "http://127.0.0.1:9"\nenrolment_token = "x"\n'
                   'host_name = "hv"\nzone = "zone-a"\nunderlay_address = "192.0.2.1"\n'
                   f'state_dir = "{tmp_path / "state"}"\nlibvirt_uri = "test:///default"\n'
                   'virt_type = "qemu"\n')
    pidfile = tmp_path / "supervisor.pid"
    proc = subprocess.Popen([sys.executable, "-m", "agent.supervise", "--config", str(cfg),
                             "--pidfile", str(pidfile), "--log", str(tmp_path / "agent.log")])
    try:
        deadline = time.monotonic() + 30
        while "starting the agent" not in (tmp_path / "agent.log").read_text() \
                if (tmp_path / "agent.log").exists() else True:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        assert int(pidfile.read_text()) == proc.pid
        time.sleep(1)
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        assert "agent stopped" in (tmp_path / "agent.log").read_text()
        assert not pidfile.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
