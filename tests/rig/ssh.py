"""Run one command in a guest over SSH (paramiko), retrying until it answers.

Meant to run inside a rig namespace that routes to the guest (the VPC's router
namespace), e.g.::

    ip netns exec NS python -m tests.rig.ssh --host 10.0.1.5 --key id --cmd hostname

Prints the command's stdout; exits with the command's status, or 255 when no
SSH session could be had before the deadline.
"""

from __future__ import annotations

import argparse
import sys
import time

import paramiko


def load_key(path: str) -> paramiko.PKey:
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key_file(path)
        except (paramiko.SSHException, ValueError):
            continue
    raise SystemExit(f"cannot read private key {path}")


def run_command(host: str, key: paramiko.PKey, command: str, user: str = "root",
                timeout: float = 60.0) -> tuple[int, str, str, float]:
    """Connect (retrying until ``timeout``), run ``command``; returns (status, out, err, seconds)."""
    start = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - start < timeout:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect(host, username=user, pkey=key, timeout=3, banner_timeout=5,
                           auth_timeout=5, allow_agent=False, look_for_keys=False)
            answered = time.monotonic() - start
            _, stdout, stderr = client.exec_command(command, timeout=30)
            status = stdout.channel.recv_exit_status()
            return status, stdout.read().decode(), stderr.read().decode(), answered
        except (OSError, paramiko.SSHException, EOFError) as exc:
            last = exc
            time.sleep(0.1)
        finally:
            client.close()
    raise TimeoutError(f"no SSH session with {host} within {timeout:.0f}s: {last}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--cmd", required=True)
    parser.add_argument("--user", default="root")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        status, out, err, answered = run_command(args.host, load_key(args.key), args.cmd,
                                                 args.user, args.timeout)
    except TimeoutError as exc:
        print(str(exc), file=sys.stderr)
        return 255
    sys.stdout.write(out)
    sys.stderr.write(err)
    print(f"ssh-answered-after {answered:.3f}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
