"""`init --tls`: a private CA; the controller serves HTTPS; the CLI and agents verify it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ssl

import httpx
import pytest

from agent.controller_client import ControllerClient
from agent.errors import TemporaryError
from agent.spec import HostCapacity, HostRegistration
from tests.rig.cloud import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
BIN = Path(sys.executable).parent


def _ctx(ca: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca)


@pytest.fixture
def https_controller(tmp_path):
    env = dict(os.environ, MINIECS_STATE_DIR=str(tmp_path / "state"))
    env.pop("MINIECS_DATABASE_URL", None)
    init = subprocess.run([str(BIN / "miniecs-controller"), "init", "--json", "--tls"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    tokens = json.loads(init.stdout)
    port = free_port()
    proc = subprocess.Popen([str(BIN / "miniecs-controller"), "serve", "--listen",
                             f"127.0.0.1:{port}", "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz", verify=_ctx(tokens["ca_file"]), timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("HTTPS controller did not start")
        yield url, tokens
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_https_verified_with_the_ca_and_refused_without(https_controller):
    url, tokens = https_controller
    ca = tokens["ca_file"]
    assert oct(os.stat(Path(ca).with_name("ca-key.pem")).st_mode & 0o777) == "0o600"
    r = httpx.get(f"{url}/api/v1/zones", verify=_ctx(ca),
                  headers={"Authorization": f"Bearer {tokens['admin_token']}"})
    assert r.status_code == 200 and r.json()["items"][0]["name"] == "zone-a"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{url}/healthz")
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https", "http") + "/healthz", timeout=3)


def test_cli_verifies_with_the_ca_file(https_controller, tmp_path):
    url, tokens = https_controller
    env = dict(os.environ, MINIECS_CONFIG=str(tmp_path / "cli.toml"))
    for key in ("MINIECS_ENDPOINT", "MINIECS_TOKEN"):
        env.pop(key, None)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "miniecs"), *args], env=env, capture_output=True,
                              text=True, timeout=60)

    assert cli("configure", "--endpoint", url, "--token", tokens["admin_token"]).returncode == 0
    untrusted = cli("zone", "list", "-o", "json")
    assert untrusted.returncode != 0
    assert cli("configure", "--endpoint", url, "--token", tokens["admin_token"],
               "--ca-file", tokens["ca_file"]).returncode == 0
    trusted = cli("zone", "list", "-o", "json")
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["items"][0]["name"] == "zone-a"


def _registration(name: str, underlay: str) -> HostRegistration:
    return HostRegistration(name=name, zone="zone-a", underlay_address=underlay,
                            virt_type="qemu", capacity=HostCapacity(vcpus=2, memory_mib=2048,
                                                                    disk_gib=10))


def test_agent_enrols_over_https_only_with_the_ca(https_controller):
    url, tokens = https_controller
    reg = _registration("hv-tls", "198.18.0.99")
    untrusting, trusting = ControllerClient(url), ControllerClient(url, ca_file=tokens["ca_file"])
    try:
        with pytest.raises(TemporaryError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.register(tokens["enrolment_token"], reg)
        assert trusting.register(tokens["enrolment_token"], reg).host_id.startswith("h-")
    finally:
        untrusting.close()
        trusting.close()


def test_agent_channel_over_https_only_with_the_ca(https_controller):
    """The agent channel is a WebSocket (wss) verified against the same CA: the spec is
    pushed on it, a report sent on it is applied, an unknown token is Unauthorized."""
    from agent.controller_client import Unauthorized
    from agent.spec import HostReport

    url, tokens = https_controller
    reg = _registration("hv-wss", "198.18.0.98")
    untrusting, trusting = ControllerClient(url), ControllerClient(url, ca_file=tokens["ca_file"])
    try:
        enrolled = trusting.register(tokens["enrolment_token"], reg)
        untrusting.token = trusting.token = enrolled.host_token
        with pytest.raises(TemporaryError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.open_channel(-1)
        channel = trusting.open_channel(-1)
        try:
            spec = channel.receive(timeout=10)
            assert spec is not None and spec.host_id == enrolled.host_id
            assert channel.send_report(HostReport(
                host_id=enrolled.host_id, generation_applied=spec.generation,
                generation_seen=spec.generation))
            deadline = time.monotonic() + 10
            while True:  # the report reached the controller: the host is ready
                host = httpx.get(f"{url}/api/v1/hosts/{enrolled.host_id}",
                                 headers={"Authorization": f"Bearer {tokens['admin_token']}"},
                                 verify=_ctx(tokens["ca_file"])).json()
                if host.get("generation_applied") == spec.generation:
                    break
                assert time.monotonic() < deadline, host
                time.sleep(0.1)
        finally:
            channel.close()
        trusting.token = "not-a-host-token"
        refused = trusting.open_channel(-1)
        with pytest.raises(Unauthorized):
            refused.receive(timeout=10)
    finally:
        untrusting.close()
        trusting.close()
