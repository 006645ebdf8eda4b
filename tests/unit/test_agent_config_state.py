"""Config parsing, versioned state files, operation/shutdown records, virt type choice."""

from __future__ import annotations

import json
import os

import pytest

from agent import virt_type
from agent.config import load_config
from agent.errors import CommandError, PermanentError
from agent.records import OperationLog, ShutdownRecords
from agent.state import StateDir, read_json, write_json_atomic

RIG_CONFIG = """controller_url = "http://127.0.0.1:8780"
enrolment_token = "secret-enrol"
host_name = "h1"
zone = "zone-a"
libvirt_uri = "qemu:///system?socket=/x/libvirt-sock"
virt_type = "qemu"
state_dir = "/var/tmp/x/agent"
underlay_address = "198.18.0.11"
"""


def test_rig_config_parses(tmp_path):
    f = tmp_path / "agent.toml"
    f.write_text(RIG_CONFIG)
    cfg = load_config(f)
    assert cfg.virt_type == "qemu" and cfg.host_name == "h1"
    assert str(cfg.router_netns_dir) == "/var/tmp/x/agent/netns"
    assert cfg.resync_interval_s == 3.0 and cfg.heartbeat_interval_s == 10.0
    assert "secret-enrol" not in repr(cfg)


def test_unknown_keys_are_ignored_with_a_warning(tmp_path, caplog):
    f = tmp_path / "agent.toml"
    f.write_text(RIG_CONFIG + 'netns_prefix = "x-"\n')
    assert load_config(f).host_name == "h1"
    assert "netns_prefix" in caplog.text


@pytest.mark.parametrize("bad", ['virt_type = "xen"', 'host_name = 3', 'resync_interval_s = 0'])
def test_bad_config_is_permanent_error(tmp_path, bad):
    f = tmp_path / "agent.toml"
    f.write_text(RIG_CONFIG.replace('virt_type = "qemu"', bad) if "virt" in bad
                 else RIG_CONFIG + bad + "\n")
    with pytest.raises(PermanentError):
        load_config(f)


def test_versioned_json(tmp_path):
    p = tmp_path / "x.json"
    write_json_atomic(p, {"a": 1}, mode=0o600)
    assert read_json(p) == {"version": 1, "a": 1}
    assert oct(os.stat(p).st_mode & 0o777) == "0o600"
    p.write_text(json.dumps({"version": 99, "a": 1}))
    assert read_json(p) is None
    p.write_text("{broken")
    assert read_json(p) is None


def test_operation_log_survives_restart(tmp_path):
    log = OperationLog(tmp_path / "operations.json")
    log.record("op-1", "i-a", True, "rebooted")
    again = OperationLog(tmp_path / "operations.json")
    assert again.completed_ids() == {"op-1"} and again.outcome("op-1").message == "rebooted"
    again.prune(keep=set(), now=again.outcome("op-1").at + 8 * 24 * 3600)
    assert OperationLog(tmp_path / "operations.json").completed_ids() == set()


def test_shutdown_start_survives_restart(tmp_path):
    recs = ShutdownRecords(tmp_path / "compute.json")
    recs.sent("i-a", now=100.0)
    recs.sent("i-a", now=105.0)
    again = ShutdownRecords(tmp_path / "compute.json")
    assert (again.get("i-a").started_at, again.get("i-a").last_sent_at) == (100.0, 105.0)
    again.forget("i-a")
    assert ShutdownRecords(tmp_path / "compute.json").get("i-a") is None


def test_auto_virt_type_probes_once_per_boot(tmp_path, monkeypatch):
    state = StateDir(tmp_path)
    state.ensure()
    calls = []

    def fake_probe(budget_s=3.0):
        calls.append(1)
        return False, "a KVM guest did not get through its firmware in 3s"
    monkeypatch.setattr(virt_type, "probe_kvm", fake_probe)
    assert virt_type.resolve_virt_type("auto", state) == "qemu"
    assert virt_type.resolve_virt_type("auto", state) == "qemu"
    assert len(calls) == 1
    assert virt_type.resolve_virt_type("kvm", state) == "kvm"
    monkeypatch.setattr(virt_type, "_boot_id", lambda: "another-boot")
    virt_type.resolve_virt_type("auto", state)
    assert len(calls) == 2


def test_kvm_probe_falls_back_on_timeout(monkeypatch):
    monkeypatch.setattr(virt_type.os.path, "exists", lambda p: True)

    def hang(argv, timeout):
        raise CommandError(argv, None, "", timed_out=True)
    monkeypatch.setattr(virt_type.proc, "run", hang)
    ok, why = virt_type.probe_kvm(0.1)
    assert not ok and "did not get through" in why


def test_proc_run_refuses_shell_strings_and_reports_stderr():
    from agent import proc
    with pytest.raises(TypeError):
        proc.run("ls -l")
    with pytest.raises(CommandError, match="exited 1"):
        proc.run(["sh", "-c", "echo boom >&2; exit 1"])
    with pytest.raises(CommandError, match="timed out"):
        proc.run(["sleep", "5"], timeout=0.2)
