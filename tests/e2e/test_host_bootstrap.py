"""`miniecs host add` against a real OpenSSH server in a rig host.

The rig host ``h1`` starts with libvirtd but no agent. This module runs a real
``sshd`` in that host's network and mount namespaces (its own config, host key
and authorized_keys in a temp dir, listening on the host's underlay address),
then runs the real ``miniecs host add`` from the rig's underlay namespace (an
address on the underlay bridge; the controller is forwarded into it like into
every rig host). The agent is installed into a prefix of the rig host, runs
there under its supervisor (the rig has no systemd), talks to the host's own
libvirtd, enrols with a one-time token, turns ready, and runs a tiny guest
that answers SSH. Wrong key, unknown or changed host key and a host without
libvirt each end in their clear error.

    flock /tmp/miniecs-guests.lock .venv/bin/python -m pytest tests/e2e/test_host_bootstrap.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.cli.host_add import build_wheelhouse, default_wheelhouse
from tests.e2e.conftest import TINY_IMAGE
from tests.rig.cloud import BIN
from tests.rig.rig import PROJECT, UNDERLAY_NET, run, stop_pid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

RIG_HOSTS = 0  # h1 is made here, without an agent
CLI_ADDR = f"{UNDERLAY_NET}.254"  # the operator's address on the underlay
NO_LIBVIRT_PORT = 2222
SSHD_CONFIG = """\
ListenAddress {addr}
Port {port}
HostKey {dir}/host_key
PidFile {dir}/sshd-{port}.pid
AuthorizedKeysFile {dir}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
{extra}
"""


def keygen(path: Path) -> str:
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)])
    return path.with_suffix(".pub").read_text() if path.suffix else \
        Path(f"{path}.pub").read_text()


def ssh_fingerprint(pub: Path) -> str:
    return run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)]).stdout.split()[1]


class Bootstrap:
    """What the module's tests share: the sshd, keys, the CLI's namespace."""

    def __init__(self, cloud, tmp: Path) -> None:
        self.cloud = cloud
        self.tmp = tmp
        self.pids: list[int] = []
        self.host = cloud.rig.add_host("h1")
        cloud.rig.start_forwarder()
        self.underlay_ns = cloud.rig.underlay_ns
        self.prefix = self.host.path / "prefix"

    # -- set-up ---------------------------------------------------------------------------
    def start(self) -> None:
        run(["ip", "-n", self.underlay_ns, "addr", "add", f"{CLI_ADDR}/24", "dev", "ulbr"])
        log = open(self.tmp / "forward-ul.log", "w")
        fwd = subprocess.Popen([sys.executable, "-m", "tests.rig.forward", "--port",
                                str(self.cloud.port), "--netns", self.underlay_ns],
                               cwd=PROJECT, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
        self.pids.append(fwd.pid)
        self.sshd_dir = self.tmp / "sshd"
        self.sshd_dir.mkdir()
        keygen(self.sshd_dir / "host_key")
        self.host_fp = ssh_fingerprint(self.sshd_dir / "host_key.pub")
        self.key = self.tmp / "operator"
        (self.sshd_dir / "authorized_keys").write_text(keygen(self.key))
        self.stranger = self.tmp / "stranger"
        keygen(self.stranger)
        # a directory standing in for a host without libvirt: the tools `host add` needs
        # before its checks, and nothing else (no virsh, no libvirtd, no qemu)
        self.bare_path = self.tmp / "bare-bin"
        self.bare_path.mkdir()
        for tool in ("/usr/bin/mktemp", "/usr/bin/id", "/usr/bin/rm",
                     "/usr/bin/sh"):
            os.symlink(tool, self.bare_path / Path(tool).name)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.start_sshd(22, "")
        self.start_sshd(NO_LIBVIRT_PORT, f"SetEnv PATH={self.bare_path}")

    def start_sshd(self, port: int, extra: str) -> None:
        config = self.sshd_dir / f"sshd_config-{port}"
        config.write_text(SSHD_CONFIG.format(addr=self.host.underlay_ip, port=port,
                                             dir=self.sshd_dir, extra=extra))
        test = subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(config)], capture_output=True,
                              text=True)
        assert test.returncode == 0, test.stderr
        proc = subprocess.Popen(
            self.host.mount_argv(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)]),
            stdin=subprocess.DEVNULL, stdout=open(self.tmp / f"sshd-{port}.log", "w"),
            stderr=subprocess.STDOUT, start_new_session=True)
        self.pids.append(proc.pid)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            probe = subprocess.run(["ip", "netns", "exec", self.underlay_ns, sys.executable,
                                    "-c", f"import socket; socket.create_connection("
                                    f"('{self.host.underlay_ip}', {port}), 1)"],
                                   capture_output=True)
            if probe.returncode == 0:
                return
            assert proc.poll() is None, (self.tmp / f"sshd-{port}.log").read_text()
            time.sleep(0.2)
        raise TimeoutError(f"sshd on port {port} did not listen")

    # -- the CLI --------------------------------------------------------------------------
    def host_add(self, *args: str, key: Path | None = None, port: int = 22,
                 known_hosts: Path | None = None, accept: bool = True,
                 timeout: float = 600) -> subprocess.CompletedProcess:
        argv = [str(BIN / "miniecs"), "host", "add", f"root@{self.host.underlay_ip}",
                "--identity", str(key or self.key), "--port", str(port),
                "--known-hosts", str(known_hosts or self.tmp / "known_hosts"),
                "--prefix", str(self.prefix), "--wheelhouse", str(self.wheelhouse),
                "--name", "h1", "--virt-type", "qemu", "--timeout", "240", "-o", "json",
                *(["--accept-fingerprint", self.host_fp] if accept else []), *args]
        env = dict(os.environ, MINIECS_ENDPOINT=self.cloud.url,
                   MINIECS_TOKEN=self.cloud.admin_token,
                   MINIECS_CONFIG=str(self.tmp / "cli.toml"))
        return subprocess.run(["ip", "netns", "exec", self.underlay_ns, *argv], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)

    # -- tear-down ------------------------------------------------------------------------
    def stop(self) -> None:
        pidfile = self.prefix / "run" / "supervisor.pid"
        if pidfile.exists():
            stop_pid(int(pidfile.read_text()), timeout=20)
        # the agent's DHCP servers outlive it, like guests do
        for dnsmasq in (self.prefix / "state" / "dhcp").glob("*/dnsmasq.pid"):
            stop_pid(int(dnsmasq.read_text().strip() or 0), timeout=5)
        for pid in reversed(self.pids):
            stop_pid(pid)


@pytest.fixture(scope="module")
def boot(cloud, tmp_path_factory):
    b = Bootstrap(cloud, tmp_path_factory.mktemp("bootstrap"))
    try:
        b.start()
        # built here, in the root namespace, where the package index is reachable
        b.wheelhouse = default_wheelhouse()
        build_wheelhouse(b.wheelhouse)
        yield b
    finally:
        b.stop()


def test_unknown_host_key_is_refused_with_its_fingerprint(boot):
    proc = boot.host_add(known_hosts=boot.tmp / "empty_known_hosts", accept=False)
    assert proc.returncode != 0
    assert "unknown host key" in proc.stderr and boot.host_fp in proc.stderr, proc.stderr
    assert "--accept-fingerprint" in proc.stderr
    assert not (boot.prefix / "venv").exists()  # nothing was installed


def test_wrong_fingerprint_is_refused(boot):
    proc = boot.host_add("--accept-fingerprint", "SHA256:" + "A" * 43,
                         known_hosts=boot.tmp / "empty_known_hosts", accept=False)
    assert proc.returncode != 0 and "refusing to connect" in proc.stderr, proc.stderr


def test_wrong_key_is_refused(boot):
    proc = boot.host_add(key=boot.stranger)
    assert proc.returncode != 0
    assert "authentication refused" in proc.stderr and str(boot.stranger) in proc.stderr, \
        proc.stderr


def test_changed_host_key_is_refused(boot):
    other = boot.tmp / "other_host_key"
    keygen(other)
    known = boot.tmp / "stale_known_hosts"
    known.write_text(f"{boot.host.underlay_ip} {Path(f'{other}.pub').read_text()}")
    proc = boot.host_add(known_hosts=known, accept=False)
    assert proc.returncode != 0
    assert "has CHANGED" in proc.stderr and boot.host_fp in proc.stderr, proc.stderr


def test_host_without_libvirt_is_refused(boot):
    proc = boot.host_add(port=NO_LIBVIRT_PORT)
    assert proc.returncode != 0
    assert "is not ready for miniecs" in proc.stderr, proc.stderr
    assert "libvirt is not installed (no virsh and libvirtd on PATH)" in proc.stderr
    assert "apt-get install libvirt-daemon-system" in proc.stderr
    assert not (boot.prefix / "venv").exists()


def test_libvirtd_not_answering_is_refused(boot):
    proc = boot.host_add("--libvirt-uri", "qemu:///system?socket=/nonexistent/libvirt-sock")
    assert proc.returncode != 0
    assert "libvirtd does not answer at qemu:///system?socket=/nonexistent" in proc.stderr, \
        proc.stderr


def test_agent_that_fails_to_start_is_reported_with_its_log(boot):
    """The agent installs but cannot enrol (no such zone): it exits, its supervisor gives
    up, and `host add` says so with the agent's last log lines."""
    proc = boot.host_add("--zone", "nosuchzone")
    assert proc.returncode != 0
    assert "the agent on" in proc.stderr and "failed to start" in proc.stderr, proc.stderr
    assert "InvalidZoneId.NotFound" in proc.stderr  # from the agent's log tail
    assert boot.cloud.get("/hosts")["items"] == []


def test_host_add_installs_enrols_and_runs_a_guest(boot):
    cloud = boot.cloud
    assert cloud.get("/hosts")["items"] == []
    proc = boot.host_add()
    assert proc.returncode == 0, proc.stderr + proc.stdout
    host = json.loads(proc.stdout)
    assert host["name"] == "h1" and host["state"] == "ready"
    assert host["virt_type"] == "qemu"
    assert host["underlay_address"] == boot.host.underlay_ip
    assert "systemd is not PID 1 on this host" in proc.stderr
    host_key = (boot.sshd_dir / "host_key.pub").read_text().split()[1]
    assert host_key in (boot.tmp / "known_hosts").read_text()  # the accepted key, recorded
    # installed where asked, from the wheels, and running from there
    agent_py = boot.prefix / "venv" / "bin" / "python"
    assert agent_py.exists()
    pid = int((boot.prefix / "run" / "supervisor.pid").read_text())
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == str(agent_py).encode()
    assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink(
        f"/proc/{boot.host.holder_pid}/ns/net")
    config = (boot.prefix / "etc" / "agent.toml").read_text()
    token = next(line.split('"')[1] for line in config.splitlines()
                 if line.startswith("enrolment_token"))
    assert token != cloud.enrolment_token  # a one-time token, not the region's
    reuse = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                            "-H", f"Authorization: Bearer {token}", "-H",
                            "Content-Type: application/json", "-d", "{}",
                            f"{cloud.url}/api/v1/agent/register"], capture_output=True, text=True)
    assert reuse.stdout == "401", "a one-time enrolment token worked twice"

    # an instance on the bootstrapped host runs and answers SSH
    image = json.loads(cloud.cli("image", "import", "tiny", "--file", str(TINY_IMAGE),
                                 "--wait", "-o", "json").stdout)
    keypair = cloud.post("/key-pairs", {"name": "boot-key"})
    key_file = boot.tmp / "guest-key.pem"
    key_file.write_text(keypair["private_key"])
    key_file.chmod(0o600)
    vpc = cloud.post("/vpcs", {"name": "boot-vpc", "cidr_block": "10.30.0.0/16"})
    vsw = cloud.post("/vswitches", {"name": "boot-vsw", "vpc_id": vpc["id"],
                                    "zone_id": "zone-a", "cidr_block": "10.30.1.0/24"})
    sg = cloud.post("/security-groups", {"name": "boot-sg", "vpc_id": vpc["id"]})
    cloud.post(f"/security-groups/{sg['id']}/rules",
               {"direction": "ingress", "protocol": "tcp", "port_range": "22/22",
                "peer_cidr": "10.30.1.1/32"})
    inst = cloud.post("/instances", {
        "name": "boot-1", "instance_type": "ecs.t1.nano", "image_id": image["id"],
        "vswitch_id": vsw["id"], "security_group_ids": [sg["id"]],
        "key_pair_id": keypair["id"], "hostname": "booted-one"})
    inst = cloud.wait_status(f"/instances/{inst['id']}", {"Running"}, timeout=180)
    assert inst["host_id"] == host["id"]
    assert boot.host.virsh("domstate", inst["id"]).stdout.strip() == "running"
    # the agent's router namespaces are mounted in the rig host's mount namespace:
    # SSH from the VPC's router namespace, entered from there
    netns_dir = boot.prefix / "state" / "netns"
    router = next(p for p in sorted(os.listdir(netns_dir))
                  if inst["vpc_id"].split("-", 1)[1][:8] in p)
    ssh = subprocess.run(
        boot.host.mount_argv(["nsenter", f"--net={netns_dir / router}", "--", sys.executable,
                              "-m", "tests.rig.ssh", "--host", inst["private_ip_address"],
                              "--key", str(key_file), "--cmd", "hostname", "--timeout", "150"]),
        # entering the mount namespace leaves the working directory: name the project
        cwd=PROJECT, env=dict(os.environ, PYTHONPATH=str(PROJECT)), capture_output=True,
        text=True, timeout=240)
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout.strip() == "booted-one"
    cloud.delete(f"/instances/{inst['id']}", force="true")
    cloud.wait_gone(f"/instances/{inst['id']}")
    assert boot.host.virsh("domstate", inst["id"], check=False).returncode != 0


def test_host_add_again_reinstalls_and_keeps_the_host(boot):
    """Re-running on an enrolled host upgrades in place: same host id, agent restarted."""
    before = boot.cloud.get("/hosts")["items"]
    old_pid = int((boot.prefix / "run" / "supervisor.pid").read_text())
    proc = boot.host_add()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["id"] == before[0]["id"]
    assert int((boot.prefix / "run" / "supervisor.pid").read_text()) != old_pid
    assert len(boot.cloud.get("/hosts")["items"]) == 1
