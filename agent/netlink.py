"""The one netlink handle factory (pyroute2).

``ipr()`` returns a fresh ``IPRoute`` for this network namespace, or one
opened in the router namespace at ``netns_path`` (created when missing), to be
used in a ``with`` block.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyroute2 import IPRoute, netns

from agent.errors import TemporaryError


def ipr(netns_path: str | Path | None = None, *, create: bool = False) -> IPRoute:
    """A netlink handle in this namespace, or in the namespace bind-mounted at ``netns_path``."""
    try:
        if netns_path is None:
            return IPRoute()
        path = str(netns_path)
        if not is_netns(path):
            if not create:
                raise TemporaryError(f"network namespace {path} does not exist")
            create_netns(path)
        return IPRoute(netns=path, flags=0)
    except OSError as exc:
        raise TemporaryError(f"netlink{' in ' + str(netns_path) if netns_path else ''}: {exc}") from None


def is_netns(path: str | Path) -> bool:
    """True when ``path`` is a bind mount of a network namespace (not a stale empty file)."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def create_netns(path: str | Path) -> None:
    """Create a network namespace bind-mounted at ``path``; replaces a stale mount point."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path) and not is_netns(path):
        os.unlink(path)  # left behind when the namespace died with its mount
    netns.create(path)


def remove_netns(path: str | Path) -> None:
    """Unmount and delete the namespace at ``path`` (its interfaces go with it)."""
    path = str(path)
    if is_netns(path):
        netns.remove(path)
    elif os.path.lexists(path):
        os.unlink(path)


def list_netns(directory: str | Path) -> list[str]:
    """Names of entries in ``directory`` (live or stale namespaces)."""
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []


_CLONE_NEWNET = 0x40000000


def sysctl_in_netns(path: str | Path, key: str, value: str | None = None) -> str:
    """Read (and write when ``value`` is given) a net sysctl inside the namespace at ``path``.

    /proc/sys/net resolves against the opening thread's namespace, so a short
    thread switches into the namespace, does the I/O and ends; the rest of the
    agent never leaves its own namespace.
    """
    import ctypes
    import ctypes.util
    import threading

    if not key.startswith("net.") or ".." in key:
        raise ValueError(f"not a net sysctl: {key}")
    proc_path = "/proc/sys/" + key.replace(".", "/")
    result: dict[str, object] = {}

    def work() -> None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            fd = os.open(str(path), os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed", str(path))
            finally:
                os.close(fd)
            if value is not None:
                with open(proc_path, "w") as f:
                    f.write(value)
            with open(proc_path) as f:
                result["value"] = f.read().strip()
        except OSError as exc:
            result["error"] = exc

    t = threading.Thread(target=work, name="netns-sysctl")
    t.start()
    t.join()
    if "error" in result:
        raise TemporaryError(f"sysctl {key} in {path}: {result['error']}")
    return str(result["value"])
