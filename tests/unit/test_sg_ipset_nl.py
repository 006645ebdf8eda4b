"""ipset member changes: which payloads go over netlink, and the request as the kernel reads it."""

import socket
import struct

from agent.firewall import _member_changes
from agent.ipset_nl import _message


def test_member_only_payloads_go_over_netlink():
    assert _member_changes("add mecs-g-a 10.0.0.1 -exist\ndel mecs-g-a 10.0.0.2 -exist\n") == [
        ("add", "mecs-g-a", "10.0.0.1"), ("del", "mecs-g-a", "10.0.0.2")]
    # a set to make: the whole payload goes to ipset restore
    assert _member_changes("create mecs-g-b hash:ip family inet -exist\n"
                           "add mecs-g-b 10.0.0.1 -exist\n") is None


def test_add_request_layout():
    msg = _message(7, "add", "mecs-g-a", "10.1.2.3")
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", msg)
    assert length == len(msg) and seq == 7
    assert kind == (6 << 8) | 9  # NFNL_SUBSYS_IPSET, IPSET_CMD_ADD
    assert flags == 0x1 | 0x4  # request, ack; no NLM_F_EXCL: an existing member is fine
    assert msg[16] == socket.AF_INET
    assert b"mecs-g-a\0" in msg and socket.inet_aton("10.1.2.3") in msg
    assert struct.unpack_from("=HH", msg, 20) == (5, 1)  # IPSET_ATTR_PROTOCOL
    assert msg[24] == 7  # protocol version 7
    assert struct.unpack_from("=HH", _message(1, "del", "s", "10.0.0.1"), 4)[0] == (6 << 8) | 10
