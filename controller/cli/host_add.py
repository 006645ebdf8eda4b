"""``miniecs host add``: turn a reachable Linux machine into an enrolled, ready hypervisor.

Steps (each shown as it runs; each failure stops with one clear message):
connect (host key checked) → root or passwordless sudo → host checks (KVM,
libvirt, kernel modules, tools; ``agent/hostcheck.py`` run by the host's own
python3) → wheels (this tree's miniecs wheel and its dependencies, built here
and copied over SFTP, so the host needs no package index) → virtualenv under
``--prefix`` → agent config with a fresh one-time enrolment token → systemd
unit, or the agent's own supervisor where systemd is not PID 1 → wait until
the controller reports the host ready.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from agent import hostcheck

from controller.cli.client import ApiClient
from controller.cli.errors import CliError
from controller.cli.host_ssh import Remote, Target, connect, fingerprint
from controller.errors import InvalidParameter
from controller.validation import validate_name

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HOSTCHECK = Path(hostcheck.__file__)
PREFIX_RE = re.compile(r"/[A-Za-z0-9._/-]*")
SYSTEMD_STATE_DIR = "/var/lib/miniecs-agent"
UNIT = "miniecs-agent.service"
LOG_TAIL_LINES = 40


@dataclass
class AddOptions:
    target: Target
    identity: Path | None
    zone: str
    name: str | None
    prefix: str
    controller_url: str
    underlay_address: str | None
    uplink_interface: str | None
    virt_type: str
    libvirt_uri: str
    known_hosts: Path
    accept_fingerprint: str | None
    wheelhouse: Path | None
    timeout: float
    # the distribution's python, by path: a login shell's PATH may hold pyenv or conda shims
    python: str = "/usr/bin/python3"


def default_wheelhouse() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "miniecs" / "wheelhouse"


def build_wheelhouse(dest: Path) -> list[Path]:
    """This tree's miniecs wheel plus wheels of all its dependencies, in ``dest``.

    Dependencies already in ``dest`` are reused; the miniecs wheel is rebuilt every time.
    """
    if not (PROJECT_ROOT / "pyproject.toml").exists():
        raise CliError("this miniecs is installed from a wheel, not a source tree: pass "
                       "--wheelhouse DIR (made with `pip wheel -w DIR <miniecs source>`)")
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("miniecs-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="miniecs-wheel-") as tmp:
        # build from a copy of what the wheel holds: setuptools would walk the whole tree
        # (virtualenvs, image build directories) otherwise
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(PROJECT_ROOT / name, src / name)
        for package in ("controller", "agent"):
            shutil.copytree(PROJECT_ROOT / package, src / package,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(dest),
             "--find-links", str(dest), str(src)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise CliError(f"building the wheels failed: {(proc.stderr or proc.stdout)[-2000:]}")
    return wheels_in(dest)


def wheels_in(directory: Path) -> list[Path]:
    wheels = sorted(directory.glob("*.whl"))
    if not any(w.name.startswith("miniecs-") for w in wheels):
        raise CliError(f"no miniecs wheel in {directory}")
    return wheels


class Steps:
    """Progress on stderr: a spinner while a step runs, a tick or a cross after it."""

    def __init__(self) -> None:
        self.console = Console(stderr=True, highlight=False)

    @contextmanager
    def step(self, text: str):
        with self.console.status(text):
            try:
                yield
            except CliError:
                self.console.print(f"[red]✗[/] {text}")
                raise
        self.console.print(f"[green]✓[/] {text}")

    def note(self, text: str) -> None:
        self.console.print(f"  {text}")


def _validate(opts: AddOptions) -> None:
    if not PREFIX_RE.fullmatch(opts.prefix) or ".." in opts.prefix.split("/"):
        raise CliError(f"--prefix must be an absolute path of letters, digits and ._/- "
                       f"(got {opts.prefix!r})", 2)
    for value, what in ((opts.zone, "zone"), (opts.name, "name")):
        if value is not None:
            try:
                validate_name(value, what)
            except InvalidParameter as exc:
                raise CliError(f"--{what}: {exc}", 2) from None


def add_host(api: ApiClient, opts: AddOptions) -> dict:
    """Install, enrol and start the agent on ``opts.target``; returns the ready host."""
    _validate(opts)
    steps = Steps()
    prefix = opts.prefix.rstrip("/") or "/"
    with steps.step(f"connect to {opts.target}"):
        client = connect(opts.target, opts.identity, opts.known_hosts, opts.accept_fingerprint,
                         interactive=sys.stdin.isatty())
    remote = Remote(client, opts.target)
    try:
        steps.note(f"host key {fingerprint(client.get_transport().get_remote_server_key())}")
        with steps.step("root access"):
            _check_root(remote)
        with steps.step("host checks"):
            facts = _host_checks(remote, opts, steps)
        name = opts.name or facts["hostname"]
        try:
            validate_name(name, "name")
        except InvalidParameter:
            raise CliError(f"host name {name!r} is not a valid miniecs name; pass --name") from None
        with steps.step("wheels"):
            wheels = wheels_in(opts.wheelhouse) if opts.wheelhouse else \
                build_wheelhouse(default_wheelhouse())
            _check_python(facts, wheels, explicit=opts.wheelhouse is not None)
        with steps.step(f"install miniecs into {prefix}/venv ({len(wheels)} wheels)"):
            _install(remote, prefix, wheels, opts.python)
        systemd = facts["systemd"]
        state_dir = SYSTEMD_STATE_DIR if systemd else f"{prefix}/state"
        config = f"{prefix}/etc/agent.toml"
        with steps.step(f"agent config {config} (one-time enrolment token for {name})"):
            token = api.post("/enrolment-tokens", {"host_name": name})["token"]
            ca = _upload_ca(remote, api, prefix)
            remote.write(_agent_toml(opts, name, remote.peer_address, state_dir, token, ca),
                         config, 0o600)
        log_file = f"{prefix}/log/agent.log"
        pidfile = f"{prefix}/run/supervisor.pid"
        with steps.step("start the agent"):
            _load_modules(remote, facts, systemd)
            if systemd:
                remote.run([f"{prefix}/venv/bin/miniecs-agent", "install-unit", "--config",
                            config, "--now"])
            else:
                pid = _start_supervised(remote, prefix, config, pidfile, log_file)
        if systemd:
            steps.note(f"systemd unit {UNIT} enabled and started")
        else:
            steps.note(f"systemd is not PID 1 on this host: the agent runs under miniecs's own "
                       f"supervisor (pid {pid}, log {log_file}); it is not restarted after a "
                       "reboot")
        with steps.step(f"wait for host {name} to report ready"):
            host = _wait_ready(api, remote, name, opts.timeout, systemd, pidfile, log_file)
        steps.note(f"host {host['id']} ready in zone {host['zone_id']}, virt type "
                   f"{host['virt_type']}, {host['capacity']['vcpus']} vCPUs, "
                   f"{host['capacity']['memory_mib']} MiB")
        return host
    finally:
        remote.close()


def _check_root(remote: Remote) -> None:
    if remote.sudo:
        probe = remote.run(["sudo", "-n", "true"], root=False, check=False)
        if probe.code != 0:
            raise CliError(f"no root on {remote.target.address}: {remote.target.user} cannot "
                           f"use sudo without a password ({(probe.err or probe.out).strip()}); "
                           "log in as root or allow passwordless sudo")
    uid = remote.run(["id", "-u"], check=False)
    if uid.out.strip() != "0":
        raise CliError(f"no root on {remote.target.address}: commands run as uid "
                       f"{uid.out.strip() or '?'} ({uid.err.strip()})")


def _host_checks(remote: Remote, opts: AddOptions, steps: Steps) -> dict:
    probe = remote.run([opts.python, "--version"], check=False, root=False)
    if probe.code != 0:
        raise CliError(f"missing package on {remote.target.address}: python3 "
                       f"(apt-get install python3 python3-venv): {opts.python}: "
                       f"{probe.err.strip()[-300:]}")
    script = remote.upload(HOSTCHECK, "hostcheck.py")
    out = remote.run([opts.python, script, "--libvirt-uri", opts.libvirt_uri], timeout=120)
    try:
        facts = json.loads(out.out)
    except ValueError:
        raise CliError(f"host check printed no result: {out.out[-500:]}{out.err[-500:]}") \
            from None
    modules = ", ".join(f"{m} {s}" for m, s in facts["modules"].items())
    steps.note(f"{facts['hostname']}: {facts['machine']}, python {facts['python']}, "
               f"/dev/kvm {facts['kvm']}, libvirt {facts['libvirt']}")
    steps.note(f"kernel modules: {modules}")
    steps.note("virt type: " + (opts.virt_type if opts.virt_type != "auto" else
               "kvm if a probe guest runs on KVM, else qemu (TCG)" if facts["kvm"] == "usable"
               else "qemu (TCG): KVM is not usable here"))
    if facts["problems"]:
        raise CliError(f"{remote.target.address} is not ready for miniecs:\n  - " +
                       "\n  - ".join(facts["problems"]))
    return facts


def _check_python(facts: dict, wheels: list[Path], explicit: bool) -> None:
    local = f"{sys.version_info.major}.{sys.version_info.minor}"
    tag = f"cp{local.replace('.', '')}"
    binary = [w for w in wheels if f"-{tag}-" in w.name]
    if not explicit and facts["python"] != local and binary:
        raise CliError(f"the host runs python {facts['python']} but the wheels here are built "
                       f"for {local}; build them on a machine like the host and pass "
                       "--wheelhouse DIR")


def _install(remote: Remote, prefix: str, wheels: list[Path], python: str) -> None:
    wheel_dir = f"{prefix}/wheels"
    remote.run(["mkdir", "-p", "-m", "0755", wheel_dir, f"{prefix}/etc", f"{prefix}/log",
                f"{prefix}/run"])
    have = remote.run(["ls", "-1", wheel_dir], check=False).out.split()
    for wheel in wheels:
        if wheel.name in have and not wheel.name.startswith("miniecs-"):
            continue
        staged = remote.upload(wheel, wheel.name)
        remote.run(["install", "-m", "0644", staged, f"{wheel_dir}/{wheel.name}"])
    venv = f"{prefix}/venv"
    if remote.run(["test", "-x", f"{venv}/bin/python"], check=False).code != 0:
        remote.run([python, "-m", "venv", venv], timeout=300)
    pip = [f"{venv}/bin/pip", "install", "-q", "--no-index", "--find-links", wheel_dir]
    remote.run([*pip, "miniecs"], timeout=900)
    own = next(w for w in wheels if w.name.startswith("miniecs-"))
    # same version number, new code: put this tree's miniecs in place
    remote.run([*pip, "--force-reinstall", "--no-deps", f"{wheel_dir}/{own.name}"], timeout=300)


def _upload_ca(remote: Remote, api: ApiClient, prefix: str) -> str | None:
    ca = api.profile.ca_file
    if not ca:
        return None
    dest = f"{prefix}/etc/ca.pem"
    remote.write(Path(ca).read_bytes(), dest, 0o644)
    return dest


def _agent_toml(opts: AddOptions, name: str, peer: str, state_dir: str, token: str,
                ca: str | None) -> bytes:
    values: dict[str, str] = {
        "controller_url": opts.controller_url,
        "enrolment_token": token,
        "host_name": name,
        "zone": opts.zone,
        "libvirt_uri": opts.libvirt_uri,
        "virt_type": opts.virt_type,
        "state_dir": state_dir,
        "underlay_address": opts.underlay_address or peer,
    }
    if opts.uplink_interface:
        values["uplink_interface"] = opts.uplink_interface
    if ca:
        values["ca_file"] = ca
    # JSON strings are valid TOML basic strings
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return ("# written by `miniecs host add`\n" + "\n".join(lines) + "\n").encode()


def _load_modules(remote: Remote, facts: dict, systemd: bool) -> None:
    loadable = [m for m, state in facts["modules"].items() if state == "loadable"]
    if loadable:
        remote.run(["modprobe", "-a", *loadable])
    if systemd:
        remote.write(("# miniecs agent: bridges, VXLAN, firewalling of bridged traffic\n" +
                      "\n".join(facts["modules"]) + "\n").encode(),
                     "/etc/modules-load.d/miniecs.conf", 0o644)


def _read_pid(remote: Remote, pidfile: str) -> int | None:
    text = remote.run(["cat", pidfile], check=False).out.strip()
    return int(text) if text.isdigit() else None


def _start_supervised(remote: Remote, prefix: str, config: str, pidfile: str,
                      log_file: str) -> int:
    old = _read_pid(remote, pidfile)
    if old and remote.run(["kill", "-TERM", str(old)], check=False).code == 0:
        for _ in range(150):
            if remote.run(["kill", "-0", str(old)], check=False).code != 0:
                break
            time.sleep(0.2)
        else:
            raise CliError(f"the running agent supervisor (pid {old}) did not stop")
    remote.run(["rm", "-f", pidfile])
    remote.run(["setsid", "-f", f"{prefix}/venv/bin/python", "-m", "agent.supervise",
                "--config", config, "--pidfile", pidfile, "--log", log_file], detach=True)
    for _ in range(100):
        pid = _read_pid(remote, pidfile)
        if pid:
            return pid
        time.sleep(0.1)
    raise CliError(f"the agent supervisor did not start; last lines of {log_file}:\n" +
                   _log_tail(remote, False, log_file))


def _log_tail(remote: Remote, systemd: bool, log_file: str) -> str:
    if systemd:
        argv = ["journalctl", "-u", UNIT, "-n", str(LOG_TAIL_LINES), "--no-pager"]
    else:
        argv = ["tail", "-n", str(LOG_TAIL_LINES), log_file]
    out = remote.run(argv, check=False)
    return (out.out or out.err).rstrip() or "(empty)"


def _agent_running(remote: Remote, systemd: bool, pidfile: str) -> bool:
    if systemd:
        state = remote.run(["systemctl", "is-active", UNIT], check=False).out.strip()
        return state in ("active", "activating", "reloading")
    pid = _read_pid(remote, pidfile)
    return bool(pid) and remote.run(["kill", "-0", str(pid)], check=False).code == 0


def _wait_ready(api: ApiClient, remote: Remote, name: str, timeout: float, systemd: bool,
                pidfile: str, log_file: str) -> dict:
    deadline = time.monotonic() + timeout
    where = f"journalctl -u {UNIT}" if systemd else log_file
    while True:
        hosts = api.list_all("/hosts")["items"]
        host = next((h for h in hosts if h["name"] == name), None)
        if host and host["state"] == "ready":
            return host
        if not _agent_running(remote, systemd, pidfile):
            raise CliError(f"the agent on {remote.target.address} failed to start; last lines "
                           f"of {where}:\n{_log_tail(remote, systemd, log_file)}")
        if time.monotonic() > deadline:
            state = host["state"] if host else "not enrolled"
            raise CliError(f"host {name} is still {state} after {timeout:.0f}s; last lines of "
                           f"{where}:\n{_log_tail(remote, systemd, log_file)}")
        time.sleep(1.0)

