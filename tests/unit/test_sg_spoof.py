"""The anti-spoofing table's nft text: whole-table rebuild, element diffs, listing parse."""

import pytest

from agent.firewall_render import (SPOOF_TABLE, SpoofObserved, parse_spoof_json, plan_spoof,
                                   render, spoof_element, spoof_table)
from agent.spec import NicFirewallSpec, NicSpec


def nic(i: int, mac: str | None = None, ip: str | None = None, tap: str | None = None) -> NicSpec:
    return NicSpec(id=f"eni-{i}", mac=mac or f"52:54:00:00:00:{i:02X}", ip=ip or f"10.0.0.{i}",
                   prefix_len=24, gateway="10.0.0.1", vpc_id="vpc-1", vswitch_id="vsw-1",
                   bridge="mbr-x", tap=tap or f"mtap{i:011d}", security_group_ids=["sg-a"],
                   firewall=NicFirewallSpec(ingress=[], egress=[], ct_zone=3))


def test_render_lists_filtered_nics_only_with_lowercase_macs():
    plain = nic(9).model_copy(update={"firewall": None})
    d = render([nic(1), nic(2), plain], [])
    assert d.spoof == {("mtap00000000001", "52:54:00:00:00:01", "10.0.0.1"),
                       ("mtap00000000002", "52:54:00:00:00:02", "10.0.0.2")}
    assert d.eb == {}  # no ebtables chains any more


def test_whole_table_is_replaced_in_one_text():
    text = spoof_table(frozenset({("mtapa", "52:54:00:00:00:01", "10.0.0.1")}))
    lines = text.splitlines()
    # made if missing, deleted, made again: one transaction, no window without the chain
    assert lines[:3] == [f"table bridge {SPOOF_TABLE}", f"delete table bridge {SPOOF_TABLE}",
                         f"table bridge {SPOOF_TABLE} {{"]
    assert "type filter hook prerouting priority -300; policy accept;" in text
    assert f'add element bridge {SPOOF_TABLE} taps {{ "mtapa" }}' in lines
    assert f'add element bridge {SPOOF_TABLE} addrs {{ "mtapa" . 52:54:00:00:00:01 . 10.0.0.1 }}' \
        in lines
    assert "add element" not in spoof_table(frozenset())


def test_plan_adds_and_deletes_only_what_differs():
    have = SpoofObserved(taps={"mtapa", "mtapb"},
                         macs={("mtapa", "52:54:00:00:00:01"), ("mtapb", "52:54:00:00:00:02")},
                         addrs={("mtapa", "52:54:00:00:00:01", "10.0.0.1"),
                                ("mtapb", "52:54:00:00:00:02", "10.0.0.2")})
    want = frozenset({("mtapa", "52:54:00:00:00:01", "10.0.0.1"),
                      ("mtapc", "52:54:00:00:00:03", "10.0.0.3")})
    text = plan_spoof(want, have)
    t = f"bridge {SPOOF_TABLE}"
    assert text.splitlines() == [
        f'delete element {t} addrs {{ "mtapb" . 52:54:00:00:00:02 . 10.0.0.2 }}',
        f'delete element {t} macs {{ "mtapb" . 52:54:00:00:00:02 }}',
        f'delete element {t} taps {{ "mtapb" }}',
        f'add element {t} taps {{ "mtapc" }}',
        f'add element {t} macs {{ "mtapc" . 52:54:00:00:00:03 }}',
        f'add element {t} addrs {{ "mtapc" . 52:54:00:00:00:03 . 10.0.0.3 }}']
    same = SpoofObserved(taps={"mtapa"}, macs={("mtapa", "52:54:00:00:00:01")},
                         addrs={("mtapa", "52:54:00:00:00:01", "10.0.0.1")})
    assert plan_spoof(frozenset({("mtapa", "52:54:00:00:00:01", "10.0.0.1")}), same) is None
    # a NIC whose address changed: its old element goes, the new one comes
    moved = plan_spoof(frozenset({("mtapa", "52:54:00:00:00:01", "10.0.0.9")}), same)
    assert moved.splitlines() == [
        f'delete element {t} addrs {{ "mtapa" . 52:54:00:00:00:01 . 10.0.0.1 }}',
        f'add element {t} addrs {{ "mtapa" . 52:54:00:00:00:01 . 10.0.0.9 }}']


def test_parse_listing():
    listed = [{"table": {"family": "bridge", "name": SPOOF_TABLE, "handle": 3}},
              {"set": {"name": "taps", "elem": ["mtapa"]}},
              {"set": {"name": "macs", "elem": [{"concat": ["mtapa", "52:54:00:00:00:01"]}]}},
              {"set": {"name": "addrs"}},
              {"chain": {"name": "prerouting", "handle": 1, "hook": "prerouting", "prio": -300}},
              {"rule": {"handle": 9, "expr": [{"drop": None}]}}]
    obs = parse_spoof_json(listed)
    assert obs.taps == {"mtapa"} and obs.macs == {("mtapa", "52:54:00:00:00:01")}
    assert obs.addrs == set() and obs.rules == [[{"drop": None}]]
    assert obs.chains == [{"name": "prerouting", "hook": "prerouting", "prio": -300}]
    assert parse_spoof_json(None) is None


@pytest.mark.parametrize("bad", [dict(tap='mtap"; flush'), dict(mac="52:54:00:00:00"),
                                 dict(ip="10.0.0.256")])
def test_elements_are_checked_before_they_become_nft_text(bad):
    with pytest.raises(ValueError):
        spoof_element(nic(1, **bad))
