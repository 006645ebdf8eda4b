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
        if not is_netns(netns_path):
            if not create:
                raise TemporaryError(f"network namespace {netns_path} does not exist")
            create_netns(netns_path)
        return IPRoute(netns=open_path(netns_path), flags=0)
    except OSError as exc:
        raise TemporaryError(f"netlink{' in ' + str(netns_path) if netns_path else ''}: {exc}") from None


# Router namespaces must outlive the agent process. An agent started in a
# private mount namespace (``ip netns exec``, a container) would bind-mount
# them into that namespace only, and they — with the guests' gateway — would
# vanish with the agent. So namespaces are mounted in the mount namespace of
# PID 1 (in a forked child that joins it) and opened through /proc/1/root.

def _foreign_mount_ns() -> bool:
    try:
        return os.readlink("/proc/self/ns/mnt") != os.readlink("/proc/1/ns/mnt")
    except OSError:
        return False


def private_mount_ns_warning() -> str | None:
    """A warning when this process sits in a private mount namespace PID 1 cannot see into."""
    try:
        mine = os.readlink("/proc/self/ns/mnt")
        parent = os.readlink(f"/proc/{os.getppid()}/ns/mnt")
    except OSError:
        return None
    if mine == parent or _foreign_mount_ns():
        return None
    return ("the agent runs in a private mount namespace (started by `ip netns exec`?): its router "
            "namespaces are invisible outside it and die with it; start it with "
            "`nsenter --net=/run/netns/NAME` instead")


def open_path(path: str | Path) -> str:
    """Where this process opens ``path`` as PID 1's mount namespace sees it."""
    path = os.path.abspath(str(path))
    return f"/proc/1/root{path}" if _foreign_mount_ns() else path


def _in_init_mount_ns(fn, *args) -> None:
    """Run ``fn(*args)`` in a forked child that joined PID 1's mount namespace."""
    if not _foreign_mount_ns():
        fn(*args)
        return
    import ctypes
    import ctypes.util
    import traceback

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: single-threaded, so it may join another mount namespace
        code = 0
        try:
            os.close(rfd)
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            fd = os.open("/proc/1/ns/mnt", os.O_RDONLY)
            if libc.setns(fd, _CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "setns(mnt) failed")
            os.chdir("/")
            fn(*args)
        except BaseException:
            os.write(wfd, traceback.format_exc(limit=2).encode()[-2000:])
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        err = r.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise OSError(f"in the host mount namespace: {err.strip().splitlines()[-1] if err else status}")


def is_netns(path: str | Path) -> bool:
    """True when ``path`` is a bind mount of a network namespace (not a stale empty file)."""
    try:
        return os.stat(open_path(path)).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def _create(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)  # a stale mount point: its namespace died with its mount
    netns._create(path)


def create_netns(path: str | Path) -> None:
    """Create a network namespace bind-mounted at ``path``; replaces a stale mount point."""
    path = os.path.abspath(str(path))
    if is_netns(path):
        return
    if _foreign_mount_ns():
        _in_init_mount_ns(_create, path)
    else:
        # pyroute2 unshares in a child process, so this process keeps its namespace
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        netns.create(path)
    if not is_netns(path):
        raise TemporaryError(f"network namespace {path} was not created")


def _remove(path: str) -> None:
    netns.remove(path)
    # pyroute2 made the directory a shared bind mount of itself; once it holds no
    # namespace, drop that mount so the state directory can be deleted.
    directory = os.path.dirname(path)
    if not os.listdir(directory) and os.path.ismount(directory):
        import ctypes
        import ctypes.util
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.umount2(directory.encode(), 2)  # MNT_DETACH


def remove_netns(path: str | Path) -> None:
    """Unmount and delete the namespace at ``path`` (its interfaces go with it)."""
    path = os.path.abspath(str(path))
    if is_netns(path):
        _in_init_mount_ns(_remove, path)
    elif os.path.lexists(open_path(path)):
        os.unlink(open_path(path))


def list_netns(directory: str | Path) -> list[str]:
    """Names of entries in ``directory`` (live or stale namespaces)."""
    try:
        return sorted(os.listdir(open_path(directory)))
    except FileNotFoundError:
        return []


_CLONE_NEWNS = 0x00020000
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
            fd = os.open(open_path(path), os.O_RDONLY)
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
