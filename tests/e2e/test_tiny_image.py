"""End-to-end checks of the tiny guest image (images/build_tiny.py).

The boot test really boots the image under QEMU (TCG) and talks to it over
SSH.  All of its traffic stays inside a network namespace made here: QEMU's
tap device and the peer address live in that namespace, QEMU and the SSH
client run in it.  Nothing is routed, NATed or bridged towards the machine's
uplink.

    sudo .venv/bin/python -m pytest -m e2e tests/e2e/test_tiny_image.py -s

MINIECS_TINY_IMAGE=path uses an existing image; otherwise
images/build/tiny.qcow2 is built when it is missing.  MINIECS_TINY_E2E_LOGS=dir
keeps the guests' console logs there.

The parser tests run the guest's awk programs with the host's busybox.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BUILDER = REPO / "images" / "build_tiny.py"
DEFAULT_IMAGE = REPO / "images" / "build" / "tiny.qcow2"
GUEST_LIB = REPO / "images" / "tiny" / "rootfs" / "usr" / "lib" / "miniecs-tiny"

GUEST_MAC = "52:54:00:12:34:56"
GUEST_IP = "10.0.1.23"
PEER_IP = "10.0.1.1"
GUEST_MTU = 1400
HOSTNAME = "tiny-e2e"
INSTANCE_ID = "i-0e2e0e2e0e2e0e2e0e2e"
READY = "miniecs-tiny: ready"
RO_LINE = "miniecs-tiny: shutting down: root filesystem remounted read-only"
BOOT_TIMEOUT = float(os.environ.get("MINIECS_TINY_BOOT_TIMEOUT", "180"))


# ---- helpers ---------------------------------------------------------------------


def need_root_and_qemu() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespace, tap device, loop devices for the build")
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("qemu-system-x86_64 is not installed")


def sh(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


def new_disk(image: Path, workdir: Path) -> Path:
    disk = workdir / "disk.qcow2"
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.resolve()), str(disk))
    return disk


def make_key(workdir: Path) -> tuple[Path, str]:
    """A fresh ed25519 key pair: (private key file, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    path = workdir / "id_ed25519"
    path.write_bytes(priv)
    path.chmod(0o600)
    return path, f"{pub} e2e-key"


def seed_files(pubkey: str) -> dict[str, str]:
    meta = f"instance-id: {INSTANCE_ID}\nlocal-hostname: {HOSTNAME}\n"
    cloud_config = textwrap.dedent(
        f"""\
        #cloud-config
        hostname: {HOSTNAME}
        ssh_authorized_keys:
          - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAhjrZ4Nq3BnXlGGu3tq0ZE7bZ2yZk7sD0+1DmaNDAXx other-user-key
          - {pubkey}
        runcmd:
          - echo hello > /tmp/hello
          - echo run >> /root/runcmd-count
          - [ sh, -c, "echo argv form > /root/runcmd-argv" ]
        """
    )
    mime = MIMEMultipart()
    mime.attach(MIMEText(cloud_config, "cloud-config"))
    # a bash shebang: the image has no bash, the script runs with sh instead
    mime.attach(MIMEText("#!/bin/bash\necho script >> /root/script-count\n", "x-shellscript"))
    network = textwrap.dedent(
        f"""\
        version: 2
        ethernets:
          eth0:
            match:
              macaddress: "{GUEST_MAC}"
            set-name: eth0
            mtu: {GUEST_MTU}
            addresses:
              - {GUEST_IP}/24
            routes:
              - to: 0.0.0.0/0
                via: {PEER_IP}
            nameservers:
              addresses:
                - {PEER_IP}
          eth1:
            match:
              macaddress: '52:54:00:ff:ff:ff'
            addresses: [10.9.9.9/24]
        """
    )
    return {"meta-data": meta, "user-data": mime.as_string(), "network-config": network}


def make_seed_iso(path: Path, files: dict[str, str], label: str = "cidata") -> None:
    import io

    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=label)
    for name, text in files.items():
        data = text.encode()
        short = re.sub(r"[^A-Z0-9]", "", name.upper())[:8]
        iso.add_fp(io.BytesIO(data), len(data), f"/{short}.;1", rr_name=name, joliet_path=f"/{name}")
    iso.write(str(path))
    iso.close()


SSH_HELPER = textwrap.dedent(
    """\
    import json, sys, time
    import paramiko

    host, keyfile, deadline, cmds = sys.argv[1], sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4])
    key = paramiko.Ed25519Key.from_private_key_file(keyfile)
    last = None
    while True:
        c = paramiko.SSHClient()
        c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            c.connect(host, username="root", pkey=key, timeout=5, banner_timeout=10,
                      auth_timeout=10, look_for_keys=False, allow_agent=False)
            break
        except Exception as e:
            last = e
            c.close()
            if time.time() > deadline:
                print(json.dumps({"error": repr(last)}))
                sys.exit(0)
            time.sleep(0.3)
    connected = time.time()
    hostkey = c.get_transport().get_remote_server_key()
    out = []
    for cmd in cmds:
        stdin, stdout, stderr = c.exec_command(cmd, timeout=60)
        o = stdout.read().decode(errors="replace")
        e = stderr.read().decode(errors="replace")
        out.append({"cmd": cmd, "rc": stdout.channel.recv_exit_status(), "out": o, "err": e})
    c.close()
    print(json.dumps({"connected": connected, "hostkey": f"{hostkey.get_name()} {hostkey.get_base64()}",
                      "results": out}))
    """
)


class Guest:
    """One QEMU process in the test's network namespace."""

    def __init__(self, workdir: Path, netns: str, disk: Path, seed: Path, keyfile: Path, tag: str):
        self.workdir, self.netns, self.disk, self.seed, self.keyfile = workdir, netns, disk, seed, keyfile
        self.serial = workdir / f"serial-{tag}.log"
        self.qmp = workdir / f"qmp-{tag}.sock"
        self.pidfile = workdir / f"qemu-{tag}.pid"
        self.stdout = workdir / f"qemu-{tag}.out"
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> None:
        cmd = [
            "ip", "netns", "exec", self.netns,
            "qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", "256", "-smp", "1",
            "-nographic", "-monitor", "none",
            "-serial", f"file:{self.serial}",
            "-qmp", f"unix:{self.qmp},server=on,wait=off",
            "-pidfile", str(self.pidfile),
            "-drive", f"file={self.disk},if=virtio,format=qcow2",
            "-drive", f"file={self.seed},if=ide,media=cdrom,format=raw,readonly=on",
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={GUEST_MAC}",
        ]
        self.started = time.time()
        with open(self.stdout, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def console(self) -> str:
        """The serial console so far (without the time stamps of miniecs.debug)."""
        try:
            text = self.serial.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return re.sub(r"miniecs-tiny: \[[0-9.]+\] ", "miniecs-tiny: ", text)

    def wait_console(self, text: str, count: int = 1, timeout: float = BOOT_TIMEOUT) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.console().count(text) >= count:
                return time.time()
            if self.proc and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} (x{count}) not on the console\n{self.diagnostics()}")

    def diagnostics(self) -> str:
        out = self.stdout.read_text(errors="replace") if self.stdout.exists() else ""
        return f"--- console ---\n{self.console()[-6000:]}\n--- qemu ---\n{out[-2000:]}"

    def ssh(self, *cmds: str, timeout: float = BOOT_TIMEOUT) -> list[dict]:
        helper = self.workdir / "ssh_helper.py"
        helper.write_text(SSH_HELPER)
        deadline = time.time() + timeout
        p = sh(
            "ip", "netns", "exec", self.netns, sys.executable, str(helper),
            GUEST_IP, str(self.keyfile), str(deadline), json.dumps(list(cmds)),
            timeout=timeout + 120,
        )
        lines = p.stdout.strip().splitlines()
        if not lines:
            raise AssertionError(f"ssh helper failed: {p.stderr[-2000:]}\n{self.diagnostics()}")
        res = json.loads(lines[-1])
        if "error" in res:
            raise AssertionError(f"ssh to {GUEST_IP} failed: {res['error']}\n{self.diagnostics()}")
        self.connected = res["connected"]
        self.hostkey = res["hostkey"]
        return res["results"]

    def console_host_keys(self) -> list[str]:
        """The host public keys printed on the console (last boot)."""
        text = self.console()
        block = text.rsplit("-----BEGIN SSH HOST KEY KEYS-----", 1)[-1].split("-----END SSH HOST KEY KEYS-----")[0]
        return [line.strip() for line in block.splitlines() if line.strip()]

    def powerdown(self) -> None:
        """Press the ACPI power button (QMP system_powerdown)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(str(self.qmp))
        f = s.makefile("rwb")
        json.loads(f.readline())  # greeting
        for cmd in ("qmp_capabilities", "system_powerdown"):
            f.write(json.dumps({"execute": cmd}).encode() + b"\n")
            f.flush()
            while True:
                msg = json.loads(f.readline())
                if "return" in msg or "error" in msg:
                    assert "error" not in msg, msg
                    break
        s.close()

    def wait_exit(self, timeout: float = 90) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"qemu did not exit within {timeout}s\n{self.diagnostics()}")

    def kill(self) -> None:
        pids = []
        if self.proc is not None:
            pids.append(self.proc.pid)
        try:
            pids.append(int(self.pidfile.read_text().strip()))
        except (OSError, ValueError):
            pass
        for pid in dict.fromkeys(pids):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                time.sleep(0.5)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def results_by_cmd(results: list[dict]) -> dict[str, dict]:
    return {r["cmd"]: r for r in results}


# ---- fixtures --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_image() -> Path:
    need_root_and_qemu()
    env = os.environ.get("MINIECS_TINY_IMAGE")
    if env:
        path = Path(env)
        assert path.exists(), f"MINIECS_TINY_IMAGE={env} does not exist"
        return path
    if not DEFAULT_IMAGE.exists():
        p = subprocess.run(
            [sys.executable, str(BUILDER), "--output", str(DEFAULT_IMAGE)],
            capture_output=True, text=True, timeout=600,
        )
        assert p.returncode == 0, f"image build failed:\n{p.stdout}\n{p.stderr}"
    return DEFAULT_IMAGE


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="miniecs-tiny-e2e-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def netns():
    need_root_and_qemu()
    name = f"mecs-tiny-{secrets.token_hex(4)}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "tuntap", "add", "dev", "tap0", "mode", "tap")
        sh("ip", "-n", name, "addr", "add", f"{PEER_IP}/24", "dev", "tap0")
        sh("ip", "-n", name, "link", "set", "tap0", "up")
        yield name
    finally:
        sh("ip", "-n", name, "link", "del", "tap0", check=False)
        sh("ip", "netns", "del", name, check=False)


# ---- the boot test -------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_boot_ssh_seed_persistence_and_clean_shutdown(tiny_image, workdir, netns):
    """Boot with a seed (MIME user data, static network), SSH in, write a
    file, ACPI power button; boot again from the same disk: the file, the
    host keys and the once-per-instance scripts; reboot and poweroff from
    inside the guest, each leaving the root filesystem clean."""
    disk = new_disk(tiny_image, workdir)
    keyfile, pubkey = make_key(workdir)
    seed = workdir / "seed.iso"
    make_seed_iso(seed, seed_files(pubkey))
    token = secrets.token_hex(8)
    wait_user = "i=0; while [ ! -e /run/miniecs-tiny/user-scripts.done ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; cat /run/miniecs-tiny/user-scripts.status"

    guests: list[Guest] = []
    try:
        # -- first boot: seed applied, SSH with the seed's key, then the ACPI button
        g1 = Guest(workdir, netns, disk, seed, keyfile, "1")
        guests.append(g1)
        g1.start()
        ready = g1.wait_console(READY)
        res = results_by_cmd(
            g1.ssh(
                "hostname",
                "cat /sys/class/net/eth0/mtu",
                "ip -4 addr show dev eth0",
                "ip route show default",
                "cat /etc/resolv.conf",
                wait_user,
                "cat /tmp/hello /root/runcmd-count /root/script-count /root/runcmd-argv",
                f"echo {token} > /root/persist && sync && cat /root/persist",
            )
        )
        ssh_at = time.time()
        print(
            f"\nboot 1: console ready {ready - g1.started:.1f}s, ssh connected "
            f"{g1.connected - g1.started:.1f}s, commands done {ssh_at - g1.started:.1f}s after qemu start"
        )
        for r in res.values():
            assert r["rc"] == 0, r
        assert res["hostname"]["out"].strip() == HOSTNAME
        assert res["cat /sys/class/net/eth0/mtu"]["out"].strip() == str(GUEST_MTU)
        assert f"inet {GUEST_IP}/24" in res["ip -4 addr show dev eth0"]["out"]
        assert f"default via {PEER_IP} dev eth0" in res["ip route show default"]["out"]
        assert f"nameserver {PEER_IP}" in res["cat /etc/resolv.conf"]["out"]
        assert res[wait_user]["out"].split() == ["part-001", "0", "runcmd", "0"]
        assert res["cat /tmp/hello /root/runcmd-count /root/script-count /root/runcmd-argv"]["out"].split("\n")[:4] == [
            "hello", "run", "script", "argv form"]
        keys1 = g1.console_host_keys()
        assert len(keys1) == 2 and g1.hostkey in keys1, (keys1, g1.hostkey)
        console = g1.console()
        assert "miniecs-tiny: network: eth0 52:54:00:12:34:56 mtu 1400 10.0.1.23/24, default via 10.0.1.1" in console, console
        assert "miniecs-tiny: ssh: 2 authorized key(s) for root" in console
        assert "miniecs-tiny: network: eth1: no interface with mac 52:54:00:ff:ff:ff" in console

        g1.powerdown()
        assert g1.wait_exit() == 0
        console = g1.console()
        assert "ACPI power button pressed" in console, g1.diagnostics()
        assert RO_LINE in console, g1.diagnostics()

        # -- second boot from the same disk: the file survived, the scripts ran
        # once per instance; a reboot and a poweroff from inside the guest
        g2 = Guest(workdir, netns, disk, seed, keyfile, "2")
        guests.append(g2)
        g2.start()
        ready = g2.wait_console(READY)
        checks = [
            "cat /root/persist",
            "hostname",
            "dmesg | grep -c 'recovery complete' || true",
            wait_user,
            "cat /root/runcmd-count /root/script-count",
        ]
        res = results_by_cmd(g2.ssh(*checks))
        print(f"boot 2: console ready {ready - g2.started:.1f}s, ssh connected {g2.connected - g2.started:.1f}s")
        assert res["cat /root/persist"]["out"].strip() == token
        assert res["hostname"]["out"].strip() == HOSTNAME
        assert res["dmesg | grep -c 'recovery complete' || true"]["out"].strip() == "0", "journal was replayed"
        assert res["cat /root/runcmd-count /root/script-count"]["out"].split() == ["run", "script"]
        assert "user-data: scripts already ran for instance" in g2.console()
        assert g2.console_host_keys() == keys1 and g2.hostkey == g1.hostkey, "host keys changed"

        g2.ssh("(sleep 1; reboot) >/dev/null 2>&1 </dev/null &")
        g2.wait_console(RO_LINE)
        t_reboot = time.time()
        ready = g2.wait_console(READY, count=2)
        res = results_by_cmd(g2.ssh(*checks[:3]))
        print(f"reboot: ready again {ready - t_reboot:.1f}s after the shutdown")
        assert res["cat /root/persist"]["out"].strip() == token
        assert res["dmesg | grep -c 'recovery complete' || true"]["out"].strip() == "0"

        g2.ssh("(sleep 1; poweroff) >/dev/null 2>&1 </dev/null &")
        assert g2.wait_exit() == 0
        assert g2.console().count(RO_LINE) == 2, g2.diagnostics()
    finally:
        for g in guests:
            g.kill()
        logs = os.environ.get("MINIECS_TINY_E2E_LOGS")
        if logs:
            Path(logs).mkdir(parents=True, exist_ok=True)
            for g in guests:
                for f in (g.serial, g.stdout):
                    if f.exists():
                        shutil.copy(f, Path(logs) / f.name)


@pytest.mark.timeout(600)
def test_boot_without_seed(tiny_image, workdir, netns):
    """No seed at all (an empty CD-ROM drive): boots as localhost, powers off cleanly."""
    disk = new_disk(tiny_image, workdir)
    empty = workdir / "empty.iso"
    make_seed_iso(empty, {"README": "not a seed\n"}, label="DATA")  # an ISO, not labelled cidata
    g = Guest(workdir, netns, disk, empty, workdir / "no-key", "noseed")
    try:
        g.start()
        g.wait_console(READY)
        console = g.console()
        assert "miniecs-tiny: seed: no NoCloud seed (iso9660 label cidata) found" in console
        assert "miniecs-tiny: hostname: localhost" in console
        g.powerdown()
        assert g.wait_exit() == 0
        assert RO_LINE in g.console(), g.diagnostics()
    finally:
        g.kill()


@pytest.mark.timeout(600)
def test_boot_json_metadata_pyyaml_network_and_plain_script(tiny_image, workdir, netns):
    """meta-data in JSON with public-keys, network-config as PyYAML writes it,
    user-data a plain #! script."""
    yaml = pytest.importorskip("yaml")
    disk = new_disk(tiny_image, workdir)
    keyfile, pubkey = make_key(workdir)
    network = {
        "version": 2,
        "ethernets": {
            "nic0": {
                "match": {"macaddress": GUEST_MAC.upper()},
                "set-name": "eth0",
                "mtu": 1450,
                "addresses": [f"{GUEST_IP}/24", "fd00:e2e::23/64"],
                "routes": [{"to": "default", "via": PEER_IP}],
            }
        },
    }
    seed = workdir / "seed.iso"
    make_seed_iso(
        seed,
        {
            "meta-data": json.dumps({"instance-id": "i-json", "local-hostname": "json-host.example.internal", "public-keys": [pubkey]}),
            "user-data": "#!/bin/sh\necho plain script ran > /root/plain\n",
            "network-config": yaml.safe_dump(network),
        },
    )
    g = Guest(workdir, netns, disk, seed, keyfile, "json")
    try:
        g.start()
        g.wait_console(READY)
        res = results_by_cmd(
            g.ssh(
                "hostname",
                "cat /sys/class/net/eth0/mtu",
                "ip -4 addr show dev eth0",
                "ip route show default",
                "i=0; while [ ! -e /run/miniecs-tiny/user-scripts.done ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; cat /root/plain",
                "cat /etc/hosts",
                "ip -6 addr show dev eth0",
            )
        )
        out = [r["out"].strip() for r in res.values()]
        assert out[0] == "json-host"
        assert out[1] == "1450"
        assert f"inet {GUEST_IP}/24" in out[2]
        assert f"default via {PEER_IP} dev eth0" in out[3]
        assert out[4] == "plain script ran"
        assert "127.0.1.1\tjson-host.example.internal json-host" in out[5]
        assert "inet6 fd00:e2e::23/64" in out[6]
        g.powerdown()
        assert g.wait_exit() == 0
    finally:
        g.kill()


# ---- the guest's parsers, run with the host's busybox --------------------------------


def _busybox() -> str:
    bb = shutil.which("busybox")
    if not bb:
        pytest.skip("busybox is not installed")
    return bb


def flatten(text: str) -> dict[str, str]:
    p = subprocess.run(
        [_busybox(), "awk", "-f", str(GUEST_LIB / "yaml.awk")],
        input=text, capture_output=True, text=True, check=True,
    )
    return dict(line.split("=", 1) for line in p.stdout.splitlines())


def test_yaml_subset_as_pyyaml_writes_it():
    yaml = pytest.importorskip("yaml")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0aGlzaXNhZmFrZWtleWZvcnRlc3RpbmdwdXJwb3Nlcw a-long-key-comment"
    doc = {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": "52:54:00:12:34:56"},
                "mtu": 1400,
                "addresses": ["10.0.1.23/24"],
                "routes": [{"to": "0.0.0.0/0", "via": "10.0.1.1"}],
            }
        },
        "ssh_authorized_keys": [key],
        "runcmd": ["echo 'a: b' > /tmp/x"],
    }
    for flow in (False, None, True):
        flat = flatten(yaml.safe_dump(doc, default_flow_style=flow))
        assert flat["ethernets.eth0.match.macaddress"] == "52:54:00:12:34:56"
        assert flat["ethernets.eth0.mtu"] == "1400"
        assert flat["ethernets.eth0.addresses.0"] == "10.0.1.23/24"
        assert flat["ethernets.eth0.routes.0.via"] == "10.0.1.1"
        assert flat["ssh_authorized_keys.0"] == key
        assert flat["runcmd.0"] == "echo 'a: b' > /tmp/x"
    flat = flatten(json.dumps({"instance-id": "i-1", "local-hostname": "web-1"}))
    assert flat == {"instance-id": "i-1", "local-hostname": "web-1"}


def test_yaml_quoting_and_indentation():
    flat = flatten(
        textwrap.dedent(
            """\
            #cloud-config
            hostname: "web-1"   # comment
            ethernets:
                  eth0:
                        match: {macaddress: 52:54:00:AB:CD:EF}
                        addresses:
                        - "10.0.1.5/24"
            runcmd:
            - |
              echo one
              echo two
            - 'it''s'
            """
        )
    )
    assert flat["hostname"] == "web-1"
    assert flat["ethernets.eth0.match.macaddress"] == "52:54:00:AB:CD:EF"
    assert flat["ethernets.eth0.addresses.0"] == "10.0.1.5/24"
    assert flat["runcmd.0"] == "echo one\\necho two\\n"
    assert flat["runcmd.1"] == "it's"


def test_mime_split(tmp_path):
    bb = _busybox()
    mime = MIMEMultipart()
    mime.attach(MIMEText("#cloud-config\nhostname: x\n", "cloud-config"))
    mime.attach(MIMEText("#!/bin/sh\necho héllo\n", "x-shellscript", "utf-8"))
    msg = tmp_path / "ud"
    msg.write_text(mime.as_string())
    p = subprocess.run(
        [bb, "awk", "-f", str(GUEST_LIB / "mime.awk"), "-v", f"outdir={tmp_path}", str(msg)],
        capture_output=True, text=True, check=True,
    )
    parts = [line.split("\t") for line in p.stdout.splitlines()]
    assert [(t, e) for _, t, e in parts] == [("text/cloud-config", "7bit"), ("text/x-shellscript", "base64")]
    assert Path(parts[0][0]).read_text().startswith("#cloud-config\nhostname: x\n")
