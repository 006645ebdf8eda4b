"""nftables commands in-process through libnftables (no program started per change).

``nft`` syntax goes to ``libnftables.so.1`` (the library the ``nft`` tool is
built on; Debian package ``libnftables1``) through ctypes. One call is one
nftables transaction: everything in the text applies, or nothing does.

A :class:`Nft` works in one network namespace: the one its maker's thread
was in when it was made (held open), or the named one (``/run/netns/NAME``). The library's netlink socket is bound to the
namespace of the thread that opens it, so every call runs on one worker
thread of its own that entered the namespace first (``setns`` changes the
calling thread only); the caller's thread never moves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import threading
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor

from agent.errors import AgentError

CLONE_NEWNET = 0x40000000
_OUTPUT_JSON = 1 << 4  # enum nft_output_flags: NFT_CTX_OUTPUT_JSON
_LIB_NAME = "libnftables.so.1"
_lib = None
_lib_lock = threading.Lock()


def _library() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            try:
                lib = ctypes.CDLL(_LIB_NAME)
            except OSError as exc:
                raise AgentError(f"nftables: {_LIB_NAME} not found (install libnftables1): {exc}",
                                 retryable=False) from None
            vp = ctypes.c_void_p
            lib.nft_ctx_new.argtypes, lib.nft_ctx_new.restype = [ctypes.c_uint32], vp
            lib.nft_ctx_free.argtypes, lib.nft_ctx_free.restype = [vp], None
            for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
                getattr(lib, name).argtypes, getattr(lib, name).restype = [vp], ctypes.c_int
            lib.nft_ctx_output_set_flags.argtypes = [vp, ctypes.c_uint]
            lib.nft_ctx_output_set_flags.restype = None
            lib.nft_run_cmd_from_buffer.argtypes = [vp, ctypes.c_char_p]
            lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
            for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
                getattr(lib, name).argtypes, getattr(lib, name).restype = [vp], ctypes.c_char_p
            _lib = lib
        return _lib


class NftError(AgentError):
    pass


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Nft:
    """nftables in one network namespace (``netns``: a name under /run/netns, or None: ours)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        # None: the namespace of the thread making this object, held from now on (the
        # worker starts later, maybe from a thread that is visiting another namespace)
        self._ns_fd: int | None = None if netns else os.open(
            f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        self._pool: ThreadPoolExecutor | None = None
        self._ctx = None  # per worker thread: made there, used only there
        self._json_ctx = None

    def _worker(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="nft", initializer=self._enter)
        return self._pool

    def _enter(self) -> None:
        if self.netns:
            fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
        elif self._ns_fd is not None:
            _setns(self._ns_fd)

    def _context(self, as_json: bool):
        lib = _library()
        attr = "_json_ctx" if as_json else "_ctx"
        ctx = getattr(self, attr)
        if ctx is None:
            ctx = lib.nft_ctx_new(0)
            if not ctx:
                raise NftError("nftables: cannot make a context", retryable=True)
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
            if as_json:
                lib.nft_ctx_output_set_flags(ctx, _OUTPUT_JSON)
            setattr(self, attr, ctx)
        return ctx

    def _run(self, text: str, as_json: bool) -> str:
        lib = _library()
        ctx = self._context(as_json)
        rc = lib.nft_run_cmd_from_buffer(ctx, text.encode())
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        if rc != 0:
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace").strip()
            raise NftError(f"nft: {err or 'failed'}", retryable=True)
        return out

    def call(self, fn, *args):
        """``fn(*args)`` on this namespace's worker thread (a socket it opens is in the namespace)."""
        try:
            return self._worker().submit(fn, *args).result(timeout=60)
        except BrokenExecutor:  # the worker could not enter the namespace
            self._pool = None
            raise NftError(f"nft: cannot enter network namespace {self.netns or '(own)'}",
                           retryable=True) from None

    def run(self, text: str) -> str:
        """Run ``text`` (nft syntax, one transaction); NftError with nft's message on failure."""
        return self.call(self._run, text, False)

    def list_json(self, what: str) -> list[dict] | None:
        """``list <what>`` as the objects of nft's JSON output; None when it does not exist."""
        try:
            out = self.call(self._run, f"list {what}", True)
        except NftError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise
        return [o for o in json.loads(out or '{"nftables": []}').get("nftables", [])
                if "metainfo" not in o]

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None

            def free() -> None:
                lib = _library()
                for attr in ("_ctx", "_json_ctx"):
                    ctx = getattr(self, attr)
                    if ctx:
                        lib.nft_ctx_free(ctx)
                        setattr(self, attr, None)
            pool.submit(free).result(timeout=10)
            pool.shutdown(wait=True)
        if self._ns_fd is not None:
            os.close(self._ns_fd)
            self._ns_fd = None
