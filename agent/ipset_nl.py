"""ipset members added and deleted over netlink, in-process (no ``ipset`` program started).

A group's member joining or leaving is one ``add``/``del`` of an IPv4 address
in a ``hash:ip`` set. The ``ipset`` tool would be a program start for it;
here the requests (``IPSET_CMD_ADD``/``IPSET_CMD_DEL`` of the ipset netlink
protocol, version 7, as ``ipset`` itself sends them) are packed by hand and
sent in one ``send()``, each acknowledged. Without ``NLM_F_EXCL`` the kernel
treats an existing member added or a missing one deleted as done (what
``ipset -exist`` does). Sets are still made and destroyed with the tool.
"""

from __future__ import annotations

import os
import socket
import struct

from agent.errors import AgentError
from agent.nlbatch import read_acks

NETLINK_NETFILTER = 12
NFNL_SUBSYS_IPSET = 6
IPSET_PROTOCOL = 7
IPSET_CMD_ADD = 9
IPSET_CMD_DEL = 10
IPSET_ATTR_PROTOCOL = 1
IPSET_ATTR_SETNAME = 2
IPSET_ATTR_DATA = 7
IPSET_ATTR_IP = 1
IPSET_ATTR_IPADDR_IPV4 = 1
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
_HDR = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")
# ipset's own error numbers (4096 + n), for messages
_IPSET_ERRORS = {4097: "protocol", 4098: "set does not exist", 4099: "set type mismatch",
                 4100: "element already exists", 4101: "element missing",
                 4102: "set is full (maxelem)"}


class IpsetError(AgentError):
    pass


def _nla(kind: int, payload: bytes) -> bytes:
    ln = 4 + len(payload)
    return struct.pack("=HH", ln, kind) + payload + b"\0" * ((4 - ln % 4) % 4)


def _message(seq: int, op: str, set_name: str, ip: str) -> bytes:
    cmd = IPSET_CMD_ADD if op == "add" else IPSET_CMD_DEL
    addr = _nla(IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, socket.inet_aton(ip))
    data = _nla(IPSET_ATTR_DATA | NLA_F_NESTED, _nla(IPSET_ATTR_IP | NLA_F_NESTED, addr))
    body = (_NFGEN.pack(socket.AF_INET, 0, 0)
            + _nla(IPSET_ATTR_PROTOCOL, bytes([IPSET_PROTOCOL]))
            + _nla(IPSET_ATTR_SETNAME, set_name.encode() + b"\0")
            + data)
    return _HDR.pack(_HDR.size + len(body), (NFNL_SUBSYS_IPSET << 8) | cmd,
                     NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def open_socket() -> socket.socket:
    """A NETLINK_NETFILTER socket in the calling thread's network namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    sock.settimeout(5)
    return sock


def change_members(sock: socket.socket, changes: list[tuple[str, str, str]]) -> None:
    """Apply ``(op, set, ip)`` changes (``op``: "add" or "del"); IpsetError names the failures."""
    if not changes:
        return
    base = int.from_bytes(os.urandom(3), "little") << 8
    want = {}
    batch = []
    for i, (op, name, ip) in enumerate(changes):
        seq = (base + i) & 0xFFFFFFFF
        want[seq] = (op, name, ip)
        batch.append(_message(seq, op, name, ip))
    sock.send(b"".join(batch))
    failed = []
    for seq, err in read_acks(sock, set(want)):
        what = want[seq]
        text = _IPSET_ERRORS.get(err) or (os.strerror(err) if err < 4096 else
                                          f"ipset error {err}")
        failed.append(f"{what[0]} {what[2]} in {what[1]}: {text}")
    if failed:
        raise IpsetError("ipset: " + "; ".join(failed[:5]), retryable=True)


__all__ = ["IpsetError", "change_members", "open_socket"]
