"""SSH for ``miniecs host add``: host key checking, clear auth errors, argv-only commands.

Every remote command is an argument list joined with ``shlex.join``: no user
string reaches the remote shell unquoted. Files travel over SFTP into a
staging directory and are moved into place with ``install`` (as root, or
through ``sudo -n`` when the login user is not root).
"""

from __future__ import annotations

import base64
import logging
import hashlib
import re
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import paramiko

from controller.cli.errors import CliError

# failed handshakes are reported once, as a CliError (see controller/cli/ssh.py)
logging.getLogger("paramiko").addHandler(logging.NullHandler())

USER_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
ADDRESS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[?[0-9A-Fa-f:.]+\]?")


@dataclass(frozen=True)
class Target:
    user: str
    address: str
    port: int = 22

    def __str__(self) -> str:
        return f"{self.user}@{self.address}" + (f":{self.port}" if self.port != 22 else "")


def parse_target(text: str, port: int) -> Target:
    """``USER@ADDRESS`` (USER defaults to root), validated."""
    user, _, address = text.rpartition("@")
    user = user or "root"
    if not USER_RE.fullmatch(user):
        raise CliError(f"invalid user name {user!r} in {text!r}", 2)
    if not ADDRESS_RE.fullmatch(address):
        raise CliError(f"invalid host address {address!r} in {text!r}", 2)
    return Target(user, address.strip("[]"), port)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint (what ``ssh-keygen -lf`` prints)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class UnknownHostKey(CliError):
    pass


class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """An unknown host key is accepted only when the operator confirms its fingerprint:
    ``--accept-fingerprint`` or a yes at an interactive prompt. Accepted keys are saved."""

    def __init__(self, known_hosts: Path, accept: str | None, interactive: bool) -> None:
        self.known_hosts = known_hosts
        self.accept = accept
        self.interactive = interactive

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        fp = fingerprint(key)
        if self.accept is not None:
            if self.accept != fp:
                raise UnknownHostKey(
                    f"host key of {hostname} is {key.get_name()} {fp}, not the {self.accept} "
                    "given with --accept-fingerprint: refusing to connect")
        elif self.interactive:
            sys.stderr.write(f"The host key of {hostname} is not known.\n"
                             f"{key.get_name()} key fingerprint is {fp}.\n"
                             "Trust it and add it to known_hosts? [y/N] ")
            sys.stderr.flush()
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                raise UnknownHostKey(f"host key of {hostname} not accepted")
        else:
            raise UnknownHostKey(
                f"unknown host key for {hostname}: {key.get_name()} {fp} is not in "
                f"{self.known_hosts}. Check it on the host (ssh-keygen -lf "
                f"/etc/ssh/ssh_host_{key.get_name().removeprefix('ssh-')}_key.pub) and pass "
                f"--accept-fingerprint {fp}")
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        client.save_host_keys(str(self.known_hosts))


def load_identity(path: Path) -> paramiko.PKey:
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key_file(str(path))
        except paramiko.PasswordRequiredException:
            raise CliError(f"identity {path} is encrypted; load it into ssh-agent and leave "
                           "out --identity") from None
        except (paramiko.SSHException, ValueError):
            continue
        except OSError as exc:
            raise CliError(f"cannot read identity {path}: {exc.strerror}") from None
    raise CliError(f"identity {path} is not an Ed25519, ECDSA or RSA private key")


def connect(target: Target, identity: Path | None, known_hosts: Path, accept: str | None,
            interactive: bool, timeout: float = 15.0) -> paramiko.SSHClient:
    """An authenticated SSH connection, host key checked; each failure a clear CliError."""
    client = paramiko.SSHClient()
    if known_hosts.exists():
        try:
            client.load_host_keys(str(known_hosts))
        except (OSError, paramiko.SSHException) as exc:
            raise CliError(f"cannot read {known_hosts}: {exc}") from None
    client.set_missing_host_key_policy(HostKeyPolicy(known_hosts, accept, interactive))
    pkey = load_identity(identity) if identity else None
    try:
        client.connect(target.address, port=target.port, username=target.user, pkey=pkey,
                       allow_agent=pkey is None, look_for_keys=pkey is None, timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout)
    except paramiko.BadHostKeyException as exc:
        raise CliError(
            f"host key for {target.address} has CHANGED: {known_hosts} has "
            f"{fingerprint(exc.expected_key)}, the host offers {exc.key.get_name()} "
            f"{fingerprint(exc.key)}. Someone may be intercepting the connection; if the host "
            f"was reinstalled, remove the old key (ssh-keygen -R {target.address} -f "
            f"{known_hosts}) and try again") from None
    except paramiko.AuthenticationException:
        what = f"the key {identity}" if identity else "any key from ssh-agent or ~/.ssh"
        raise CliError(f"authentication refused: {target} did not accept {what}") from None
    except (socket.timeout, TimeoutError):
        raise CliError(f"cannot connect to {target.address}:{target.port}: timed out") from None
    except (paramiko.ssh_exception.NoValidConnectionsError, OSError) as exc:
        raise CliError(f"cannot connect to {target.address}:{target.port}: "
                       f"{getattr(exc, 'strerror', None) or exc}") from None
    except paramiko.SSHException as exc:
        raise CliError(f"SSH to {target} failed: {exc}") from None
    return client


@dataclass
class Result:
    code: int
    out: str
    err: str


class Remote:
    """Commands (argument lists) and files on the host, as root."""

    def __init__(self, client: paramiko.SSHClient, target: Target) -> None:
        self.client = client
        self.target = target
        self.sudo = target.user != "root"
        self._sftp: paramiko.SFTPClient | None = None
        self._staging: str | None = None

    @property
    def peer_address(self) -> str:
        """The address the connection reached (after name resolution)."""
        return self.client.get_transport().getpeername()[0]

    def run(self, argv: list[str], *, timeout: float = 120.0, check: bool = True,
            root: bool = True, detach: bool = False) -> Result:
        """Run ``argv``; ``detach`` leaves it running with its stdio on /dev/null."""
        argv = [str(a) for a in argv]
        if root and self.sudo:
            argv = ["sudo", "-n", "--", *argv]
        command = shlex.join(argv) + (" </dev/null >/dev/null 2>&1" if detach else "")
        try:
            _, stdout, stderr = self.client.exec_command(command, timeout=timeout)
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            code = stdout.channel.recv_exit_status()
        except (socket.timeout, TimeoutError):
            raise CliError(f"{self.target}: `{shlex.join(argv)}` did not finish in "
                           f"{timeout:.0f}s") from None
        except paramiko.SSHException as exc:
            raise CliError(f"{self.target}: SSH failed running `{argv[0]}`: {exc}") from None
        if check and code != 0:
            raise CliError(f"{self.target}: `{shlex.join(argv)}` failed (exit {code}): "
                           f"{(err or out).strip()[-1500:]}")
        return Result(code, out, err)

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    @property
    def staging(self) -> str:
        """A private directory of the login user for uploads (removed by ``close``)."""
        if self._staging is None:
            template = "/tmp/miniecs-add." + "X" * 8  # mktemp fills in the X's
            self._staging = self.run(["mktemp", "-d", template],
                                     root=False).out.strip()
        return self._staging

    def upload(self, local: Path, name: str) -> str:
        """Copy ``local`` into the staging directory; returns its remote path."""
        remote = f"{self.staging}/{name}"
        try:
            self.sftp.put(str(local), remote)
        except (OSError, paramiko.SSHException) as exc:
            raise CliError(f"{self.target}: copying {local.name} over SFTP failed: {exc}") \
                from None
        return remote

    def write(self, data: bytes, dest: str, mode: int = 0o600) -> None:
        """Write ``data`` to ``dest`` (owned by root, ``mode``), through the staging dir."""
        staged = f"{self.staging}/{Path(dest).name}"
        try:
            with self.sftp.open(staged, "wb") as f:
                f.write(data)
        except (OSError, paramiko.SSHException) as exc:
            raise CliError(f"{self.target}: writing {dest} over SFTP failed: {exc}") from None
        self.run(["install", "-D", "-m", f"{mode:o}", staged, dest])

    def close(self) -> None:
        if self._staging:
            self.run(["rm", "-rf", "--", self._staging], root=self.sudo, check=False)
        if self._sftp:
            self._sftp.close()
        self.client.close()
