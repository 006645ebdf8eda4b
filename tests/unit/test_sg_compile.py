"""Security-group semantics as tables: compile order, evaluation, rendering, restore plans."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from agent.firewall import parse_conntrack
from agent.firewall_model import evaluate
from agent.firewall_render import (FILTER_JUMPS, TableObserved, parse_save, plan_restore,
                                   plan_sets, render, rule_line)
from agent.spec import FirewallRuleSpec, NicFirewallSpec, NicSpec
from controller.services.sg_compile import address_set_name, compile_nic_firewall, ct_zone


def group(gid="sg-aaaaaaaaaaaaaaaaaaaa", type_="normal", inner="accept"):
    return SimpleNamespace(id=gid, type=type_, inner_access_policy=inner)


def dbrule(rid, priority=1, policy="accept", protocol="tcp", ports=(22, 22), peer="0.0.0.0/0",
           peer_group=None, direction="ingress", gid="sg-aaaaaaaaaaaaaaaaaaaa"):
    lo, hi = ports if ports else (None, None)
    return SimpleNamespace(id=rid, security_group_id=gid, direction=direction, protocol=protocol,
                           port_min=lo, port_max=hi, source_port_min=None, source_port_max=None,
                           peer_cidr=None if peer_group else peer, peer_group_id=peer_group,
                           local_cidr=None, policy=policy, priority=priority)


def verdict(fw, port=22, peer="10.0.0.5", protocol="tcp", direction="ingress", sets=None):
    return evaluate(fw, direction, protocol=protocol, port=port, peer_ip=peer,
                    local_ip="10.0.1.2", sets=sets or {})


@pytest.mark.parametrize("accept_prio,drop_prio,expected", [
    (10, 5, "drop"), (5, 10, "accept"), (5, 5, "drop")])
def test_priority_smaller_wins_and_drop_wins_ties(accept_prio, drop_prio, expected):
    fw = compile_nic_firewall([group()], [dbrule("sgr-acc", accept_prio),
                                          dbrule("sgr-drop", drop_prio, "drop")], 1)
    assert verdict(fw).policy == expected


def test_pooled_groups_are_sorted_together():
    a, b = group("sg-a"), group("sg-b")
    fw = compile_nic_firewall([a, b], [dbrule("sgr-1", 50, gid="sg-a"),
                                       dbrule("sgr-2", 3, "drop", gid="sg-b")], 1)
    assert [r.id for r in fw.ingress[:2]] == ["sgr-2", "sgr-1"]
    assert verdict(fw).decided_by == "sgr-2"


def test_defaults_inner_access_and_enterprise():
    g = group()
    fw = compile_nic_firewall([g], [], 1)
    member = {address_set_name(g.id): {"10.0.0.5"}}
    assert verdict(fw, sets=member).decided_by == f"inner:{g.id}"
    assert verdict(fw).policy == "drop" and verdict(fw).decided_by == "default"
    assert verdict(fw, direction="egress").policy == "accept"
    closed = compile_nic_firewall([group(inner="drop")], [], 1)
    assert verdict(closed, sets=member).policy == "drop"
    ent = compile_nic_firewall([group(type_="enterprise", inner="drop")], [
        dbrule("sgr-out", direction="egress", ports=(80, 80))], 1)
    assert verdict(ent, direction="egress", port=80).policy == "accept"
    assert verdict(ent, direction="egress", port=81).policy == "drop"
    assert verdict(ent, sets=member).policy == "drop"


def test_explicit_drop_beats_inner_access():
    g = group()
    fw = compile_nic_firewall([g], [dbrule("sgr-d", 100, "drop", protocol="all", ports=None)], 1)
    assert verdict(fw, sets={address_set_name(g.id): {"10.0.0.5"}}).policy == "drop"


@pytest.mark.parametrize("port,open_", [(999, False), (1000, True), (2000, True), (2001, False)])
def test_port_range_edges(port, open_):
    fw = compile_nic_firewall([group()], [dbrule("sgr-r", ports=(1000, 2000))], 1)
    assert (verdict(fw, port=port).policy == "accept") is open_


def test_icmp_and_protocols():
    fw = compile_nic_firewall([group()], [dbrule("sgr-i", protocol="icmp", ports=None)], 1)
    assert verdict(fw, protocol="icmp", port=None).policy == "accept"
    assert verdict(fw, protocol="udp", port=53).policy == "drop"


def test_zone_and_set_names_fit():
    assert 1 <= ct_zone(0) and ct_zone(16777215) <= 65535
    assert len(address_set_name("sg-" + "a" * 20)) <= 31


def nic(tap="mtapaaaaaaaaaaa", fw=None):
    return NicSpec(id="eni-x", mac="52:54:00:00:00:01", ip="10.0.1.2", prefix_len=24,
                   gateway="10.0.1.1", vpc_id="vpc-x", vswitch_id="vsw-x", bridge="mbr-x",
                   tap=tap, firewall=fw)


def test_render_names_fit_and_lines_are_canonical():
    r = FirewallRuleSpec(id="sgr-1", group_id="sg", priority=1, policy="accept", protocol="tcp",
                         port_min=22, port_max=22, peer_cidr="10.0.0.0/8")
    assert rule_line("mecs-i-x", r, True) == \
        '-A mecs-i-x -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -m comment --comment "r:sgr-1" -j RETURN'
    d = render([nic(fw=NicFirewallSpec(ingress=[r], ct_zone=3))], [])
    assert all(len(c) <= 28 for c in [*d.filter, *d.raw, *d.eb])
    assert d.raw["mecs-PREROUTING"][0] == "-A mecs-PREROUTING -i mbr-x -j CT --zone 3"
    assert render([nic(fw=None)], []).filter == {}


def test_one_rule_change_is_an_insert_not_a_rewrite():
    rules = [FirewallRuleSpec(id=f"sgr-{k}", group_id="sg", priority=k + 1, policy="accept",
                              protocol="tcp", port_min=k + 1, port_max=k + 1) for k in range(20)]
    before = render([nic(fw=NicFirewallSpec(ingress=rules))], [])
    obs = parse_save("\n".join(f":{c} - [0:0]" for c in before.filter) + "\n" +
                     "\n".join(ln for lines in before.filter.values() for ln in lines) + "\n" +
                     "\n".join(j for _c, j in FILTER_JUMPS))
    assert plan_restore(before.filter, obs, FILTER_JUMPS, "filter") == (None, set())
    extra = FirewallRuleSpec(id="sgr-new", group_id="sg", priority=5, policy="drop",
                             protocol="udp", port_min=53, port_max=53)
    after = render([nic(fw=NicFirewallSpec(ingress=sorted(
        [*rules, extra], key=lambda r: (r.priority, r.policy != "drop"))))], [])
    payload, touched = plan_restore(after.filter, obs, FILTER_JUMPS, "filter")
    assert touched == {"mecs-i-aaaaaaaaaaa"}
    assert payload.count("\n-I mecs-i-aaaaaaaaaaa 5 ") == 1 and "-F " not in payload


def test_nics_with_the_same_groups_share_rule_chains():
    fw = NicFirewallSpec(ingress=[], ct_zone=1)
    a = nic("mtapaaaaaaaaaaa", fw).model_copy(update={"security_group_ids": ["sg-1", "sg-2"]})
    b = nic("mtapbbbbbbbbbbb", fw).model_copy(update={"security_group_ids": ["sg-2", "sg-1"]})
    c = nic("mtapccccccccccc", fw).model_copy(update={"security_group_ids": ["sg-1"]})
    d = render([a, b, c], [])
    assert len([ch for ch in d.filter if ch.startswith("mecs-i-")]) == 2


def test_stale_chains_and_jumps_go_and_sets_plan():
    obs = TableObserved(chains={"mecs-sg": ["-A mecs-sg -j ACCEPT"], "mecs-i-old": []},
                        jumps={j for _c, j in FILTER_JUMPS})
    payload, _ = plan_restore({}, obs, FILTER_JUMPS, "filter")
    assert "-X mecs-i-old" in payload and "-D FORWARD" in payload
    text, stale = plan_sets({"mecs-g-a": frozenset({"10.0.0.1"})},
                            {"mecs-g-a": {"10.0.0.2"}, "mecs-g-old": set()})
    assert "add mecs-g-a 10.0.0.1 -exist" in text and "del mecs-g-a 10.0.0.2 -exist" in text
    assert stale == ["mecs-g-old"]


def test_parse_conntrack_takes_the_original_direction():
    line = ("tcp      6 431999 ESTABLISHED src=10.0.1.3 dst=10.0.1.2 sport=40000 dport=22 "
            "src=10.0.1.2 dst=10.0.1.3 sport=22 dport=40000 [ASSURED] mark=0 zone=7 use=1")
    assert parse_conntrack(line) == [{"proto": "tcp", "src": "10.0.1.3", "dst": "10.0.1.2",
                                      "sport": "40000", "dport": "22", "zone": "7"}]
