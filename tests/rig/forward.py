"""Forward TCP from inside rig namespaces to a port on this machine's loopback.

An agent in a rig host's network namespace reaches the controller at
``127.0.0.1:PORT`` as if the controller ran beside it: this process opens a
listening socket inside each namespace (``setns`` before ``bind``, then back)
and relays every connection to ``127.0.0.1:PORT`` in its own namespace. No
route, address or interface is added anywhere.

Run: ``python -m tests.rig.forward --port 8780 --netns NS1 [--netns NS2 ...]``
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def listen_in_netns(netns: str, port: int) -> socket.socket:
    """Return a socket listening on 127.0.0.1:port inside the named namespace."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(128)
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)
    return sock


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _serve(listener: socket.socket, target_port: int) -> None:
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", target_port), timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="controller port on loopback")
    parser.add_argument("--listen-port", type=int, help="port inside the namespaces (default: same)")
    parser.add_argument("--netns", action="append", required=True)
    args = parser.parse_args(argv)
    listen_port = args.listen_port or args.port
    listeners = [listen_in_netns(ns, listen_port) for ns in args.netns]
    for listener in listeners:
        threading.Thread(target=_serve, args=(listener, args.port), daemon=True).start()
    print(f"forwarding 127.0.0.1:{listen_port} in {', '.join(args.netns)} -> 127.0.0.1:{args.port}",
          flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    sys.exit(main())
