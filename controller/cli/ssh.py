"""``miniecs ssh INSTANCE [-- COMMAND]``: SSH to an instance through the controller.

The operator's machine needs no route into the VPC: the CLI opens a
WebSocket to ``/api/v1/instances/{id}/tunnel`` (admin token), the controller
has the instance's agent connect to the guest's port 22 from inside the VPC's
router namespace, and paramiko runs SSH over the joined stream (through a
local socket pair). Host keys are trusted on first use and kept per instance
id in ``known_hosts`` beside the CLI config file.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import sys
import threading
from pathlib import Path
from typing import Annotated

import paramiko
import typer

from controller.cli.context import client
from controller.cli.errors import CliError
from controller.cli.resources import INSTANCE, resolve

# paramiko's transport thread logs a failed handshake with its traceback, which Python's
# last-resort handler would print to stderr beside (or before) the command's own error,
# depending on which thread sees the closed tunnel first; the command reports it once
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def known_hosts_path() -> Path:
    config = Path(os.environ.get("MINIECS_CONFIG",
                                 Path.home() / ".config" / "miniecs" / "config.toml"))
    return config.parent / "known_hosts"


def load_key(path: Path) -> paramiko.PKey:
    errors = []
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key_file(str(path))
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(str(exc))
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror}") from None
    raise CliError(f"{path} holds no private key paramiko can read")


def open_tunnel(endpoint: str, token: str, instance_id: str, port: int,
                ca_file: str | None = None):
    """The WebSocket of a tunnel to ``port`` of the instance (a sync websockets connection)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    base = endpoint.rstrip("/").removesuffix("/api/v1")
    if base.startswith("https://"):
        url, ctx = "wss://" + base[8:], ssl.create_default_context(cafile=ca_file)
    elif base.startswith("http://"):
        url, ctx = "ws://" + base[7:], None
    else:
        raise CliError(f"endpoint {endpoint!r} is neither http:// nor https://")
    try:
        return connect(f"{url}/api/v1/instances/{instance_id}/tunnel?port={port}",
                       additional_headers={"Authorization": f"Bearer {token}"}, ssl=ctx,
                       max_size=None, open_timeout=15, compression=None)
    except InvalidStatus as exc:
        raise CliError(f"tunnel refused: HTTP {exc.response.status_code}") from None
    except OSError as exc:
        raise CliError(f"cannot reach the controller: {exc}") from None


class TunnelSocket:
    """Joins a tunnel WebSocket to one end of a local socket pair; paramiko gets the other."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.ours, self.theirs = socket.socketpair()
        self.close_reason = ""
        self.close_code: int | None = None
        self._threads = [threading.Thread(target=self._down, daemon=True),
                         threading.Thread(target=self._up, daemon=True)]
        for t in self._threads:
            t.start()

    def _down(self) -> None:  # controller → paramiko
        try:
            for msg in self.ws:
                self.ours.sendall(msg if isinstance(msg, bytes) else msg.encode())
        except Exception:  # noqa: BLE001 - the tunnel ended
            pass
        finally:
            rcvd = getattr(self.ws.protocol, "close_rcvd", None)
            if rcvd is not None:
                self.close_code, self.close_reason = rcvd.code, rcvd.reason
            try:
                self.ours.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _up(self) -> None:  # paramiko → controller
        try:
            while True:
                data = self.ours.recv(65536)
                if not data:
                    break
                self.ws.send(data)
        except Exception:  # noqa: BLE001
            pass
        finally:
            try:
                self.ws.close()
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001
            pass
        self.theirs.close()
        for t in self._threads:
            t.join(timeout=5)
        self.ours.close()


def _copy(recv, out) -> None:
    while True:
        data = recv(65536)
        if not data:
            return
        out.write(data)
        out.flush()


def _interactive(chan: paramiko.Channel) -> None:
    import termios
    import tty

    stdin = sys.stdin.fileno()
    old = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    try:
        if old is not None:
            tty.setraw(stdin)
        while True:
            readable, _, _ = select.select([chan, stdin], [], [])
            if chan in readable:
                data = chan.recv(65536)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if stdin in readable:
                data = os.read(stdin, 4096)
                if not data:
                    chan.shutdown_write()
                    continue
                chan.sendall(data)
    finally:
        if old is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, old)


def ssh(
    ctx: typer.Context,
    instance: Annotated[str, typer.Argument(help="Instance id or name.")],
    command: Annotated[list[str] | None, typer.Argument(
        help="Command to run (after --); without one, an interactive shell.")] = None,
    identity: Annotated[Path, typer.Option(
        "--identity", "-i", help="Private key of the instance's key pair.")] = Path(
        "~/.ssh/id_ed25519"),
    user: Annotated[str, typer.Option("--user", "-l", help="Remote user.")] = "root",
    port: Annotated[int, typer.Option("--port", help="Guest port of the SSH server.")] = 22,
) -> None:
    """SSH to an instance through the controller (no route into the VPC needed).

    Exits with the remote command's status (255 when no session could be had).
    """
    api = client(ctx)
    instance_id = resolve(api, INSTANCE, instance)
    key = load_key(identity.expanduser())
    ws = open_tunnel(api.endpoint, api.profile.token or "", instance_id, port,
                     api.profile.ca_file)
    tunnel = TunnelSocket(ws)
    ssh_client = paramiko.SSHClient()
    hosts_file = known_hosts_path()
    if hosts_file.exists():
        ssh_client.load_host_keys(str(hosts_file))
    ssh_client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    status = 255
    try:
        try:
            ssh_client.connect(instance_id, port=port, username=user, pkey=key,
                               sock=tunnel.theirs, timeout=15, banner_timeout=30,
                               auth_timeout=15, allow_agent=False, look_for_keys=False)
        except paramiko.BadHostKeyException as exc:
            raise CliError(f"the host key of {instance_id} changed ({exc}); if expected, "
                           f"remove its line from {hosts_file}", exit_code=255) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            tunnel.theirs.close()
            for t in tunnel._threads:
                t.join(timeout=2)
            why = tunnel.close_reason or str(exc) or type(exc).__name__
            raise CliError(f"no SSH session with {instance_id}: {why}", exit_code=255) from None
        hosts_file.parent.mkdir(parents=True, exist_ok=True)
        ssh_client.save_host_keys(str(hosts_file))
        transport = ssh_client.get_transport()
        assert transport is not None
        chan = transport.open_session()
        if command:
            chan.exec_command(" ".join(command))
            chan.shutdown_write()
            err = threading.Thread(target=_copy, args=(chan.recv_stderr, sys.stderr.buffer),
                                   daemon=True)
            err.start()
            _copy(chan.recv, sys.stdout.buffer)
            err.join(timeout=10)
        else:
            size = os.get_terminal_size() if os.isatty(sys.stdout.fileno()) else None
            chan.get_pty(term=os.environ.get("TERM", "vt100"),
                         width=size.columns if size else 80, height=size.lines if size else 24)
            chan.invoke_shell()
            _interactive(chan)
        status = chan.recv_exit_status()
    finally:
        ssh_client.close()
        tunnel.close()
    raise typer.Exit(status if status >= 0 else 255)
