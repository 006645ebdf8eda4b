"""The one netlink handle factory (pyroute2), and quick host-wide dumps.

``ipr()`` returns a fresh ``IPRoute`` for this network namespace, or one
opened in the router namespace at ``netns_path`` (created when missing), to be
used in a ``with`` block. ``handle()`` yields a *kept* handle instead: one per
namespace for the agent's life (opening one inside a namespace forks a helper
process and costs 10-40 ms), dropped when the namespace at that path is a
different one (removed and made again) or when an operation on it fails.

``host_links()`` and ``host_fdb()`` read the host namespace's links and
bridge FDB through iproute2's JSON output: one dump each, parsed in C, about
ten times faster than decoding every message with pyroute2 at a few hundred
links.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from agent.errors import TemporaryError

if TYPE_CHECKING:
    from pyroute2 import IPRoute


def _pyroute2():
    """pyroute2, imported on first use: its package imports every module it has
    (~0.3 s of CPU), and an agent pass over a host in order needs no pyroute2 handle,
    so a restarted agent adopts its host without paying for it."""
    import pyroute2
    import pyroute2.netns  # noqa: F401 - the submodule, as an attribute

    return pyroute2


def ipr(netns_path: str | Path | None = None, *, create: bool = False) -> IPRoute:
    """A netlink handle in this namespace, or in the namespace bind-mounted at ``netns_path``."""
    try:
        if netns_path is None:
            return _pyroute2().IPRoute()
        if not is_netns(netns_path):
            if not create:
                raise TemporaryError(f"network namespace {netns_path} does not exist")
            create_netns(netns_path)
        return _pyroute2().IPRoute(fileno=_netlink_socket_in(netns_path))
    except OSError as exc:
        raise TemporaryError(f"netlink{' in ' + str(netns_path) if netns_path else ''}: {exc}") from None


def _netlink_socket_in(netns_path: str | Path, proto: int = 0) -> int:
    """The fd of a NETLINK_ROUTE socket created inside the namespace at ``netns_path``.

    A socket stays in the namespace it was made in, so a short thread joins the
    namespace (a thread's network namespace is its own), makes the socket and
    ends: ~2 ms, where pyroute2's ``IPRoute(netns=...)`` forks a helper process
    (10-60 ms on a busy host).
    """
    import socket as _socket
    result: dict[str, object] = {}

    def work() -> None:
        try:
            fd = os.open(open_path(netns_path), os.O_RDONLY)
            try:
                if _libc().setns(fd, _CLONE_NEWNET) != 0:
                    import ctypes
                    raise OSError(ctypes.get_errno(), "setns failed", str(netns_path))
            finally:
                os.close(fd)
            s = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_DGRAM, proto)  # 0: NETLINK_ROUTE
            result["fd"] = s.detach()
        except OSError as exc:
            result["error"] = exc

    t = threading.Thread(target=work, name="netns-socket")
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return int(result["fd"])  # type: ignore[arg-type]


# ---- kept handles --------------------------------------------------------------

_kept: dict[str, tuple[tuple[int, int], IPRoute]] = {}
_kept_lock = threading.Lock()


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(open_path(path))
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st.st_dev == _own_netns_dev() else None


def namespace_id(path: str | Path) -> tuple[int, int] | None:
    """(device, inode) of the namespace bind-mounted at ``path``; None when there is none."""
    return _ns_id(os.path.abspath(str(path)))


def _own_netns_dev() -> int:
    return os.stat("/proc/self/ns/net").st_dev


@contextmanager
def handle(netns_path: str | Path | None = None) -> Iterator[IPRoute]:
    """A kept netlink handle in this namespace or the router namespace at ``netns_path``.

    Not closed at the end of the block. Any error inside the block drops it, so
    the next call opens a fresh one; so does the namespace having changed under
    the path (the stat of the bind mount shows another namespace inode).
    """
    key = os.path.abspath(str(netns_path)) if netns_path is not None else ""
    ident = (0, 0)
    if key:
        found = _ns_id(key)
        if found is None:
            drop(key)
            raise TemporaryError(f"network namespace {key} does not exist")
        ident = found
    with _kept_lock:
        entry = _kept.get(key)
        if entry is not None and entry[0] != ident:
            _kept.pop(key)
            _close(entry[1])
            entry = None
    if entry is None:
        entry = (ident, ipr(key or None))
        with _kept_lock:
            _kept[key] = entry
    try:
        yield entry[1]
    except BaseException:
        drop(key)
        raise


_kept_raw: dict[str, tuple[tuple[int, int], int]] = {}


@contextmanager
def raw(netns_path: str | Path, proto: int = 0) -> Iterator[int]:
    """A kept plain netlink socket (fd; ``proto`` 0 = NETLINK_ROUTE, 12 = NETLINK_NETFILTER)
    in the router namespace at ``netns_path``, for :mod:`agent.nlbatch`; kept and
    dropped like :func:`handle`."""
    key = os.path.abspath(str(netns_path))
    ident = _ns_id(key)
    if ident is None:
        drop(key)
        raise TemporaryError(f"network namespace {key} does not exist")
    rkey = f"{key}#{proto}"
    with _kept_lock:
        entry = _kept_raw.get(rkey)
        if entry is not None and entry[0] != ident:
            _kept_raw.pop(rkey)
            os.close(entry[1])
            entry = None
    if entry is None:
        try:
            entry = (ident, _netlink_socket_in(key, proto))
        except OSError as exc:
            raise TemporaryError(f"netlink in {key}: {exc}") from None
        with _kept_lock:
            _kept_raw[rkey] = entry
    try:
        yield entry[1]
    except BaseException:
        drop(key)
        raise


def drop(netns_path: str | Path | None = None) -> None:
    """Close and forget the kept handle and socket of ``netns_path`` (None: this namespace)."""
    key = os.path.abspath(str(netns_path)) if netns_path is not None else ""
    with _kept_lock:
        entry = _kept.pop(key, None)
        raw_entries = [_kept_raw.pop(k) for k in list(_kept_raw) if k.rsplit("#", 1)[0] == key]
    if entry is not None:
        _close(entry[1])
    for _, fd in raw_entries:
        os.close(fd)


def prune(live_paths: list[str | Path]) -> None:
    """Drop kept handles and sockets of namespaces that are not (or no longer the same ones)
    at ``live_paths``: an open socket keeps its namespace alive, with the router end of
    its veth pair, after the namespace was unmounted by hand."""
    live = {os.path.abspath(str(p)) for p in live_paths}
    with _kept_lock:
        keys = {k for k in _kept if k} | {k.rsplit("#", 1)[0] for k in _kept_raw}
        idents = {k: e[0] for k, e in _kept.items()}
        idents.update({k.rsplit("#", 1)[0]: e[0] for k, e in _kept_raw.items()})
    for key in keys:
        if key not in live or _ns_id(key) != idents.get(key):
            drop(key)


def drop_all() -> None:
    with _kept_lock:
        keys = set(_kept) | {k.rsplit("#", 1)[0] for k in _kept_raw}
    for key in keys:
        drop(key or None)


def _close(h: IPRoute) -> None:
    try:
        h.close()
    except Exception:  # noqa: BLE001 - a broken handle is being thrown away anyway
        pass


# ---- host-wide dumps through iproute2 ---------------------------------------------

def _json(cmd: list[str]) -> list[dict]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TemporaryError(f"{' '.join(cmd)}: {exc}") from None
    if out.returncode != 0:
        raise TemporaryError(f"{' '.join(cmd)}: {out.stderr.strip()[:300]}")
    try:
        data = json.loads(out.stdout or "[]")
    except ValueError as exc:
        raise TemporaryError(f"{' '.join(cmd)}: bad JSON: {exc}") from None
    return data if isinstance(data, list) else []


def host_links() -> list[dict]:
    """``ip -j -d link show`` of this namespace: one dict per link (ifname, ifindex, flags,
    mtu, master, address, linkinfo.info_kind / info_data)."""
    return _json(["ip", "-j", "-d", "link", "show"])


def host_fdb() -> list[dict]:
    """``bridge -j fdb show`` of this namespace: one dict per entry (mac, ifname, dst, state)."""
    return _json(["bridge", "-j", "fdb", "show"])


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
    _pyroute2().netns._create(path)


def _create_in_thread(path: str) -> None:
    """A new network namespace bind-mounted at ``path``, made by a short thread.

    A thread's network namespace is its own: the thread unshares one, pyroute2's
    helper bind-mounts ``/proc/self/task/TID/ns/net`` (the mount namespace is the
    process's), and the thread ends; this process keeps its namespace. A forked
    child (pyroute2's ``netns.create``) costs 30-80 ms on a busy host; this ~1 ms.
    """
    result: dict[str, BaseException] = {}

    def work() -> None:
        try:
            libc = _libc()
            if libc.unshare(_CLONE_NEWNET) != 0:
                import ctypes
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
            _pyroute2().netns._create(path, libc=libc, pid=f"self/task/{threading.get_native_id()}")
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result["error"] = exc

    t = threading.Thread(target=work, name="netns-create")
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]


def create_netns(path: str | Path) -> None:
    """Create a network namespace bind-mounted at ``path``; replaces a stale mount point."""
    path = os.path.abspath(str(path))
    if is_netns(path):
        return
    if _foreign_mount_ns():
        _in_init_mount_ns(_create, path)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        _create_in_thread(path)
    if not is_netns(path):
        raise TemporaryError(f"network namespace {path} was not created")


def _remove(path: str) -> None:
    _pyroute2().netns.remove(path)
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
    drop(path)
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
_LIBC = None


def _libc():
    """libc through ctypes, loaded once (``find_library`` runs ldconfig: milliseconds)."""
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return _LIBC


_CLONE_NEWNET = 0x40000000


def run_in_netns(path: str | Path, argv: list[str], input_text: str | None = None,
                 timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run ``argv`` inside the namespace at ``path`` without ``nsenter``: a short thread
    joins the namespace and starts the program, which inherits the thread's namespace."""
    result: dict[str, object] = {}

    def work() -> None:
        try:
            fd = os.open(open_path(path), os.O_RDONLY)
            try:
                if _libc().setns(fd, _CLONE_NEWNET) != 0:
                    import ctypes
                    raise OSError(ctypes.get_errno(), "setns failed", str(path))
            finally:
                os.close(fd)
            result["out"] = subprocess.run(argv, input=input_text, capture_output=True,
                                           text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            result["error"] = exc

    t = threading.Thread(target=work, name="netns-run")
    t.start()
    t.join()
    if "error" in result:
        raise TemporaryError(f"{argv[0]} in {path}: {result['error']}")
    return result["out"]  # type: ignore[return-value]


def sysctls_in_netns(paths: list[str | Path], key: str) -> dict[str, str | None]:
    """Read one net sysctl in many namespaces with one short thread (None where unreadable)."""
    if not key.startswith("net.") or ".." in key:
        raise ValueError(f"not a net sysctl: {key}")
    proc_path = "/proc/sys/" + key.replace(".", "/")
    result: dict[str, str | None] = {}

    def work() -> None:
        libc = _libc()
        for p in paths:
            result[str(p)] = None
            try:
                fd = os.open(open_path(p), os.O_RDONLY)
                try:
                    if libc.setns(fd, _CLONE_NEWNET) != 0:
                        continue
                finally:
                    os.close(fd)
                with open(proc_path) as f:
                    result[str(p)] = f.read().strip()
            except OSError:
                pass

    t = threading.Thread(target=work, name="netns-sysctls")
    t.start()
    t.join()
    return result


def sysctl_in_netns(path: str | Path, key: str, value: str | None = None) -> str:
    """Read (and write when ``value`` is given) a net sysctl inside the namespace at ``path``.

    /proc/sys/net resolves against the opening thread's namespace, so a short
    thread switches into the namespace, does the I/O and ends; the rest of the
    agent never leaves its own namespace.
    """
    import ctypes

    if not key.startswith("net.") or ".." in key:
        raise ValueError(f"not a net sysctl: {key}")
    proc_path = "/proc/sys/" + key.replace(".", "/")
    result: dict[str, object] = {}

    def work() -> None:
        try:
            libc = _libc()
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
