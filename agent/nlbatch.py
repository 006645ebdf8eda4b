"""Neighbour and FDB entries in batches: many netlink requests in one send.

pyroute2 spends about a millisecond of Python per request building and
parsing messages; a VPC's static FDB and router neighbour table are dozens of
small, fixed-shape messages. Here they are packed by hand (``struct``), sent
in one ``send()`` and their acknowledgements read back, so a whole table
costs one system call plus the kernel's own work. Used for:

* bridge FDB entries on a VXLAN device (``bridge fdb append|del MAC dev D dst IP``);
* permanent IPv4 neighbours (``ip neigh replace|del IP lladdr MAC dev D nud permanent``);
* the bridge's own entry for a MAC on one of its ports (``bridge fdb del MAC dev D master``).

Each entry gets its own acknowledgement; the errors come back per entry.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

NLMSG_ERROR = 2
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NDA_DST = 1
NDA_LLADDR = 2
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
NTF_MASTER = 0x04
AF_BRIDGE = 7

_HDR = struct.Struct("=IHHII")  # nlmsghdr
_ND = struct.Struct("=BBHiHBB")  # ndmsg


@dataclass(frozen=True)
class Entry:
    """One neighbour or FDB request: add (``append``/``replace``) or ``delete``."""
    op: str  # "fdb-append" | "fdb-del" | "fdb-del-master" | "neigh-replace" | "neigh-del"
    ifindex: int
    mac: str
    ip: str  # "" for fdb-del-master (the bridge's entries have no destination)


def _nla(kind: int, payload: bytes) -> bytes:
    ln = 4 + len(payload)
    return struct.pack("=HH", ln, kind) + payload + b"\0" * ((4 - ln % 4) % 4)


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def encode(e: Entry, seq: int) -> bytes:
    if e.op == "fdb-del-master":
        nd = _ND.pack(AF_BRIDGE, 0, 0, e.ifindex, 0, NTF_MASTER, 0)
        body = nd + _nla(NDA_LLADDR, _mac(e.mac))
        return _HDR.pack(_HDR.size + len(body), RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, seq,
                         0) + body
    ip = ipaddress.IPv4Address(e.ip).packed
    if e.op == "fdb-append":
        mtype, flags = RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_APPEND
        nd = _ND.pack(AF_BRIDGE, 0, 0, e.ifindex, NUD_NOARP | NUD_PERMANENT, NTF_SELF, 0)
    elif e.op == "fdb-del":
        mtype, flags = RTM_DELNEIGH, 0
        nd = _ND.pack(AF_BRIDGE, 0, 0, e.ifindex, 0, NTF_SELF, 0)
    elif e.op == "neigh-replace":
        mtype, flags = RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE
        nd = _ND.pack(socket.AF_INET, 0, 0, e.ifindex, NUD_PERMANENT, 0, 0)
    elif e.op == "neigh-del":
        mtype, flags = RTM_DELNEIGH, 0
        nd = _ND.pack(socket.AF_INET, 0, 0, e.ifindex, 0, 0, 0)
    else:
        raise ValueError(f"unknown batch op {e.op!r}")
    body = nd + _nla(NDA_LLADDR, _mac(e.mac)) + _nla(NDA_DST, ip)
    if e.op == "neigh-del":  # the key is the address; a lladdr is not needed
        body = nd + _nla(NDA_DST, ip)
    return _HDR.pack(_HDR.size + len(body), mtype, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def send(sock_fd: int, entries: list[Entry], chunk: int = 200) -> list[tuple[Entry, int]]:
    """Send ``entries`` on the NETLINK_ROUTE socket ``sock_fd``; returns (entry, errno) failures."""
    failures: list[tuple[Entry, int]] = []
    sock = socket.socket(fileno=os.dup(sock_fd))
    try:
        sock.settimeout(10)
        for start in range(0, len(entries), chunk):
            part = entries[start:start + chunk]
            base = 1_000_000 + start
            sock.send(b"".join(encode(e, base + i) for i, e in enumerate(part)))
            failures += [(part[seq - base], err)
                         for seq, err in read_acks(sock, {base + i for i in range(len(part))})]
    finally:
        sock.close()
    return failures


def read_acks(sock: socket.socket, pending: set[int]) -> list[tuple[int, int]]:
    """Read netlink acknowledgements until every sequence number in ``pending`` has one;
    ``(seq, errno)`` of those that failed."""
    pending = set(pending)
    failed = []
    while pending:
        data = sock.recv(65536)
        off = 0
        while off + _HDR.size <= len(data):
            ln, mtype, _, seq, _ = _HDR.unpack_from(data, off)
            if ln < _HDR.size:
                break
            if mtype == NLMSG_ERROR and seq in pending:
                err = -struct.unpack_from("=i", data, off + _HDR.size)[0]
                pending.discard(seq)
                if err:
                    failed.append((seq, err))
            off += (ln + 3) & ~3
    return failed


def describe(failures: list[tuple[Entry, int]]) -> str:
    return "; ".join(f"{e.op} {e.ip} {e.mac}: {_errno.errorcode.get(err, err)}"
                     for e, err in failures[:5])


def new_socket() -> int:
    """A NETLINK_ROUTE socket in this namespace (fd); close it with ``os.close``."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)
    s.bind((0, 0))
    return s.detach()


# ---- dumps with minimal parsing ---------------------------------------------------

RTM_GETLINK = 18
RTM_GETADDR = 22
RTM_GETNEIGH = 30
NLM_F_DUMP = 0x300
NLMSG_DONE = 3
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFA_ADDRESS = 1
_IFI = struct.Struct("=BxHiII")  # ifinfomsg
_IFA = struct.Struct("=BBBBI")  # ifaddrmsg


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    flags: int
    mtu: int
    mac: str
    master: int
    kind: str


def _attrs(data: bytes, off: int, end: int) -> dict[int, bytes]:
    out = {}
    while off + 4 <= end:
        ln, kind = struct.unpack_from("=HH", data, off)
        if ln < 4:
            break
        out[kind & 0x3FFF] = data[off + 4:off + ln]
        off += (ln + 3) & ~3
    return out


def _dump(fd: int, mtype: int, body: bytes) -> list[tuple[int, bytes]]:
    """(type, message bytes) of every message a dump request returns."""
    sock = socket.socket(fileno=os.dup(fd))
    out: list[tuple[int, bytes]] = []
    try:
        sock.settimeout(10)
        seq = 7
        sock.send(_HDR.pack(_HDR.size + len(body), mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
                  + body)
        while True:
            data = sock.recv(1 << 20)
            off = 0
            while off + _HDR.size <= len(data):
                ln, t, _, s, _ = _HDR.unpack_from(data, off)
                if ln < _HDR.size:
                    return out
                if s == seq:
                    if t == NLMSG_DONE:
                        return out
                    if t == NLMSG_ERROR:
                        err = -struct.unpack_from("=i", data, off + _HDR.size)[0]
                        if err:
                            raise OSError(err, os.strerror(err))
                        return out
                    out.append((t, data[off:off + ln]))
                off += (ln + 3) & ~3
    finally:
        sock.close()


def links(fd: int) -> list[Link]:
    """Every link of the namespace of the socket ``fd``."""
    out = []
    for _, m in _dump(fd, RTM_GETLINK, _IFI.pack(0, 0, 0, 0, 0)):
        _, _, index, flags, _ = _IFI.unpack_from(m, _HDR.size)
        a = _attrs(m, _HDR.size + _IFI.size, len(m))
        kind = ""
        if IFLA_LINKINFO in a:
            info = _attrs(a[IFLA_LINKINFO], 0, len(a[IFLA_LINKINFO]))
            kind = info.get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode()
        out.append(Link(index, a.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(), flags,
                        struct.unpack("=I", a[IFLA_MTU])[0] if IFLA_MTU in a else 0,
                        a.get(IFLA_ADDRESS, b"").hex(":"),
                        struct.unpack("=I", a[IFLA_MASTER])[0] if IFLA_MASTER in a else 0, kind))
    return out


def ipv4_addresses(fd: int) -> list[tuple[int, str, int]]:
    """(ifindex, address, prefixlen) of every IPv4 address."""
    out = []
    for _, m in _dump(fd, RTM_GETADDR, _IFA.pack(socket.AF_INET, 0, 0, 0, 0)):
        family, plen, _, _, index = _IFA.unpack_from(m, _HDR.size)
        if family != socket.AF_INET:
            continue
        a = _attrs(m, _HDR.size + _IFA.size, len(m))
        if IFA_ADDRESS in a:
            out.append((index, socket.inet_ntoa(a[IFA_ADDRESS]), plen))
    return out


def ipv4_neighbours(fd: int) -> list[tuple[int, int, str, str]]:
    """(ifindex, state, ip, mac) of every IPv4 neighbour entry."""
    out = []
    for _, m in _dump(fd, RTM_GETNEIGH, _ND.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0)):
        family, _, _, index, state, _, _ = _ND.unpack_from(m, _HDR.size)
        if family != socket.AF_INET:
            continue
        a = _attrs(m, _HDR.size + _ND.size, len(m))
        if NDA_DST in a and len(a[NDA_DST]) == 4:
            out.append((index, state, socket.inet_ntoa(a[NDA_DST]), a.get(NDA_LLADDR, b"").hex(":")))
    return out


# ---- nftables ruleset generation ---------------------------------------------------

NETLINK_NETFILTER = 12
_NFT_MSG_GETGEN = (10 << 8) | 16  # NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN
_NFT_MSG_NEWGEN = (10 << 8) | 15
NFTA_GEN_ID = 1


def nft_generation(fd: int) -> int:
    """The nftables ruleset generation of the namespace of the NETLINK_NETFILTER socket ``fd``.

    The kernel bumps it on every ruleset change in that namespace (iptables-nft
    included), so an unchanged number means nothing was touched since it was read.
    """
    sock = socket.socket(fileno=os.dup(fd))
    try:
        sock.settimeout(5)
        seq = 11
        body = struct.pack("=BBH", 0, 0, 0)  # nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id
        sock.send(_HDR.pack(_HDR.size + len(body), _NFT_MSG_GETGEN, NLM_F_REQUEST, seq, 0) + body)
        while True:
            data = sock.recv(65536)
            off = 0
            while off + _HDR.size <= len(data):
                ln, t, _, s, _ = _HDR.unpack_from(data, off)
                if ln < _HDR.size:
                    break
                if s == seq and t == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + _HDR.size)[0]
                    raise OSError(err or errno_EIO, os.strerror(err or errno_EIO))
                if s == seq and t == _NFT_MSG_NEWGEN:
                    a = _attrs(data, off + _HDR.size + 4, off + ln)
                    if NFTA_GEN_ID in a:
                        return struct.unpack("!I", a[NFTA_GEN_ID])[0]
                    raise OSError(errno_EIO, "no generation id in the reply")
                off += (ln + 3) & ~3
    finally:
        sock.close()


errno_EIO = 5


RTM_GETROUTE = 26
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_TABLE = 15
_RT = struct.Struct("=BBBBBBBBI")  # rtmsg


@dataclass(frozen=True)
class Route:
    table: int
    dst: str  # "0.0.0.0" for the default route
    dst_len: int
    gateway: str | None
    oif: int
    scope: int


def ipv4_routes(fd: int) -> list[Route]:
    """Every IPv4 route of every table in the namespace of the socket ``fd``."""
    out = []
    for _, m in _dump(fd, RTM_GETROUTE, _RT.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
        family, dst_len, _, _, table, _, scope, _, _ = _RT.unpack_from(m, _HDR.size)
        if family != socket.AF_INET:
            continue
        a = _attrs(m, _HDR.size + _RT.size, len(m))
        if RTA_TABLE in a:
            table = struct.unpack("=I", a[RTA_TABLE])[0]
        out.append(Route(table, socket.inet_ntoa(a[RTA_DST]) if RTA_DST in a else "0.0.0.0",
                         dst_len, socket.inet_ntoa(a[RTA_GATEWAY]) if RTA_GATEWAY in a else None,
                         struct.unpack("=i", a[RTA_OIF])[0] if RTA_OIF in a else 0, scope))
    return out
